"""What each activation name means, without torch: the table every other table of names
(kernels, tensor parallelism, TransformerLens, the configs' validation) is derived from.
``solulab.core.activations`` holds the functions themselves."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ActivationSpec:
    """What an activation name means; every table of names (kernels, tensor parallelism,
    TransformerLens) is derived from these."""

    name: str
    nonlinearity: str  # a key of NONLINEARITIES
    has_ln: bool  # an extra LayerNorm over d_mlp follows the nonlinearity
    transformerlens: str | None = None  # TransformerLens's act_fn computing the same, if any

    @property
    def kind(self) -> tuple[str, bool]:
        """What a kernel computes: ``(nonlinearity, has_ln)``."""
        return self.nonlinearity, self.has_ln

    @property
    def elementwise(self) -> bool:
        """Each neuron depends on its own pre-activation only (no softmax, no LayerNorm), so
        tensor parallelism can split ``d_mlp`` anywhere."""
        return self.nonlinearity in ("gelu", "relu") and not self.has_ln


REGISTRY: dict[str, ActivationSpec] = {s.name: s for s in (
    ActivationSpec("gelu", "gelu", False, transformerlens="gelu"),
    ActivationSpec("relu", "relu", False, transformerlens="relu"),
    ActivationSpec("solu", "solu", False, transformerlens="solu"),
    ActivationSpec("solu_ln", "solu", True, transformerlens="solu_ln"),
    ActivationSpec("gelu_ln", "gelu", True),
    ActivationSpec("exp_ln", "exp", True),
)}
ACTIVATIONS: tuple[str, ...] = tuple(REGISTRY)
DEFAULT_LN_EPS = 1e-5
