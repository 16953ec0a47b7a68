"""The core install: without the optional dependencies (web server, plotting, the hub client,
lm-eval), the model trains, its neurons are collected, explained and shown; a command that needs
an extra says which one, in one line, and exits 2."""

import os
import subprocess
import sys
from pathlib import Path

from solulab.extras import EXTRA_OF

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
EXTRAS_ONLY = ["fastapi", "uvicorn", "starlette", "matplotlib", "huggingface_hub", "lm_eval"]

# Runs ``solulab ARGS`` through the entry point's main() with every extra's modules unimportable.
WITHOUT_EXTRAS = f"""
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRAS_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, NotInstalled())
from solulab.cli import main
sys.argv = ["solulab", *sys.argv[1:]]
main()
"""


def solulab(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS, *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=600)


def test_the_core_trains_collects_explains_and_shows_without_any_extra(small_corpus, tmp_path):
    run = tmp_path / "run"
    steps = [("train", "--corpus", small_corpus, "--act", "solu_ln", "--out", run,
              "--n-layers", "1", "--d-model", "32", "--n-heads", "2", "--n-ctx", "32",
              "--batch-size", "4", "--steps", "20", "--eval-every", "10", "--device", "cpu"),
             ("neurons", "collect", run, "--tokens", "2048"),
             ("autointerp", run),
             ("neurons", "show", run, "--layer", "0", "--neuron", "0")]
    for args in steps:
        done = solulab(*args)
        assert done.returncode == 0, (args, done.stderr[-2000:])
    assert (run / "neurons" / "autointerp.json").is_file()
    assert "neuron 0" in done.stdout.lower() or "layer 0" in done.stdout.lower()


def test_a_command_that_needs_an_extra_names_it(collected_runs, tmp_path):
    served = solulab("serve", "--runs", collected_runs, "--port", "8799")
    assert served.returncode == 2
    assert served.stderr.strip() == ("error: this needs uvicorn, which is not installed: "
                                     "pip install 'solulab[web]'")
    pulled = solulab("import", "hf:org/name", tmp_path / "imported")
    assert pulled.returncode == 2 and "pip install 'solulab[hub]'" in pulled.stderr
    assert not (tmp_path / "imported").exists()


def test_every_extra_named_is_one_the_package_declares():
    declared = (ROOT / "pyproject.toml").read_text()
    for extra in set(EXTRA_OF.values()):
        assert f"\n{extra} = [" in declared, extra
