import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from servers import free_port
from test_train import small_model_cfg, train

HERE = Path(__file__).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}


def torchrun(*args, port):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_port", str(port), *args]


@pytest.mark.parametrize("plant_nan", [False, True])
def test_tensor_parallel_outputs_and_gradients_equal_the_blocked_model(tmp_path, plant_nan):
    out = tmp_path / "errors.json"
    subprocess.run(torchrun(str(HERE / "_tp_child.py"), str(out),
                            *(["--plant-nan"] if plant_nan else []), port=free_port()),
                   env=ENV, check=True, capture_output=True)
    errors = json.loads(out.read_text())
    assert set(errors) == {"solu_ln", "gelu_ln", "exp_ln", "solu", "gelu"}
    if plant_nan:
        assert all(e == float("inf") for e in errors.values()), errors
    else:
        assert all(e < 1e-5 for e in errors.values()), errors


def test_training_with_tp_2_matches_single_process_training(small_corpus, tmp_path):
    model = small_model_cfg(act_blocks=2)
    train(small_corpus, tmp_path / "single", steps=6, batch_size=4, checkpoint_every=3,
          model=model)
    args = ["--corpus", str(small_corpus), "--act", "solu_ln", "--n-layers", "1",
            "--d-model", "32", "--n-heads", "2", "--d-mlp", "64", "--n-ctx", "32",
            "--act-blocks", "2", "--steps", "6", "--batch-size", "4", "--lr", "3e-3",
            "--eval-every", "10", "--log-every", "5", "--checkpoint-every", "3",
            "--device", "cpu", "--tp", "2", "--out", str(tmp_path / "tp")]
    result = subprocess.run(torchrun("-m", "solulab.cli", "train", *args, port=free_port()),
                            env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = load_file(tmp_path / "single" / "model.safetensors"), load_file(
        tmp_path / "tp" / "model.safetensors")
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
