"""Corpus builds in parallel and resumed: the same bytes whatever the number of encoding
processes and however often the build stopped; finished chunks are not encoded again; work of
other sources or settings is not reused."""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_text_tree

from solulab.data import CorpusError, build_corpus
from solulab.data import build as build_module
from solulab.data.build import CHUNKS_DIR, partial_dir

HERE = Path(__file__).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
DOCS = 30
CHUNK_DOCS = 4  # so 30 documents make 8 chunks
N_CHUNKS = 8


class Stop(KeyboardInterrupt):
    """What Ctrl-C raises, injected after a number of chunks."""


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_text_tree(tmp_path_factory.mktemp("src") / "text", n_docs=DOCS,
                           words_per_doc=300)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(build_module, "CHUNK_DOCS", CHUNK_DOCS)


def build(out: Path, source: Path, **kw):
    kw = dict(vocab_size=300, val_fraction=0.2, progress=False, workers=1) | kw
    return build_corpus(out, sources=[source], **kw)


def contents(corpus: Path) -> dict[str, bytes]:
    """Every file's bytes; the manifest without its timestamp."""
    files = {p.name: p.read_bytes() for p in sorted(corpus.iterdir())}
    manifest = json.loads(files["manifest.json"])
    assert manifest.pop("created")
    files["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    return files


@pytest.fixture(scope="module")
def straight(source, tmp_path_factory) -> dict[str, bytes]:
    """An uninterrupted build in this process, one chunk of default size."""
    out = tmp_path_factory.mktemp("straight") / "corpus"
    build(out, source)
    return contents(out)


def encoded_chunks(monkeypatch, stop_after: int | None = None) -> list[str]:
    """Record the chunk files encoded in this process; raise ``Stop`` after ``stop_after``."""
    encoded: list[str] = []
    real = build_module._encode_chunk

    def encode(tokenizer, path, chunk, dtype):
        if stop_after is not None and len(encoded) == stop_after:
            raise Stop
        real(tokenizer, path, chunk, dtype)
        encoded.append(path.name)

    monkeypatch.setattr(build_module, "_encode_chunk", encode)
    return encoded


def trainings(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = build_module.train_tokenizer

    def train(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(build_module, "train_tokenizer", train)
    return calls


def test_two_workers_build_the_same_bytes_as_one(source, straight, tmp_path, monkeypatch):
    encoded = encoded_chunks(monkeypatch)  # in this process only: workers=2 encodes elsewhere
    build(tmp_path / "two", source, workers=2)
    assert encoded == []
    assert contents(tmp_path / "two") == straight
    build(tmp_path / "one", source, workers=1)
    assert len(encoded) == N_CHUNKS
    assert contents(tmp_path / "one") == straight
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]


def test_a_stopped_build_resumes_without_encoding_finished_chunks_again(
        source, straight, tmp_path, monkeypatch, capsys):
    out = tmp_path / "corpus"
    with monkeypatch.context() as m:
        encoded_chunks(m, stop_after=3)
        with pytest.raises(Stop):
            build(out, source)
    assert not out.exists()
    chunks = partial_dir(out) / CHUNKS_DIR
    kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            for p in chunks.iterdir()}
    assert sorted(kept) == ["000000.bin", "000001.bin", "000002.bin"]

    with monkeypatch.context() as m:  # stopped again; the kept tokenizer is not trained again
        encoded = encoded_chunks(m, stop_after=2)
        trained = trainings(m)
        with pytest.raises(Stop):
            build(out, source)
    assert encoded == ["000003.bin", "000004.bin"] and trained == []
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            for p in chunks.iterdir() if p.name in kept} == kept

    capsys.readouterr()
    encoded, trained = encoded_chunks(monkeypatch), trainings(monkeypatch)
    build(out, source, progress=True)
    assert encoded == ["000005.bin", "000006.bin", "000007.bin"] and trained == []
    assert "resuming the build kept in" in capsys.readouterr().err
    assert contents(out) == straight
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


def test_a_killed_parallel_build_resumes(source, straight, tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    # The child builds 30 one-document chunks in 2 processes, handing out one each 50 ms.
    child = ("import sys, time\n"
             "from solulab.data import build as corpus\n"
             "corpus.CHUNK_DOCS = 1\n"
             "real = corpus._chunks\n"
             "def slow(docs, plan):\n"
             "    for chunk in real(docs, plan):\n"
             "        time.sleep(0.05)\n"
             "        yield chunk\n"
             "corpus._chunks = slow\n"
             "from solulab.cli import app\n"
             "app(sys.argv[1:])\n")
    process = subprocess.Popen(
        [sys.executable, "-c", child, "corpus", "build", "--out", str(out), "--source",
         str(source), "--vocab-size", "300", "--val-fraction", "0.2", "--workers", "2"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    chunks = partial_dir(out) / CHUNKS_DIR
    deadline = time.monotonic() + 60
    while not list(chunks.glob("*.bin")) and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, err
    assert not out.exists()
    finished = sorted(p.name for p in chunks.glob("*.bin"))
    assert 1 <= len(finished) < DOCS

    monkeypatch.setattr(build_module, "CHUNK_DOCS", 1)
    encoded, trained = encoded_chunks(monkeypatch), trainings(monkeypatch)
    build(out, source)
    assert trained == [] and len(encoded) == DOCS - len(finished)
    assert not set(encoded) & set(finished)
    assert contents(out) == straight


def test_other_settings_start_clean(source, straight, tmp_path, monkeypatch, capsys):
    out = tmp_path / "corpus"
    with monkeypatch.context() as m:
        encoded_chunks(m, stop_after=5)
        with pytest.raises(Stop):
            build(out, source)
    assert len(list((partial_dir(out) / CHUNKS_DIR).iterdir())) == 5

    capsys.readouterr()
    encoded, trained = encoded_chunks(monkeypatch), trainings(monkeypatch)
    build(out, source, vocab_size=280, progress=True)
    assert len(encoded) == N_CHUNKS and trained == [1]
    err = capsys.readouterr().err
    assert "holds a partial build of other sources or settings (differs in: settings)" in err
    assert "starting clean" in err
    build(tmp_path / "fresh", source, vocab_size=280)
    assert contents(out) == contents(tmp_path / "fresh")

    # Other documents under the same names and settings: the content digest differs.
    mine = tmp_path / "mine"
    shutil.copytree(source, mine)
    with monkeypatch.context() as m:
        encoded_chunks(m, stop_after=2)
        with pytest.raises(Stop):
            build(tmp_path / "c2", mine)
    write_text_tree(mine, n_docs=DOCS, words_per_doc=300, seed=1)
    encoded.clear()
    build(tmp_path / "c2", mine, progress=True)
    assert len(encoded) == N_CHUNKS
    assert "(differs in: counts, content); starting clean" in capsys.readouterr().err
    build(tmp_path / "c3", mine)
    assert contents(tmp_path / "c2") == contents(tmp_path / "c3")


def test_a_damaged_source_is_named_and_its_partial_work_removed(source, tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("some text to read first\n")
    (src / "b.jsonl.gz").write_bytes(gzip.compress(b'{"text": "x"}\n' * 500)[:60])
    with pytest.raises(CorpusError, match=r"cannot read .*b\.jsonl\.gz"):
        build(tmp_path / "out", src, workers=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]

    # Damaged after the scan, during tokenizer training: the same error, nothing kept.
    real = build_module.train_tokenizer

    def damage_then_train(texts, *args, **kwargs):
        (src / "a.txt").write_bytes(b"\x00binary now")
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(build_module, "train_tokenizer", damage_then_train)
    (src / "b.jsonl.gz").unlink()
    with pytest.raises(CorpusError, match="sources changed"):
        build(tmp_path / "out", src, workers=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_a_build_already_running_is_refused(source, tmp_path):
    import fcntl

    out = tmp_path / "corpus"
    partial_dir(out).mkdir()
    fd = os.open(partial_dir(out), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(CorpusError, match="another build of .*corpus is running"):
            build(out, source)
    finally:
        os.close(fd)
    assert not out.exists()
