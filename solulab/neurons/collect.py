"""``solulab neurons collect``: stream a model over a corpus split and write the neuron store.

The split is cut into sequences of ``n_ctx`` tokens at multiples of ``n_ctx``, the model runs on
batches of them up to the last layer collected, and every layer's neurons go through a
``PointStream`` per activation point (``hook_mid`` and ``hook_post`` for activations with an extra
LayerNorm, ``hook_post`` otherwise). Under ``torchrun`` rank ``r`` takes sequences ``r, r + W,
...``; rank 0 merges the streams (exactly: see ``stream``) and writes the store.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from solulab.core.model import Transformer
from solulab.data import Corpus
from solulab.distributed import DistInfo, init_distributed
from solulab.errors import SolulabError
from solulab.io import sha256_file
from solulab.neurons import c_stats
from solulab.neurons.logit_effects import top_logit_effects
from solulab.neurons.scratch import Scratch
from solulab.neurons.settings import (
    AT_LEAST_ONE,
    COLLECT_BATCH_SIZE,
    COLLECT_SPLIT,
    COLLECT_TOKENS,
    StoreSettings,
)
from solulab.neurons.store import META_FILE, NeuronStore, write_store
from solulab.neurons.stream import PointStream, finalize, refuse_non_finite
from solulab.runs import rundir


def open_corpus_for(run_dir: Path, corpus_dir: Path | None) -> Corpus:
    """The corpus to collect on (default: the run's own), refused if its tokenizer differs."""
    if corpus_dir is None:
        corpus_dir = rundir.trained_on(run_dir)
        if corpus_dir is None:
            raise SolulabError(f"{run_dir} records no corpus: pass --corpus")
    corpus = Corpus(corpus_dir)
    if corpus.tokenizer_sha256 != sha256_file(run_dir / rundir.TOKENIZER):
        raise SolulabError(f"{corpus_dir} was tokenized with another tokenizer than {run_dir}: "
                           "collect on the run's own corpus or re-tokenize")
    return corpus


def open_store(path: str | Path) -> NeuronStore:
    """The store of a run directory (checked against its model where the run has weights) or a
    store directory."""
    path = Path(path)
    if (path / rundir.WEIGHTS).is_file():
        weights = sha256_file(path / rundir.WEIGHTS)
        return NeuronStore.open(path / rundir.NEURONS, model_sha256=weights)
    if (path / rundir.NEURONS / META_FILE).is_file():
        return NeuronStore.open(path / rundir.NEURONS)
    return NeuronStore.open(path)


def check_layers(model: Transformer, layers: list[int] | None) -> list[int]:
    n = model.cfg.n_layers
    if layers is None:
        return list(range(n))
    bad = [layer for layer in layers if not 0 <= layer < n]
    if bad or not layers:
        raise SolulabError(f"layers {bad or layers} out of range: this model has layers 0..{n - 1}")
    return sorted(set(layers))


STACKED_NEURONS = 16_384  # the most neurons a stacked stream takes: its per-batch buffers grow
# with them (a 12-layer model with d_mlp 3072 stacks its 24 points in 6 streams of 2 layers)


class Collector:
    """The streams of every collected layer and point, fed batch by batch: a stream per point,
    or, ``stacked``, points side by side in a stream (up to ``STACKED_NEURONS`` neurons), which
    keeps the same examples with one stream's ops per batch. Stacked by default where the C pass
    cannot run (a GPU, or no C compiler): the PyTorch path's ops cost more to launch than the
    copy that stacks the points; the C pass has no such cost and would pay for the copy. A
    stacked stream takes whole layers where it can, so that each point's other point (``mid``
    and ``post``) is beside it, and its windows are cut from there (``partners``)."""

    def __init__(self, model: Transformer, layers: list[int], settings: StoreSettings,
                 seed: int, stacked: bool | None = None):
        self.model = model
        has_ln = model.blocks[0].mlp.hook_mid is not None
        self.points = ("mid", "post") if has_ln else ("post",)
        device = next(model.parameters()).device
        self.hooks = {(layer, point): f"blocks.{layer}.mlp.hook_{point}"
                      for layer in layers for point in self.points}
        if stacked is None:
            stacked = not c_stats.ready(torch.empty(0, device=device))
        self.stacked = stacked
        keys = list(self.hooks)  # a layer's points one after the other
        per_stream = max(1, STACKED_NEURONS // model.cfg.d_mlp) if stacked else 1
        if per_stream >= len(self.points):
            per_stream -= per_stream % len(self.points)  # whole layers
        groups = [tuple(keys[i:i + per_stream]) for i in range(0, len(keys), per_stream)]
        self.scratch = Scratch()  # the batch-sized tensors, shared: streams update in turn
        self.streams = {  # (layer, point) of each point side by side in the stream -> stream
            group: PointStream(model.cfg.d_mlp, settings.k, settings.window_before,
                               settings.window_after, settings.samples, settings.threshold,
                               with_other=has_ln, seed=seed, device=device, points=len(group),
                               partners=self._partners(group), scratch=self.scratch)
            for group in groups}

    def _partners(self, group: tuple) -> tuple[int, ...] | None:
        """Where each point of ``group`` has its other point: its index in ``group``; None
        where a point has none there (or the activation none)."""
        if len(group) == 1 or len(self.points) == 1:
            return None
        return tuple(group.index((layer, self._other(point))) for layer, point in group)

    def _other(self, point: str) -> str:
        return "post" if point == "mid" else "mid"

    @torch.no_grad()
    def update(self, tokens: torch.Tensor, positions: torch.Tensor) -> None:
        cache = self.model.activations(tokens, self.hooks.values())
        for group, stream in self.streams.items():
            values = [cache[self.hooks[key]] for key in group]
            other = None
            if len(self.points) == 2 and stream.partner is None:  # one point, with its other
                (layer, point), = group
                other = cache[self.hooks[(layer, self._other(point))]]
            try:
                stream.update(self._side_by_side(values), tokens, positions, other)
            except SolulabError as error:
                key, reason = group[0], error
                for key, value in zip(group, values):  # the first point with them, its count
                    try:
                        refuse_non_finite(value)
                    except SolulabError as own:
                        reason = own
                        break
                raise SolulabError(f"{self.hooks[key]}: {reason}; the model's weights give no "
                                   "usable activations (did training diverge? its loss curve "
                                   "says)") from None

    def _side_by_side(self, values: list[torch.Tensor]) -> torch.Tensor:
        """Points' activations ``[..., d_mlp]`` side by side, ``[..., points * d_mlp]``, in a
        kept tensor (``scratch``)."""
        if len(values) == 1:
            return values[0]
        first = values[0]
        shape = (*first.shape[:-1], sum(v.shape[-1] for v in values))
        return torch.cat(values, dim=-1, out=self.scratch.get("points", shape, first.dtype,
                                                                first.device))

    def arrays(self, n_intervals: int) -> dict[tuple[int, str], dict[str, np.ndarray]]:
        """Each (layer, point)'s arrays for the store (``finalize``)."""
        out = {}
        d_mlp = self.model.cfg.d_mlp
        for group, stream in self.streams.items():
            arrays = finalize(stream, n_intervals)  # every array's first axis is the neurons
            for i, key in enumerate(group):
                out[key] = {name: a[i * d_mlp:(i + 1) * d_mlp] for name, a in arrays.items()}
        return out


def _gather_to_main(collector: Collector, info: DistInfo) -> None:
    """Merge every rank's streams into rank 0's."""
    states = [None] * info.world_size if info.is_main else None
    for stream in collector.streams.values():
        stream.to("cpu")
    dist.gather_object(collector.streams, states, dst=0)
    if info.is_main:
        for other in states[1:]:
            for key, stream in collector.streams.items():
                stream.merge(other[key])


def collect(run_dir: str | Path, corpus_dir: str | Path | None = None,
            out: str | Path | None = None, split: str = COLLECT_SPLIT,
            n_tokens: int = COLLECT_TOKENS, layers: list[int] | None = None,
            settings: StoreSettings = StoreSettings(), batch_size: int = COLLECT_BATCH_SIZE,
            seed: int = 0, device: str | None = None, progress: bool = True) -> Path:
    """Collect the neuron store of a run; returns its path (default ``RUN/neurons``)."""
    if batch_size < 1:
        raise SolulabError(AT_LEAST_ONE)
    run_dir = Path(run_dir)
    info = init_distributed(device)
    model = Transformer.from_pretrained(run_dir, device=info.device).eval()
    layers = check_layers(model, layers)
    corpus = open_corpus_for(run_dir, Path(corpus_dir) if corpus_dir else None)
    split_tokens = corpus.tokens(split)
    n_ctx = model.cfg.n_ctx
    n_seq = min(n_tokens, len(split_tokens)) // n_ctx
    if n_seq < 1:
        raise SolulabError(f"{n_tokens:,} tokens (split {split!r} has {len(split_tokens):,}) make "
                           f"no sequence of n_ctx={n_ctx}: collect more tokens")
    collector = Collector(model, layers, settings, seed)
    mine = list(range(info.rank, n_seq, info.world_size))
    offsets = torch.arange(n_ctx)
    bar = tqdm(total=len(mine) * n_ctx, unit="tok", disable=not progress or not info.is_main,
               desc="collecting")
    for start in range(0, len(mine), batch_size):
        seqs = torch.tensor(mine[start:start + batch_size])
        rows = [np.asarray(split_tokens[int(s) * n_ctx:(int(s) + 1) * n_ctx]) for s in seqs]
        tokens = torch.from_numpy(np.stack(rows).astype(np.int64)).to(info.device)
        positions = (seqs[:, None] * n_ctx + offsets).to(info.device)
        collector.update(tokens, positions)
        bar.update(tokens.numel())
    bar.close()
    if info.distributed:
        _gather_to_main(collector, info)
    path = Path(out) if out else run_dir / rundir.NEURONS
    if info.is_main:
        arrays: dict[int, dict[str, np.ndarray]] = {layer: {} for layer in layers}
        for (layer, point), point_arrays in collector.arrays(settings.n_intervals).items():
            for name, array in point_arrays.items():
                arrays[layer][f"{point}.{name}"] = array
        for layer in layers:
            for name, tensor in top_logit_effects(model, layer).items():
                arrays[layer][f"logits.{name}"] = tensor.cpu().numpy()
        meta = {
            "model_sha256": sha256_file(run_dir / rundir.WEIGHTS),
            "tokenizer_sha256": corpus.tokenizer_sha256, "act_fn": model.cfg.act_fn,
            "n_layers": model.cfg.n_layers, "layers": layers, "d_mlp": model.cfg.d_mlp,
            **asdict(settings),
            "n_tokens": n_seq * n_ctx, "requested_tokens": n_tokens, "n_ctx": n_ctx,
            "split": split, "seed": seed,
            "corpus": str(corpus.path), "points": list(collector.points),
            "main_point": collector.points[0],
            "logit_effects_complete": model.cfg.n_layers == 1,
        }
        write_store(path, meta, arrays, run_dir / rundir.TOKENIZER)
    if info.distributed:
        dist.barrier()
    return path


def ensure_store(run_dir: Path, corpus_dir: Path | None, n_tokens: int,
                 progress: bool = True) -> Path:
    """The run's neuron store, collected unless one over ``n_tokens`` tokens (or the whole
    split, when it is shorter) exists for these weights."""
    try:
        store = open_store(run_dir)
        fresh = store.meta["model_sha256"] == sha256_file(Path(run_dir) / rundir.WEIGHTS)
        if fresh and store.meta.get("requested_tokens", store.meta["n_tokens"]) == n_tokens:
            return store.path
    except SolulabError:
        pass
    return collect(run_dir, corpus_dir, n_tokens=n_tokens, progress=progress)
