import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from solulab.core.config import ConfigError
from solulab.core.sizes import parse_size
from solulab.sweep import SweepError, load_sweep, run_sweep
from solulab.training.trainer import TrainConfig

HERE = Path(__file__).parent
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
SIZES, ACTS = ["1x32", "1x64"], ["gelu", "solu_ln"]


def run_test_sweep(corpus, out, steps=12, **kw):
    cfg = TrainConfig(steps=steps, batch_size=4, lr=3e-3, eval_every=4, checkpoint_every=4,
                      log_every=4, eval_sequences=4, device="cpu", **kw)
    return run_sweep(Path(corpus), Path(out), SIZES, ACTS, {"n_ctx": 32}, cfg, progress=False,
                     log=lambda message: None)


def test_sizes_are_layers_by_width_with_heads_by_width():
    assert parse_size("1x64") == {"n_layers": 1, "d_model": 64, "n_heads": 2}
    assert parse_size("3x320") == {"n_layers": 3, "d_model": 320, "n_heads": 5}
    assert parse_size("24x4096")["n_heads"] == 32
    for bad in ("big", "1l-128", "0x64", "1x"):
        with pytest.raises(ConfigError, match=f"unknown size '{bad}'"):
            parse_size(bad)
    with pytest.raises(ConfigError, match="multiple of 32"):
        parse_size("2x50")
    with pytest.raises(ConfigError, match="multiple of 64"):
        parse_size("2x288")


def test_interrupted_sweep_restarted_equals_an_uninterrupted_one(small_corpus, tmp_path):
    straight = tmp_path / "straight"
    # Both in child processes: bit-for-bit holds for the same number of threads.
    subprocess.run([sys.executable, str(HERE / "_sweep_child.py"), str(small_corpus),
                    str(straight)], env=CHILD_ENV, check=True)
    child = [sys.executable, str(HERE / "_sweep_child.py"), str(small_corpus),
             str(tmp_path / "resumed")]
    killed = subprocess.run(child + ["3", "6"], env=CHILD_ENV)  # inside run 3, after step 6
    assert killed.returncode == -9
    plan, done = load_sweep(tmp_path / "resumed")
    assert sorted(done) == ["1x32/gelu", "1x32/solu_ln"]
    assert subprocess.run(child, env=CHILD_ENV).returncode == 0
    _, straight_runs = load_sweep(straight)
    _, resumed_runs = load_sweep(tmp_path / "resumed")
    assert sorted(straight_runs) == sorted(resumed_runs) == sorted(
        f"{s}/{a}" for s in SIZES for a in ACTS)
    for key in straight_runs:
        a = load_file(straight / key / "model.safetensors")
        b = load_file(tmp_path / "resumed" / key / "model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), key
        assert straight_runs[key]["val_loss"] == resumed_runs[key]["val_loss"]


def test_a_sweep_with_other_settings_is_refused(small_corpus, tmp_path):
    run_test_sweep(small_corpus, tmp_path / "s", steps=4)
    with pytest.raises(SweepError, match="other train settings"):
        run_test_sweep(small_corpus, tmp_path / "s", steps=8)
    plan = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert plan["train"]["steps"] == 4
