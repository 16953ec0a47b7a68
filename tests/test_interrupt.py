"""Training under SIGINT and SIGTERM: stopped before the first checkpoint, mid-step, during a
checkpoint write, or twice at once, then resumed, it ends bit for bit where an uninterrupted run
ends; no run directory is left that both a resume and a fresh start refuse; re-running changes
nothing."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from solulab.training.checkpoints import list_checkpoints

HERE = Path(__file__).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
STEPS = 400


def command(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "solulab.cli", "train", "--corpus", str(corpus), "--act",
            "solu_ln", "--out", str(out), "--n-layers", "1", "--d-model", "32", "--n-heads", "2",
            "--n-ctx", "32", "--batch-size", "4", "--steps", str(STEPS), "--eval-every", "20",
            "--log-every", "5", "--checkpoint-every", "20", "--device", "cpu", *extra]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model.safetensors")


@pytest.fixture(scope="module")
def straight(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    subprocess.run(command(small_corpus, out), env=ENV, check=True, capture_output=True)
    return out


def wait_for_step(out: Path, step: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    metrics = out / "metrics.jsonl"
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.is_file() and any(json.loads(line)["step"] >= step for line in
                                     metrics.read_text().splitlines() if line.endswith("}")):
            return
        time.sleep(0.01)
    raise AssertionError(f"training never reached step {step}")


def finish(corpus: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command(corpus, out, "--resume"), env=ENV, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("signum, when", [
    (signal.SIGINT, 5),  # before the first checkpoint (step 20)
    (signal.SIGTERM, 5),
    (signal.SIGINT, "random"),  # mid-step, at a random moment
    (signal.SIGTERM, "random"),
])
def test_a_stopped_run_resumes_bit_for_bit(small_corpus, straight, tmp_path, signum, when):
    out = tmp_path / "run"
    process = subprocess.Popen(command(small_corpus, out), env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    if when == "random":
        wait_for_step(out, 5, process)
        time.sleep(random.Random().uniform(0, 0.8))
    else:
        wait_for_step(out, when, process)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("training finished before the signal arrived")
    assert process.returncode == 128 + signum, err
    stopped = max(step for step, _ in list_checkpoints(out))
    assert f"stopped at step {stopped} of {STEPS}" in err and "--resume" in err
    done = finish(small_corpus, out)
    assert done.returncode == 0, done.stderr
    a, b = weights(straight), weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_signal_during_a_checkpoint_write_loses_nothing(small_corpus, tmp_path):
    out, straight = tmp_path / "run", tmp_path / "straight"
    child = [sys.executable, str(HERE / "_train_child.py"), str(small_corpus)]
    subprocess.run(child + [str(straight), "30", "none", "0"], env=ENV, check=True)
    stopped = subprocess.run(child + [str(out), "30", "signal-during-checkpoint", "20"], env=ENV,
                             capture_output=True, text=True)
    assert stopped.returncode == 0 and "stopped at step 21" in stopped.stdout, stopped.stderr
    assert [s for s, _ in list_checkpoints(out)] == [20, 21]
    resumed = subprocess.run(child + [str(out), "30", "none", "0", "--resume"], env=ENV)
    assert resumed.returncode == 0
    a, b = weights(straight), weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_ctrl_c_stop_at_once_and_leave_a_directory_both_ways_accept(small_corpus, tmp_path):
    out = tmp_path / "run"
    slow = command(small_corpus, out, "--batch-size", "2048")  # steps of a few hundred ms
    process = subprocess.Popen(slow, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    wait_for_step(out, 5, process)
    process.send_signal(signal.SIGINT)
    first = "Ctrl-C again to stop at once"
    seen = until_stderr_says(process, first)
    assert first in seen, seen  # the second arrives once the first is handled
    process.send_signal(signal.SIGINT)
    err = seen + process.communicate(timeout=120)[1]
    assert process.returncode == 130 and "stopped at once" in err, err
    assert "Resume from the last checkpoint with:" in err and "--resume" in err, err
    assert not list_checkpoints(out)
    for path in out.glob("*.json"):
        json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(c))
    fresh = subprocess.run(command(small_corpus, out, "--steps", "3"), env=ENV,
                           capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr  # a fresh start replaces the unfinished run
    killed = tmp_path / "run2"
    process = subprocess.Popen(command(small_corpus, killed), env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_step(killed, 5, process)
    process.kill()
    process.wait()
    resumed = finish(small_corpus, killed)
    assert resumed.returncode == 0 and "starting from step 0" in resumed.stderr


def test_resuming_a_finished_run_changes_nothing(small_corpus, straight):
    before = {p.name: p.read_bytes() for p in straight.iterdir() if p.is_file()}
    done = finish(small_corpus, straight)
    assert done.returncode == 0 and "nothing to do" in done.stdout, done.stderr
    assert {p.name: p.read_bytes() for p in straight.iterdir() if p.is_file()} == before
    record = json.loads((straight / "run.json").read_text(),
                        parse_constant=lambda c: pytest.fail(f"{c} in run.json"))
    assert record["complete"] and isinstance(record["val_loss"], float)
    again = subprocess.run(command(small_corpus, straight), env=ENV, capture_output=True,
                           text=True)
    assert again.returncode == 2 and "already holds a run" in again.stderr


def test_files_follow_the_umask(small_corpus, straight):
    mask = os.umask(0)
    os.umask(mask)
    for name in ("run.json", "config.json", "model.safetensors", "tokenizer.json"):
        assert (straight / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_corpus_build_keeps_its_work_says_so_and_resumes(tmp_path, signum):
    from conftest import write_text_tree

    from solulab.data import is_corpus
    from solulab.data.build import partial_dir

    source = write_text_tree(tmp_path / "text", n_docs=2000, words_per_doc=3000)
    out = tmp_path / "corpus"
    build = [sys.executable, "-m", "solulab.cli", "corpus", "build", "--out", str(out),
             "--source", str(source), "--vocab-size", "2000"]
    process = subprocess.Popen(build, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 120
    while not (partial_dir(out) / "tokenizer.json").is_file() and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, err
    assert (f"interrupted: nothing was written to {out}; the work done so far is kept in "
            f"{partial_dir(out)}: run the same command again to resume") in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".corpus.partial", "text"]
    again = subprocess.run(build, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"resuming the build kept in {partial_dir(out)}" in again.stderr
    assert is_corpus(out) and sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "text"]


INSTALLED = Path(sys.prefix) / "bin" / "solulab"


def until_stderr_says(process: subprocess.Popen, text: str, timeout: float = 120) -> str:
    """Read the process's stderr until ``text`` appears (progress bars print it)."""
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        chunk = os.read(process.stderr.fileno(), 4096).decode(errors="replace")
        assert chunk, f"the command ended before saying {text!r}: {seen[-2000:]}"
        seen += chunk
    return seen


@pytest.mark.skipif(not INSTALLED.is_file(), reason="solulab is not installed in this Python")
def test_sigterm_stops_the_installed_command_cleanly(small_corpus, tmp_path):
    """The ``solulab`` entry point (not ``python -m``) turns a cluster's SIGTERM into the
    one-line report and exit 143 during a corpus build and a neuron collection."""
    from conftest import write_text_tree
    from test_neurons import make_run

    source = write_text_tree(tmp_path / "text", n_docs=1500, words_per_doc=3000)
    build = subprocess.Popen([INSTALLED, "corpus", "build", "--out", tmp_path / "corpus",
                              "--source", source, "--vocab-size", "2000"], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    until_stderr_says(build, "encoding")
    build.send_signal(signal.SIGTERM)
    _, err = build.communicate(timeout=60)
    assert build.returncode == 143 and b"interrupted: nothing was written to" in err, err[-500:]

    run = make_run(tmp_path / "run", small_corpus, "solu_ln", n_layers=2, d_mlp=1024)
    collect = subprocess.Popen([INSTALLED, "neurons", "collect", run, "--tokens", "10000000",
                                "--batch-size", "1"], env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    until_stderr_says(collect, "collecting")
    collect.send_signal(signal.SIGTERM)
    _, err = collect.communicate(timeout=60)
    assert collect.returncode == 143, err[-500:]
    assert b"interrupted: no neuron store was written" in err
    assert not (run / "neurons").exists()
