"""Optional dependencies: which extra of ``pip install 'solulab[...]'`` brings each one. The core
install (the model, training, the neuron store and the automated verdict) needs none of them."""

from __future__ import annotations

from solulab.errors import SolulabError

EXTRA_OF = {"fastapi": "web", "uvicorn": "web", "starlette": "web", "matplotlib": "plots",
            "huggingface_hub": "hub", "lm_eval": "eval", "transformers": "hf",
            "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


class MissingExtra(SolulabError):
    """An optional dependency that is not installed; the message names the extra to install."""


def missing_extra(error: ModuleNotFoundError) -> MissingExtra | None:
    """The error to report for a module that an extra brings; None for any other module."""
    module = (error.name or "").split(".")[0]
    extra = EXTRA_OF.get(module)
    if extra is None:
        return None
    return MissingExtra(f"this needs {module}, which is not installed: "
                        f"pip install 'solulab[{extra}]'")
