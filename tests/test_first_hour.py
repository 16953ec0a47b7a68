"""What a new user meets in their first hour: the demo's printed next steps run as printed in a
fresh shell, servers that do not collide, and one clean line (no traceback, nothing created)
for each mistake a newcomer makes."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from solulab.autointerp.run import load_explanations
from solulab.pipelines.demo import DemoSettings, run_demo

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "solulab.cli", *map(str, args)], env=ENV,
                          capture_output=True, text=True, **kwargs)


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit status 2 and one ``error:`` line saying ``words`` (progress bars may precede it)."""
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in errors[0], result.stderr


def next_steps(printed: str) -> tuple[str, list[str]]:
    """The activation line and the commands of the demo's closing lines, as printed."""
    activate, commands = "", []
    for line in printed.splitlines():
        text = line.split("#")[0].strip()
        if line.startswith("first, in each new shell:"):
            activate = text.split(":", 1)[1].strip()
        elif ":" in text and text.split(":", 1)[1].strip().startswith("solulab "):
            commands.append(text.split(":", 1)[1].strip())
        elif text.startswith("solulab "):
            commands.append(text)
    return activate, commands


def fresh_shell(activate: str, command: str, **kwargs):
    """``command`` in bash with only the system's PATH, after the printed activation line."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(["bash", "-c", f"{activate} && exec {command}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(url: str, process) -> httpx.Response:
    for _ in range(300):
        assert process.poll() is None, process.communicate()
        try:
            return httpx.get(url, timeout=1)
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="the printed activation line is for "
                    "the virtual environment the README's commands make")
def test_the_demos_next_steps_work_as_printed_in_a_fresh_shell(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SOLULAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)  # as after `make demo`: nothing activated
    monkeypatch.chdir(ROOT)
    settings = DemoSettings(sizes=("1x32", "1x64", "1x96"), steps=24, batch_size=4, n_ctx=64,
                            eval_items=12, corpus_max_bytes=400_000, neuron_tokens=2048)
    report = run_demo(tmp_path / "demo", settings, progress=False)
    activate, commands = next_steps(capsys.readouterr().out)
    assert activate == f"source {Path(sys.prefix).relative_to(ROOT)}/bin/activate"
    show, viewer, create, study = commands
    # The suggested neuron is one the verdict explains, and the report points to it too.
    layer, neuron = int(show.split("--layer ")[1].split()[0]), int(show.split("--neuron ")[1])
    explanations = load_explanations(tmp_path / "demo" / "sweep" / "1x96" / "solu_ln" / "neurons")
    assert explanations[(layer, neuron)]["interpretable"]
    page = report.read_text()
    assert "What this report shows" in page and "cannot test the paper's claim" in page
    assert f"layer {layer}, neuron {neuron}" in page and "docs/replication.md" in page
    assert "The 95% interval column is empty" in page

    shown = fresh_shell(activate, show)
    out, err = shown.communicate(timeout=120)
    assert shown.returncode == 0 and f"neuron {neuron}" in out, err
    created = fresh_shell(activate, create)
    printed, err = created.communicate(timeout=120)
    assert created.returncode == 0, err
    link = printed.split("you: ", 1)[1].split()[0]
    assert f"{study.split('#')[0].strip()}   # the links below point there" in printed
    servers = [fresh_shell(activate, viewer), fresh_shell(activate, study)]
    try:
        assert wait_for("http://127.0.0.1:8000/", servers[0]).status_code == 200
        root = wait_for("http://127.0.0.1:8001/", servers[1])
        assert root.status_code == 200 and "link you were given" in root.text
        page = httpx.get(link, timeout=10)  # the annotator's link reaches the study server
        assert link.startswith("http://127.0.0.1:8001/") and page.status_code == 200
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)


def test_a_busy_port_is_one_line_naming_port(collected_runs):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("serve", "--runs", collected_runs, "--port", port, timeout=60)
    one_line_error(result, "--port", str(port))
    assert "http://" not in result.stdout  # nothing claims to be running


def test_files_that_are_not_what_a_command_needs_are_one_line_and_create_nothing(
        small_corpus, tmp_path):
    manifest = small_corpus / "manifest.json"
    before = sorted(p.name for p in small_corpus.iterdir())
    one_line_error(cli("study", "report", manifest), "not a solulab study")
    one_line_error(cli("serve", "--study", manifest), "not a solulab study")
    one_line_error(cli("train", "--corpus", small_corpus, "--act", "gelu", "--size", "1x128",
                       "--steps", "2", "--out", manifest), "is a file")
    assert sorted(p.name for p in small_corpus.iterdir()) == before


def test_resuming_a_finished_run_to_another_length_is_refused_by_name(small_corpus, tmp_path):
    args = ["train", "--corpus", small_corpus, "--act", "gelu", "--n-layers", "1", "--d-model",
            "32", "--n-heads", "2", "--n-ctx", "32", "--batch-size", "4", "--device", "cpu",
            "--out", tmp_path / "run"]
    assert cli(*args, "--steps", "3", timeout=300).returncode == 0
    weights = (tmp_path / "run" / "model.safetensors").read_bytes()
    one_line_error(cli(*args, "--steps", "6", "--resume", timeout=300), "finished at 3 steps",
                   "asks for 6 steps", "another --out")
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == weights
    assert cli(*args, "--steps", "3", "--resume", timeout=300).returncode == 0


def test_a_pattern_that_never_matches_is_one_line_not_nan(collected_runs):
    result = cli("regex", collected_runs / "solu_ln", "--pattern", "^zzzqqq$", "--tokens", "512")
    one_line_error(result, "matches none of the")
    assert "nan" not in result.stdout


def test_a_study_without_ratings_says_so(collected_runs, tmp_path):
    study = tmp_path / "study.sqlite"
    assert cli("study", "create", "--model", f"a={collected_runs / 'gelu'}", "--out", study,
               "--neurons-per-model", "4").returncode == 0
    result = cli("study", "report", study)
    assert result.returncode == 0 and "no ratings yet" in result.stdout
    assert "nan" not in result.stdout


def test_a_folder_without_usable_files_names_every_reason(tmp_path):
    source = tmp_path / "texts"
    source.mkdir()
    (source / "notes.md").write_text("   \n")
    (source / "dump.txt").write_bytes(b"\x00binary")
    (source / "data.bin").write_bytes(b"x")
    result = cli("corpus", "build", "--out", tmp_path / "corpus", "--source", source)
    one_line_error(result, "1 empty or whitespace only", "1 binary", ".bin 1")
    assert not (tmp_path / "corpus").exists()


def test_the_readme_says_how_to_reach_solulab_and_its_example_makes_its_tokens():
    assert "solulab-demo/" in (ROOT / ".gitignore").read_text().split()
    readme = (ROOT / "README.md").read_text()
    assert "docs/replication.md" in readme and "source .venv/bin/activate" in readme
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert "tokens = " in example.split("run_with_cache(tokens")[0]


HELP_IMPORTS = """
import sys
import typer.main
from solulab.cli import app, main

def commands(command, path):
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, path + [name])

for path in commands(typer.main.get_command(app), []):
    sys.argv = ["solulab", *path, "--help"]
    try:
        main()
    except SystemExit as stop:
        assert stop.code in (0, None), path
print(len(list(commands(typer.main.get_command(app), []))),
      sorted(m for m in ("torch", "numpy", "matplotlib", "uvicorn") if m in sys.modules))
"""


def test_every_help_starts_without_loading_torch():
    """``--help`` of every command, through the entry point's ``main()``, imports no torch,
    numpy, plotting or server: what makes it start in well under a second."""
    result = subprocess.run([sys.executable, "-c", HELP_IMPORTS], env=ENV, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    count, loaded = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert int(count) >= 20 and loaded == "[]", result.stdout[-500:]
