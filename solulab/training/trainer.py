"""The training loop: one CPU, one GPU, or many processes under ``torchrun``.

Batches are a pure function of ``(seed, step)``: every optimizer step draws ``global_batch``
random windows of ``n_ctx`` tokens from the train split, and each process takes its slice. Runs that
differ only in the activation therefore see the same data in the same order, start from the same
weights for every shared parameter (see ``ModelConfig.init_seed``), and a resumed run continues
bit-for-bit on CPU. The run directory receives ``metrics.jsonl``, ``checkpoints/``, and at the end
``config.json``, ``model.safetensors``, ``tokenizer.json`` and ``run.json``.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from solulab.core.config import ModelConfig
from solulab.core.flops import flops_per_token, peak_flops
from solulab.core.model import Transformer, lm_loss
from solulab.data import Corpus
from solulab.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    init_distributed,
)
from solulab.distributed.sharded import build_model, is_sharded
from solulab.distributed.tensor_parallel import clip_grad_norm
from solulab.errors import TrainingInterrupted
from solulab.io import atomic_write_text, json_text
from solulab.runs import rundir
from solulab.runs.model_card import write_card
from solulab.runs.tracking import Trackers
from solulab.training.checkpoints import (
    TrainState,
    check_identity,
    checkpoint_path,
    list_checkpoints,
    load_latest_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from solulab.training.config import TrainConfig, TrainError


def _step_of(line: str) -> float:
    """The step of a metrics line; infinity for a line cut short by a kill."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


class StopSignals:
    """While active, SIGINT and SIGTERM ask training to stop after the current step; a second
    SIGINT stops at once (``KeyboardInterrupt``; every file is written atomically)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this step and writing a "
              "checkpoint (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at the last step."""
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, total // 20)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def batch_starts(seed: int, step: int, n_starts: int, n_tokens: int, n_ctx: int) -> np.ndarray:
    """The start offsets of the ``n_starts`` windows of step ``step`` (the same on every rank)."""
    rng = np.random.default_rng([seed, step])
    return rng.integers(0, n_tokens - n_ctx + 1, size=n_starts)


def gather_windows(tokens, starts: Sequence[int], n_ctx: int) -> torch.Tensor:
    """``[len(starts), n_ctx]`` token ids."""
    windows = np.stack([np.asarray(tokens[s:s + n_ctx]) for s in starts])
    return torch.from_numpy(windows.astype(np.int64))


def param_groups(model: Transformer, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only: not on norms, biases or embeddings."""
    embeddings = {id(model.embed.weight)}
    if model.pos_embed is not None:
        embeddings.add(id(model.pos_embed.weight))
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: Transformer, lr: float, weight_decay: float,
                    betas: tuple[float, float], sharded: bool = False) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; the fused kernel (one pass over all parameters, on CPU
    as on GPU) unless the parameters are sharded DTensors, which take the multi-tensor path."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas,
                             fused=not sharded)


def autocast_for(device: torch.device):
    """What training computes in: bf16 autocast on CUDA, the parameters' dtype elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  micro_batches: Sequence[torch.Tensor], grad_clip: float, forward=None,
                  no_sync=None, tensor_parallel: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One optimizer step, the one training, replicate's timing and the benchmarks take: each
    micro-batch's loss under ``autocast_for`` and its backward (``no_sync``, DDP's, holds the
    gradient all-reduce back until the last), clipping (across tensor-parallel ranks where
    sharded), AdamW. ``forward`` is what computes the loss (default ``model``; a compiled or
    wrapped copy). Returns the step's loss (float64, on the device) and the gradient norm
    before clipping (None without clipping)."""
    forward = model if forward is None else forward
    device = micro_batches[0].device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for i, tokens in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with nullcontext() if last or no_sync is None else no_sync():
            with autocast_for(device):
                loss = forward(tokens, return_loss=True) / len(micro_batches)
            loss.backward()
        loss_sum += loss.detach().double()
    grad_norm = None
    if grad_clip > 0:
        clip = clip_grad_norm if tensor_parallel else torch.nn.utils.clip_grad_norm_
        grad_norm = clip(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, grad_norm


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    tokens: int
    final_loss: float
    val_loss: float
    history: list[dict[str, Any]] = field(default_factory=list)
    already_finished: bool = False  # a resume of a finished run: nothing was done


class Trainer:
    """One training run; ``run()`` trains to the end (or resumes and then trains)."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        corpus_dir: str | Path,
        out: str | Path,
        resume: bool = False,
        progress: bool = True,
        callbacks: Sequence[Callable[[int, dict[str, Any]], None]] = (),
    ):
        self.cfg, self.out, self.progress, self.callbacks = cfg, Path(out), progress, callbacks
        if self.out.exists() and not self.out.is_dir():
            raise TrainError(f"--out {self.out} is a file, not a run directory: choose another "
                             "--out")
        self.corpus = Corpus(corpus_dir)
        self.corpus_dir = Path(corpus_dir)
        if model_cfg.d_vocab < self.corpus.vocab_size:
            raise TrainError(f"d_vocab ({model_cfg.d_vocab}) is smaller than the corpus "
                             f"vocabulary ({self.corpus.vocab_size})")
        self.model_cfg = model_cfg
        self.train_tokens = self.corpus.tokens("train")
        self.val_tokens = self.corpus.tokens("val")
        n_ctx = model_cfg.n_ctx
        for split, tokens in (("train", self.train_tokens), ("validation", self.val_tokens)):
            if len(tokens) < n_ctx:
                raise TrainError(f"n_ctx ({n_ctx}) is longer than the {split} split "
                                 f"({len(tokens)} tokens): lower --n-ctx or use a larger corpus")
        if not resume and self.out.exists() and any(self.out.iterdir()) \
                and not self.unfinished_without_checkpoint():
            raise TrainError(f"{self.out} already holds a run: pass --resume to continue it, "
                             "or choose another --out")
        self.resume = resume
        self.info: DistInfo | None = None
        self.trackers = Trackers.disabled()

    # -- identity and bookkeeping -----------------------------------------------------------
    def unfinished_without_checkpoint(self) -> bool:
        """The run directory holds only what a run stopped before its first checkpoint leaves:
        starting afresh loses nothing."""
        complete = (rundir.read_record(self.out) or {}).get("complete")  # torn: not finished
        leftovers = ({p.name for p in self.out.iterdir()}
                     - {rundir.METRICS, rundir.RECORD, rundir.CHECKPOINTS})
        return not complete and not leftovers and not list_checkpoints(self.out)

    def finished_record(self) -> dict[str, Any] | None:
        """``run.json`` of a run that has finished (weights written), else None."""
        if not rundir.is_complete(self.out) or not (self.out / rundir.WEIGHTS).is_file():
            return None
        return rundir.read_record(self.out)

    def identity(self, dp_size: int) -> dict[str, Any]:
        ident = {f"model.{k}": v for k, v in self.model_cfg.to_dict().items()}
        ident.update(tokenizer_sha256=self.corpus.tokenizer_sha256, seed=self.cfg.seed,
                     global_batch=self.cfg.global_batch(dp_size))
        return ident

    @staticmethod
    def _identity_of(record: dict[str, Any]) -> dict[str, Any]:
        """The identity a finished run's ``run.json`` records."""
        train = record["train"]
        ident = {f"model.{k}": v for k, v in record["model"].items()}
        ident.update(tokenizer_sha256=record["tokenizer_sha256"], seed=train["seed"],
                     global_batch=train["batch_size"] * train["grad_accum"]
                     * record.get("world_size", 1) // max(1, train.get("tp", 1)))
        return ident

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.out / rundir.METRICS, "a") as f:
            f.write(json_text(record) + "\n")
        self.trackers.metrics(record["step"], record)

    def _truncate_metrics(self, step: int) -> None:
        """Drop metrics past ``step`` (written after the checkpoint a resume starts from)."""
        path = self.out / rundir.METRICS
        if path.exists():
            kept = [line for line in path.read_text().splitlines() if _step_of(line) <= step]
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    # -- the loop ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> float:
        """Mean loss over the first ``eval_sequences`` windows of the validation split. Every
        rank runs the same number of forward passes (a rank short of windows repeats one and
        counts it with weight 0), so sharded models never wait on a rank that has stopped."""
        info, n_ctx = self.info, self.model_cfg.n_ctx
        n = min(self.cfg.eval_sequences, len(self.val_tokens) // n_ctx)
        mine = list(range(info.dp_rank, n, info.dp_size))
        per_rank = math.ceil(n / info.dp_size)
        padded = mine + [-1] * (per_rank - len(mine))
        model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=info.device)
        for i in range(0, per_rank, self.cfg.batch_size):
            batch = padded[i:i + self.cfg.batch_size]
            starts = [max(j, 0) * n_ctx for j in batch]
            weight = torch.tensor([float(j >= 0) for j in batch], dtype=torch.float64,
                                  device=info.device)
            tokens = gather_windows(self.val_tokens, starts, n_ctx).to(info.device)
            with autocast_for(info.device):
                logits = model(tokens)
            per_seq = lm_loss(logits, tokens, per_sequence=True)
            total[0] += (per_seq.double() * weight).sum()
            total[1] += weight.sum()
        model.train()
        total = all_reduce_sum(total)
        return (total[0] / total[1]).item()

    def run(self) -> TrainResult:
        cfg = self.cfg
        self.info = info = init_distributed(cfg.device, cfg.tp)
        n_ctx = self.model_cfg.n_ctx
        total_steps = cfg.total_steps(info.dp_size, n_ctx)
        global_batch = cfg.global_batch(info.dp_size)
        identity = self.identity(info.dp_size)

        finished = self.finished_record() if self.resume else None
        if finished is not None:
            check_identity(self._identity_of(finished), identity, self.out)
            steps = finished["total_steps"]
            if steps != total_steps:
                raise TrainError(
                    f"{self.out} finished at {steps:,} steps ({steps * global_batch * n_ctx:,} "
                    f"tokens); this command asks for {total_steps:,} steps "
                    f"({total_steps * global_batch * n_ctx:,} tokens). A finished run is not "
                    "extended (its learning-rate schedule has ended): train the longer run "
                    "into another --out")
            return TrainResult(self.out, steps, steps * global_batch * n_ctx, float("nan"),
                               finished.get("val_loss") or float("nan"), already_finished=True)
        start_step, optimizer_state = 0, None
        state = load_latest_checkpoint(self.out) if self.resume else None
        if self.resume and state is None:
            self._say(f"no checkpoint in {self.out}: starting from step 0")
        if state is not None:
            check_identity(state.identity, identity, self.out)
            start_step, optimizer_state = state.step, state.optimizer
            restore_rng_states(state.rng)
        model, train_model = build_model(self.model_cfg, info, cfg.fsdp,
                                         state.model if state is not None else None)
        optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas, self._sharded)
        if optimizer_state is not None:
            if self._sharded:
                from torch.distributed.checkpoint.state_dict import (
                    StateDictOptions,
                    set_optimizer_state_dict,
                )

                set_optimizer_state_dict(model, optimizer, optimizer_state,
                                         options=StateDictOptions(full_state_dict=True))
            else:
                optimizer.load_state_dict(optimizer_state)
        step_model = torch.compile(train_model) if cfg.compile else train_model

        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._truncate_metrics(start_step)
            record = self._run_record(identity, total_steps, None)
            rundir.write_record(self.out, record)
            self._say(self._summary(model, total_steps, start_step, global_batch))
            self.trackers = Trackers(self.out, cfg.log,
                                     resume_from=start_step if state is not None else None)
            self.trackers.hyperparameters({**record, "n_params": model.n_params()})
        barrier()
        finished = False
        try:
            with StopSignals() as signals:
                result = self._train(model, train_model, step_model, optimizer, start_step,
                                     total_steps, identity, signals)
            finished = True
            return result
        finally:
            self.trackers.close(finished)

    def _say(self, text: str) -> None:
        if self.progress and (self.info is None or self.info.is_main):
            print(text, file=sys.stderr, flush=True)

    def _summary(self, model: Transformer, total_steps: int, start_step: int,
                 global_batch: int) -> str:
        cfg, n_ctx = self.cfg, self.model_cfg.n_ctx
        per_step = global_batch * n_ctx
        where = f"from step {start_step} " if start_step else ""
        return (f"training {self.model_cfg.act_fn} {where}on {self.info.device}: "
                f"{model.n_params():,} parameters, {per_step:,} tokens per step, {total_steps:,} "
                f"steps ({total_steps * per_step:,} tokens); checkpoints every "
                f"{cfg.checkpoint_every} steps and {cfg.checkpoint_minutes:g} minutes -> "
                f"{self.out}")

    def _train(self, model, train_model, step_model, optimizer, start_step: int,
               total_steps: int, identity: dict[str, Any], signals: StopSignals) -> TrainResult:
        cfg, info, n_ctx = self.cfg, self.info, self.model_cfg.n_ctx
        global_batch = cfg.global_batch(info.dp_size)
        last_checkpoint = time.monotonic()

        history: list[dict[str, Any]] = []
        per_token_flops, peak = flops_per_token(model), peak_flops(info.device)
        bar = tqdm(total=total_steps, initial=start_step, desc=f"train {self.model_cfg.act_fn}",
                   unit="step", disable=not (self.progress and info.is_main), dynamic_ncols=True)
        loss_sum = torch.zeros((), dtype=torch.float64, device=info.device)
        loss_count, last_time, last_step = 0, time.perf_counter(), start_step
        val_loss, step_loss = float("nan"), float("nan")
        for step in range(start_step, total_steps):
            lr = lr_at(step, total_steps, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            starts = batch_starts(cfg.seed, step, global_batch, len(self.train_tokens), n_ctx)
            micro_batches = [
                gather_windows(self.train_tokens, starts[offset:offset + cfg.batch_size],
                               n_ctx).to(info.device)
                for offset in ((micro * info.dp_size + info.dp_rank) * cfg.batch_size
                               for micro in range(cfg.grad_accum))]
            step_loss_t, grad_norm = training_step(
                model, optimizer, micro_batches, cfg.grad_clip, forward=step_model,
                no_sync=getattr(train_model, "no_sync", None), tensor_parallel=info.tp > 1)
            loss_sum += step_loss_t
            loss_count += 1
            done = step + 1

            is_last = done == total_steps
            record: dict[str, Any] | None = None
            if done % cfg.log_every == 0 or done % cfg.eval_every == 0 or is_last:
                summed = all_reduce_sum(loss_sum.clone())
                mean_loss = (summed / (loss_count * info.world_size)).item()
                now = time.perf_counter()
                record = {"step": done, "tokens": done * global_batch * n_ctx, "loss": mean_loss,
                          "lr": lr, "tokens_per_s": (done - last_step) * global_batch * n_ctx
                          / max(now - last_time, 1e-9)}
                if grad_norm is not None:
                    record["grad_norm"] = float(grad_norm.full_tensor() if hasattr(
                        grad_norm, "full_tensor") else grad_norm)
                record["tflops"] = per_token_flops * record["tokens_per_s"] / 1e12
                if peak:
                    record["mfu"] = record["tflops"] * 1e12 / peak
                if done % cfg.eval_every == 0 or is_last:
                    val_loss = record["val_loss"] = self.evaluate(step_model)
                loss_sum.zero_()
                loss_count, last_step, step_loss = 0, done, mean_loss
                last_time = time.perf_counter()
                history.append(record)
                if info.is_main:
                    self._log(record)
                bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
            stop, overdue = self._agree(signals.signum is not None, time.monotonic()
                                        - last_checkpoint > 60 * cfg.checkpoint_minutes)
            if done % cfg.checkpoint_every == 0 or is_last or stop or overdue:
                self._checkpoint(model, optimizer, done, identity)
                last_checkpoint = time.monotonic()
            bar.update(1)
            if stop and not is_last:
                bar.close()
                raise TrainingInterrupted(signals.signum or signal.SIGTERM, done, total_steps,
                                          checkpoint_path(self.out, done))
            for callback in self.callbacks:
                callback(done, record or {})
        bar.close()

        final_state, _ = self._full_state(model, optimizer)
        if info.is_main:
            self._finish(final_state, identity, total_steps, val_loss)
        barrier()
        return TrainResult(self.out, total_steps, total_steps * global_batch * n_ctx,
                           step_loss, val_loss, history)

    def _agree(self, *flags: bool) -> list[bool]:
        """Each flag true on any rank, so that every rank takes the same branch."""
        if not self.info.distributed:
            return list(flags)
        votes = torch.tensor([float(f) for f in flags], device=self.info.device)
        return [bool(v > 0) for v in all_reduce_sum(votes)]

    # -- files ------------------------------------------------------------------------------
    @property
    def _sharded(self) -> bool:
        return is_sharded(self.info, self.cfg.fsdp)

    def _full_state(self, model, optimizer) -> tuple[dict, dict]:
        if self._sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_state_dict(model, optimizer, options=options)
        return ({k: v.detach().cpu() for k, v in model.state_dict().items()},
                optimizer.state_dict())

    def _checkpoint(self, model, optimizer, step: int, identity: dict[str, Any]) -> None:
        model_state, optim_state = self._full_state(model, optimizer)
        if self.info.is_main:
            state = TrainState(step=step, model=model_state, optimizer=optim_state,
                               identity=identity, rng=rng_states())
            save_checkpoint(self.out, state, self.cfg.keep_checkpoints)
        barrier()

    def _run_record(self, identity, total_steps: int, val_loss: float | None) -> dict[str, Any]:
        return {
            "model": self.model_cfg.to_dict(),
            "train": asdict(self.cfg),
            "corpus": str(self.corpus_dir.resolve()),
            "tokenizer_sha256": identity["tokenizer_sha256"],
            "world_size": self.info.world_size,
            "total_steps": total_steps,
            "complete": val_loss is not None,
            "val_loss": val_loss,
        }

    def _finish(self, model_state: dict, identity, total_steps: int, val_loss: float) -> None:
        model = Transformer(self.model_cfg)
        model.load_state_dict(model_state)
        model.save_pretrained(self.out)
        rundir.copy_tokenizer(self.corpus_dir, self.out)
        record = self._run_record(identity, total_steps, val_loss)
        record["n_params"] = model.n_params()
        rundir.write_record(self.out, record)
        write_card(self.out)
