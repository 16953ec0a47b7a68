"""The README's tour (all but the servers, torchrun and the TransformerLens round trip), run
twice in a row at a tiny size: the second run changes no file (or, where a command creates
something once, refuses with one clear line and changes nothing)."""

import hashlib
from pathlib import Path

from conftest import write_text_tree
from typer.testing import CliRunner

from solulab.cli import app


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_tour_command_is_safe_to_run_twice(tmp_path, monkeypatch):
    monkeypatch.setenv("SOLULAB_CACHE", str(tmp_path / "cache"))
    source = write_text_tree(tmp_path / "text", n_docs=40, words_per_doc=300)
    work = tmp_path / "work"
    corpus, sweep = work / "corpus", work / "sweep"
    run = sweep / "1x32" / "solu_ln"
    tour = [
        ["corpus", "build", "--out", corpus, "--source", source, "--vocab-size", "300"],
        ["sweep", "--corpus", corpus, "--sizes", "1x32", "--acts", "gelu,solu_ln", "--steps",
         "6", "--n-ctx", "32", "--batch-size", "4", "--eval-every", "3", "--device", "cpu",
         "--out", sweep],
        ["train", "--corpus", corpus, "--act", "solu_ln", "--n-layers", "1", "--d-model", "32",
         "--n-heads", "2", "--n-ctx", "32", "--steps", "4", "--device", "cpu", "--out",
         work / "runs" / "solu_ln"],
        ["train", "--corpus", corpus, "--act", "solu_ln", "--n-layers", "1", "--d-model", "32",
         "--n-heads", "2", "--n-ctx", "32", "--steps", "4", "--device", "cpu", "--out",
         work / "runs" / "solu_ln", "--resume"],
        ["compare", sweep],
        ["eval", run, "--tasks", "arithmetic", "--n", "8"],
        ["neurons", "collect", run, "--tokens", "1024", "--device", "cpu"],
        ["autointerp", run, "--tokens", "1024"],
        ["neurons", "collect", sweep / "1x32" / "gelu", "--tokens", "1024", "--device", "cpu"],
        ["autointerp", sweep / "1x32" / "gelu", "--tokens", "1024"],
        ["neurons", "show", run, "--layer", "0", "--neuron", "1"],
        ["neurons", "trace", run, "the value of", "--layer", "0", "--neuron", "1"],
        ["regex", run, "--pattern", "^ ?[a-z]+$", "--tokens", "1024"],
        ["study", "create", "--model", f"a={run}", "--neurons-per-model", "4", "--out",
         work / "study.sqlite"],
        ["study", "report", work / "study.sqlite"],
        ["autointerp", "compare", sweep / "1x32" / "gelu", run],
        ["report", sweep],
    ]
    runner = CliRunner()
    first = []
    for args in tour:
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, (args, result.output)
        first.append(result.output)
    before = snapshot(work)
    for args, output in zip(tour, first):
        result = runner.invoke(app, [str(a) for a in args])
        if args[:2] in (["corpus", "build"], ["study", "create"]) or (
                args[0] == "train" and "--resume" not in args):
            assert result.exit_code == 2, result.output
            assert "exists" in result.output or "already holds" in result.output
            assert result.output.count("\n") == 1
        else:
            assert result.exit_code == 0, (args, result.output)
    assert snapshot(work) == before
