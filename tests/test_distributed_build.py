import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _build_child import CONFIG
from servers import free_port

from solulab import ModelConfig, Transformer

HERE = Path(__file__).parent


@pytest.mark.parametrize("mode", ["fsdp", "tp"])
def test_a_meta_built_sharded_model_equals_the_single_process_one_bit_for_bit(tmp_path, mode):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_port", str(free_port()), str(HERE / "_build_child.py"),
                    str(tmp_path), mode], env=env, check=True, capture_output=True)
    result = torch.load(tmp_path / f"{mode}.pt", weights_only=True)
    expected = Transformer(ModelConfig(**CONFIG)).state_dict()
    assert set(result["full"]) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(result["full"][name], tensor), name
        assert torch.equal(result["reloaded"][name], tensor * 2), name
    # Each rank materialised only its shard of the sharded parameters.
    sharded = {n: (mine, whole) for n, (mine, whole) in result["local"].items() if mine < whole}
    if mode == "fsdp":
        assert set(sharded) == set(result["local"])  # FSDP shards every parameter
    else:
        assert set(sharded) == {f"blocks.{i}.mlp.{p}" for i in range(2) for p in (
            "fc_in.weight", "fc_in.bias", "fc_out.weight", "act.ln.w", "act.ln.b")}
    rows = {n: p.shape[0] for n, p in expected.items()}  # rank 0's share of dim 0, rounded up
    assert all(mine == -(-rows[n] // 2) * (whole // rows[n])
               for n, (mine, whole) in sharded.items())
