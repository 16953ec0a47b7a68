import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from servers import free_port
from typer.testing import CliRunner

from solulab import ModelConfig, Transformer
from solulab.cli import app
from solulab.training.checkpoints import checkpoint_path, list_checkpoints, load_latest_checkpoint
from solulab.training.trainer import TrainConfig, Trainer, batch_starts, lr_at, param_groups

HERE = Path(__file__).parent
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}


def small_model_cfg(**kw):
    cfg = dict(n_layers=1, d_model=32, n_heads=2, d_mlp=64, n_ctx=32, d_vocab=300,
               act_fn="solu_ln")
    cfg.update(kw)
    return cfg


def small_train_cfg(steps, **kw):
    cfg = dict(steps=steps, batch_size=4, lr=3e-3, eval_every=10, log_every=5,
               checkpoint_every=10, eval_sequences=8, device="cpu")
    cfg.update(kw)
    return TrainConfig(**cfg)


def train(corpus, out, steps=20, model=None, **kw):
    cfg = ModelConfig(**(model or small_model_cfg()))
    return Trainer(cfg, small_train_cfg(steps, **kw), corpus, out, progress=False).run()


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


TIMED = ("tokens_per_s", "tflops", "mfu")


def without_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMED} for r in records]


def test_training_lowers_the_loss_and_writes_a_run_directory(small_corpus, tmp_path):
    result = train(small_corpus, tmp_path / "run", steps=30)
    records = metrics(tmp_path / "run")
    assert records[0]["loss"] > records[-1]["loss"] + 0.5
    assert records[-1]["step"] == 30 and "val_loss" in records[-1]
    assert set(records[0]) >= {"step", "tokens", "loss", "lr", "tokens_per_s"}
    assert records[-1]["tokens"] == 30 * 4 * 32
    for name in ("config.json", "model.safetensors", "tokenizer.json", "run.json"):
        assert (tmp_path / "run" / name).is_file()
    loaded = Transformer.from_pretrained(tmp_path / "run")
    assert loaded.cfg.act_fn == "solu_ln"
    assert result.val_loss == records[-1]["val_loss"]


def test_runs_differing_only_in_act_see_the_same_data_and_start_alike():
    a = batch_starts(0, 7, 16, 10_000, 32)
    assert (a == batch_starts(0, 7, 16, 10_000, 32)).all()
    assert not (a == batch_starts(0, 8, 16, 10_000, 32)).all()
    gelu = Transformer(ModelConfig(**small_model_cfg(act_fn="gelu"))).state_dict()
    solu = Transformer(ModelConfig(**small_model_cfg(act_fn="solu_ln"))).state_dict()
    assert all(torch.equal(v, solu[k]) for k, v in gelu.items())


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = small_train_cfg(100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, 100, cfg) == pytest.approx(1e-4)
    assert lr_at(9, 100, cfg) == pytest.approx(1e-3)
    assert lr_at(99, 100, cfg) == pytest.approx(1e-4, rel=1e-2)
    mid = lr_at(55, 100, cfg)
    assert mid == pytest.approx(1e-4 + 0.9e-3 * 0.5, rel=1e-6)


def test_no_weight_decay_on_norms_biases_and_embeddings():
    model = Transformer(ModelConfig(**small_model_cfg(positional="learned")))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decayed == {n for n, p in model.named_parameters()
                       if p.dim() == 2 and n not in ("embed.weight", "pos_embed.weight")}
    assert "blocks.0.mlp.act.ln.w" in {names[id(p)] for p in no_decay["params"]}


def _weights(run):
    return load_file(run / "model.safetensors")


def test_kill_and_resume_is_bit_identical_to_a_straight_run(small_corpus, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    # Both in child processes: bit-for-bit holds for the same number of threads.
    subprocess.run([sys.executable, str(HERE / "_train_child.py"), str(small_corpus),
                    str(straight), "20", "none", "0"], env=CHILD_ENV, check=True)
    child = [sys.executable, str(HERE / "_train_child.py"), str(small_corpus), str(resumed), "20"]
    killed = subprocess.run(child + ["after-checkpoint", "10"], env=CHILD_ENV)
    assert killed.returncode == -9
    assert [s for s, _ in list_checkpoints(resumed)] == [10]
    done = subprocess.run(child + ["none", "0", "--resume"], env=CHILD_ENV)
    assert done.returncode == 0
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert without_timing(metrics(straight)) == without_timing(metrics(resumed))


def test_kill_during_checkpoint_write_keeps_the_previous_checkpoint(small_corpus, tmp_path):
    run = tmp_path / "run"
    child = [sys.executable, str(HERE / "_train_child.py"), str(small_corpus), str(run), "30"]
    killed = subprocess.run(child + ["during-checkpoint", "20"], env=CHILD_ENV)
    assert killed.returncode == -9
    assert not checkpoint_path(run, 20).exists()
    assert load_latest_checkpoint(run).step == 10
    # A damaged newest file is skipped too.
    checkpoint_path(run, 20).write_bytes(checkpoint_path(run, 10).read_bytes()[:1000])
    assert load_latest_checkpoint(run).step == 10
    done = subprocess.run(child + ["none", "0", "--resume"], env=CHILD_ENV)
    assert done.returncode == 0
    assert metrics(run)[-1]["step"] == 30


@pytest.mark.parametrize("fsdp", [False, True])
def test_two_process_ddp_matches_one_process_at_the_same_global_batch(small_corpus, tmp_path, fsdp):
    """Also with uneven evaluation data: 9 validation windows over 2 ranks of batch 4 give one
    rank two forward passes and the other one, which left FSDP waiting forever."""
    single = tmp_path / "single"
    train(small_corpus, single, steps=6, batch_size=8, checkpoint_every=3, eval_every=3,
          eval_sequences=9)
    args = ["--corpus", str(small_corpus), "--act", "solu_ln", "--n-layers", "1",
            "--d-model", "32", "--n-heads", "2", "--d-mlp", "64", "--n-ctx", "32",
            "--steps", "6", "--batch-size", "4", "--lr", "3e-3", "--eval-every", "3",
            "--eval-sequences", "9", "--log-every", "5", "--checkpoint-every", "3",
            "--device", "cpu"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(free_port()), "-m", "solulab.cli", "train", "--out",
           str(tmp_path / "ddp"), *args] + (["--fsdp"] if fsdp else [])
    tracked = importlib.util.find_spec("tensorboard") is not None
    subprocess.run(cmd + (["--trackers", "tensorboard"] if tracked else []),
                   env={**CHILD_ENV, "SOLULAB_DIST_TIMEOUT_S": "60"}, check=True,
                   capture_output=True, timeout=300)
    if tracked:  # only rank 0 logs
        assert len(list((tmp_path / "ddp" / "tensorboard").glob("events.out.tfevents.*"))) == 1
    a, b = _weights(single), _weights(tmp_path / "ddp")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    la, lb = metrics(single), metrics(tmp_path / "ddp")
    assert [r["step"] for r in la] == [r["step"] for r in lb]
    for ra, rb in zip(la, lb):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-4)
        assert ("val_loss" in ra) == ("val_loss" in rb)
        if "val_loss" in ra:
            assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-4)
    assert sum("val_loss" in r for r in lb) == 2


def test_two_nodes_under_torchrun_match_one_process(small_corpus, tmp_path):
    """``torchrun --nnodes 2 --nproc_per_node 1``, a rendezvous on localhost, each node its own
    launcher (as a cluster runs them), trains what one process trains at the same global batch."""
    single = tmp_path / "single"
    train(small_corpus, single, steps=6, batch_size=8, checkpoint_every=3, eval_every=3)
    args = ["--corpus", str(small_corpus), "--act", "solu_ln", "--n-layers", "1",
            "--d-model", "32", "--n-heads", "2", "--d-mlp", "64", "--n-ctx", "32",
            "--steps", "6", "--batch-size", "4", "--lr", "3e-3", "--eval-every", "3",
            "--eval-sequences", "8", "--log-every", "5", "--checkpoint-every", "3",
            "--device", "cpu", "--out", str(tmp_path / "nodes")]
    endpoint = f"127.0.0.1:{free_port()}"
    env = {**CHILD_ENV, "SOLULAB_DIST_TIMEOUT_S": "60"}
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
         "--node_rank", str(rank), "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint,
         "--rdzv_id", "solulab-test", "-m", "solulab.cli", "train", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for node in nodes:
        _, err = node.communicate(timeout=300)
        assert node.returncode == 0, err[-3000:]
    a, b = _weights(single), _weights(tmp_path / "nodes")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


runner = CliRunner()


def _cli(*args):
    return runner.invoke(app, list(map(str, args)))


def test_bad_inputs_are_one_clear_line_and_exit_2(small_corpus, tmp_path):
    base = ["train", "--corpus", small_corpus, "--act", "solu_ln", "--n-layers", 1,
            "--d-model", 32, "--n-heads", 2, "--steps", 2, "--device", "cpu"]
    r = _cli("corpus", "build", "--out", tmp_path / "c", "--source", tmp_path / "missing")
    assert r.exit_code == 2 and "missing" in r.output and not (tmp_path / "c").exists()

    r = _cli(*base, "--out", tmp_path / "r1", "--size", "huge")
    assert r.exit_code == 2 and "unknown size 'huge': give LxD" in r.output

    r = _cli(*base, "--out", tmp_path / "r2", "--n-ctx", 100_000)
    assert r.exit_code == 2 and "is longer than the" in r.output

    r = _cli(*base, "--out", tmp_path / "r3", "--act", "swish")
    assert r.exit_code == 2 and "unknown act_fn 'swish'" in r.output

    run = tmp_path / "run"
    assert _cli(*base, "--out", run, "--checkpoint-every", 1).exit_code == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    r = _cli(*base, "--out", run)
    assert r.exit_code == 2 and "already holds a run: pass --resume" in r.output
    r = _cli(*base, "--out", run, "--d-model", 64, "--resume")
    assert r.exit_code == 2 and "model.d_model: checkpoint 32 vs now 64" in r.output
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert before == after
    assert len(r.output.strip().splitlines()) == 1  # one clear line


def test_resume_against_another_tokenizer_is_refused(small_corpus, tmp_path):
    from conftest import write_text_tree

    from solulab.data import build_corpus

    other = tmp_path / "other"
    build_corpus(other, sources=[write_text_tree(tmp_path / "t", seed=5, n_docs=30)],
                 vocab_size=290, progress=False)
    run = tmp_path / "run"
    train(small_corpus, run, steps=10)
    cfg = ModelConfig(**small_model_cfg())
    with pytest.raises(ValueError, match="tokenizer_sha256: checkpoint"):
        Trainer(cfg, small_train_cfg(20), other, run, resume=True, progress=False).run()


def test_the_ladder_of_sizes_is_about_4x_apart_and_listed():
    from solulab.core.sizes import LADDER, parse_size

    counts = []
    for size in LADDER:
        with torch.device("meta"):
            counts.append(Transformer(ModelConfig(**parse_size(size))).n_params())
    ratios = [b / a for a, b in zip(counts, counts[1:])]
    assert all(3.5 < r < 5.0 for r in ratios), ratios
    # 1x128 (solu_ln): 12 * D**2 weights, the biases of qkv, out, fc_in and fc_out, and the
    # LayerNorms of the block (2 x 2D), the activation (2 x 4D) and the end (2D)
    assert counts[0] == 12 * 128**2 + (3 + 1 + 4 + 1) * 128 + (4 + 8 + 2) * 128
    listing = _cli("sizes")
    assert listing.exit_code == 0 and "1x128" in listing.output and "199,552" in listing.output


def test_the_training_step_equals_its_parts_and_takes_any_forward():
    """``training_step`` (training's, replicate's timing's and the benchmarks' one step) against
    the step written out by hand: two micro-batches, clipping, AdamW; and a forward that, like a
    compiled module, refuses ``len()``."""
    from solulab.training.trainer import build_optimizer, training_step

    class Wrapped(torch.nn.Module):  # as torch.compile's module: no truthiness through len()
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def __len__(self):
            raise TypeError("no len()")

        def forward(self, tokens, return_loss=False):
            return self.inner(tokens, return_loss=return_loss)

    torch.manual_seed(0)
    tokens = [torch.randint(0, 300, (2, 32)) for _ in range(2)]
    ours, theirs = (Transformer(ModelConfig(**small_model_cfg())) for _ in range(2))
    theirs.load_state_dict(ours.state_dict())
    opt_ours, opt_theirs = (build_optimizer(m, 1e-2, 0.1, (0.9, 0.95)) for m in (ours, theirs))
    loss, norm = training_step(ours, opt_ours, tokens, 0.5, forward=Wrapped(ours))
    losses = [theirs(t, return_loss=True) / 2 for t in tokens]
    sum(losses).backward()
    expected_norm = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.5)
    opt_theirs.step()
    assert loss.item() == pytest.approx(sum(x.item() for x in losses), rel=1e-6)
    assert norm.item() == pytest.approx(expected_norm.item(), rel=1e-5) and norm.item() > 0.5
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert a.grad is None
