"""Corpus building and reading: counts, splits, shards, the tokenizer, and refusals."""

import hashlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_text_tree

from solulab.data import EOT_ID, Corpus, CorpusError, Manifest, TokenArray, build_corpus, is_corpus
from solulab.data import build as build_module
from solulab.data.shards import ShardWriter, token_dtype

VOCAB = 400
VAL_FRACTION = 0.25
WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there been one all we their has would when "
         "café naïve façade Ωμέγα λόγος 東京 日本語 данные привет 🙂 🚀 ½ → ≤ ∑").split()
CODE = [
    "def {name}(x, y=None):\n    return [i * 2 for i in range(x) if i % 3]\n",
    "class {Name}(Base):\n    \"\"\"Docstring.\"\"\"\n\n"
    "    def __init__(self):\n        self.{name} = {{}}\n",
    "for {name} in items:\n\tif {name} is not None:\n\t\tprint(f\"{{{name}!r}}\")\r\n",
    "import os, sys  # comment with ünïcödé\nPATH = '/tmp/{name}'\n",
]

# Non-document files of the tree, and what reading it must report.
BAD_UTF8 = b"caf\xc3 ok \xff\xfe end; a real \xef\xbf\xbd stays\n"  # 3 replacements, 1 genuine
JSONL_LINES = [
    json.dumps({"text": "first json record: hello world"}),
    "",
    json.dumps({"text": "second record with unicode 東京 and \\ escapes\n", "id": 2}),
    json.dumps({"text": "   \n\t "}),
    '{"text": "lone surrogate \\ud800 here"}',
    json.dumps({"text": "third record"}),
]
PARQUET_TEXTS = ["parquet row one", None, "parquet row two\nwith two lines", "", "row four ½"]
EXPECTED_COUNTS = dict(
    skipped_empty=5,  # empty.txt, blank.md, one jsonl record, two parquet rows
    skipped_binary=1,
    skipped_unsupported=1,
    files_with_replacements=2,  # bad.txt and the jsonl surrogate
    replacement_chars=4,
)
N_GENERATED = 16


def _generated_text(rng: random.Random, n_bytes: int) -> str:
    parts: list[str] = []
    size = 0
    while size < n_bytes:
        if rng.random() < 0.2:
            name = rng.choice(["alpha", "beta", "gamma", "value", "count"])
            part = rng.choice(CODE).format(name=name, Name=name.title())
        else:
            part = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20))) + ".\n"
        parts.append(part)
        size += len(part.encode())
    return "".join(parts)


def write_source_tree(root: Path, seed: int = 0, names=None) -> list[str]:
    """Write the test sources under ``root``; returns the texts of the documents they hold."""
    rng = random.Random(seed)
    suffixes = [".txt", ".md", ".py"]  # read verbatim (.rst and .html: test_markup.py)
    docs = []
    for i in range(N_GENERATED):
        name = names[i] if names else f"doc_{i:02d}{suffixes[i % len(suffixes)]}"
        path = root / ("sub" if i % 3 == 0 else "") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = _generated_text(rng, 6000)
        path.write_bytes(text.encode())
        docs.append(text)
    (root / "binary.txt").write_bytes(b"text then \x00\x01\x02 binary" * 10)
    (root / "empty.txt").write_bytes(b"")
    (root / "blank.md").write_text("  \n\n\t  \n")
    (root / "bad.txt").write_bytes(BAD_UTF8)
    docs.append(BAD_UTF8.decode("utf-8", errors="replace"))
    (root / "records.jsonl").write_text("\n".join(JSONL_LINES) + "\n")
    docs += ["first json record: hello world", "second record with unicode 東京 and \\ escapes\n",
             "lone surrogate \ufffd here", "third record"]
    pq.write_table(pa.table({"text": PARQUET_TEXTS, "n": list(range(len(PARQUET_TEXTS)))}),
                   root / "rows.parquet", row_group_size=2)
    docs += [t for t in PARQUET_TEXTS if t]
    (root / "weights.bin").write_bytes(b"\x00" * 64)
    (root / ".hidden.txt").write_text("dotfiles are not read")
    return docs


def tree_root(built) -> Path:
    return Path(built[1].sources[0])


def split_documents(corpus: Corpus, split: str) -> list[str]:
    """The documents of a split, decoded back from its tokens."""
    tokens = np.asarray(corpus.tokens(split))
    ends = np.flatnonzero(tokens == corpus.eot_id)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [corpus.decode(tokens[a:b].tolist()) for a, b in zip(starts, ends)]


def build(out: Path, sources, **kw) -> Manifest:
    kw = dict(vocab_size=VOCAB, val_fraction=VAL_FRACTION, progress=False) | kw
    return build_corpus(out, sources=sources, **kw)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    return root, write_source_tree(root)


@pytest.fixture(scope="module")
def built(tree, tmp_path_factory):
    root, docs = tree
    out = tmp_path_factory.mktemp("built") / "corpus"
    manifest = build(out, [root])
    return out, manifest, docs


def test_counts_report_what_was_read_and_skipped(tree, built):
    out, manifest, docs = built
    counts = manifest.counts
    assert counts.documents == len(docs) == N_GENERATED + 1 + 4 + 3
    for name, value in EXPECTED_COUNTS.items():
        assert getattr(counts, name) == value, name
    assert counts.bytes == sum(len(d.encode()) for d in docs)
    splits = manifest.splits
    assert splits["train"].documents + splits["val"].documents == len(docs)
    assert splits["train"].documents > 0 and splits["val"].documents > 0
    on_disk = json.loads((out / "manifest.json").read_text())
    assert set(on_disk) >= {"format_version", "dtype", "vocab_size", "eot_id", "tokenizer_sha256",
                            "splits", "sources", "counts", "created", "total_tokens"}
    assert Manifest.from_json((out / "manifest.json").read_text()) == manifest
    assert manifest.sources == [str(tree[0])]
    assert "tokens" in manifest.summary()


def test_documents_come_back_exactly_and_tokens_match_an_independent_count(built):
    out, manifest, docs = built
    corpus = Corpus(out)
    assert sorted(split_documents(corpus, "train") + split_documents(corpus, "val")) == sorted(docs)
    expected = sum(len(corpus.tokenizer.encode(d).ids) + 1 for d in docs)
    assert manifest.total_tokens == expected
    assert len(corpus.tokens("train")) + len(corpus.tokens("val")) == expected
    assert manifest.vocab_size == corpus.vocab_size == corpus.tokenizer.get_vocab_size() <= VOCAB
    assert corpus.eot_id == EOT_ID == corpus.tokenizer.token_to_id("<|endoftext|>") == 0


@pytest.mark.parametrize("text", [
    "plain ascii text.",
    "  leading and trailing spaces  \n\n",
    "unicode: café Ωμέγα 東京 привет 🙂🚀 \u200b zero-width, combining e\u0301",
    "def f(x):\n\treturn {'a': [1, 2]}  # code\r\n",
    "bytes the corpus never saw: \x00\x7f ǅ 𝔘𝔫𝔦 \ufffd",
    "a literal <|endoftext|> is just text",
])
def test_tokenizer_round_trips_text_exactly(built, text):
    corpus = Corpus(built[0])
    ids = corpus.encode(text)
    assert corpus.decode(ids) == text
    assert EOT_ID not in ids


def test_shard_files_match_the_manifest(built):
    out, manifest, _ = built
    itemsize = np.dtype(manifest.dtype).itemsize
    assert manifest.dtype == "uint16"
    for name, split in manifest.splits.items():
        assert [s.file for s in split.shards] == [f"{name}_000.bin"]
        assert sum(s.tokens for s in split.shards) == split.tokens
        for shard in split.shards:
            assert (out / shard.file).stat().st_size == shard.tokens * itemsize
    digest = hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest()
    assert manifest.tokenizer_sha256 == digest
    assert Corpus(out).tokenizer_sha256 == manifest.tokenizer_sha256


def test_a_build_is_deterministic(built, tmp_path):
    out, manifest, _ = built
    again = tmp_path / "again"
    manifest2 = build(again, [tree_root(built)])
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(p.name for p in again.iterdir())
    for name in files:
        if name != "manifest.json":
            assert (out / name).read_bytes() == (again / name).read_bytes(), name
    manifest2.created = manifest.created
    assert manifest2 == manifest


def test_the_split_follows_content_not_names_or_order(built, tmp_path):
    out, manifest, docs = built
    # The same documents under other names, so they are read in the reverse order.
    renamed = [f"{N_GENERATED - i:02d}_renamed.txt" for i in range(N_GENERATED)]
    root = tmp_path / "renamed"
    assert write_source_tree(root, names=renamed) == docs
    other = build(tmp_path / "other", [root])
    assert other.splits["val"].documents == manifest.splits["val"].documents
    val = split_documents(Corpus(out), "val")
    assert sorted(split_documents(Corpus(tmp_path / "other"), "val")) == sorted(val)
    # The rule itself: blake2b of the UTF-8 text, as a fraction of 2**64.
    by_hash = [d for d in docs
               if int.from_bytes(hashlib.blake2b(d.encode(), digest_size=8).digest(), "big")
               / 2**64 < VAL_FRACTION]
    assert sorted(by_hash) == sorted(val)


@pytest.mark.parametrize("val_fraction", [1e-12, 1 - 1e-12])
def test_both_splits_are_kept_non_empty(tmp_path, val_fraction):
    texts = ["first document " * 20, "second document " * 20, "third document " * 20]
    for i, text in enumerate(texts):
        (tmp_path / f"{i}.txt").write_text(text)
    manifest = build(tmp_path / "out", [tmp_path], val_fraction=val_fraction, vocab_size=260)
    assert manifest.splits["val"].documents == (1 if val_fraction < 0.5 else 2)
    assert manifest.splits["train"].documents == 3 - manifest.splits["val"].documents
    hashes = {t: hashlib.blake2b(t.encode(), digest_size=8).digest() for t in texts}
    moved = min(texts, key=hashes.get) if val_fraction < 0.5 else max(texts, key=hashes.get)
    split = "val" if val_fraction < 0.5 else "train"
    assert split_documents(Corpus(tmp_path / "out"), split) == [moved]


def test_a_single_document_goes_to_train(tmp_path):
    (tmp_path / "only.md").write_text("just one document here " * 10)
    manifest = build(tmp_path / "out", [tmp_path / "only.md"], vocab_size=270)
    assert (manifest.splits["train"].documents, manifest.splits["val"].documents) == (1, 0)
    assert len(Corpus(tmp_path / "out").tokens("val")) == 0


def test_token_array_slices_across_shard_boundaries(built, tmp_path):
    out, manifest, _ = built
    small = tmp_path / "small_shards"
    build(small, [tree_root(built)], shard_tokens=1000)
    train = manifest.splits["train"].tokens
    shards = Manifest.from_json((small / "manifest.json").read_text()).splits["train"].shards
    assert [s.file for s in shards] == [f"train_{i:03d}.bin" for i in range(-(-train // 1000))]
    assert [s.tokens for s in shards[:-1]] == [1000] * (len(shards) - 1)

    whole = Corpus(out).tokens("train")
    pieces = Corpus(small).tokens("train")
    reference = np.concatenate([np.fromfile(small / s.file, dtype="<u2") for s in shards])
    assert len(pieces) == len(whole) == len(reference) == train
    assert np.array_equal(np.asarray(pieces), np.asarray(whole))
    rng = np.random.default_rng(0)
    cases = [(999, 1001), (0, 1000), (1000, 2000), (500, 3500), (0, train), (train - 5, train),
             (7, 7), (10, 3), (-1500, -10), (None, None)]
    cases += [tuple(sorted(rng.integers(0, train, 2))) for _ in range(20)]
    for a, b in cases:
        got = pieces[a:b]
        assert got.dtype == np.int64
        assert np.array_equal(got, reference[a:b].astype(np.int64)), (a, b)
    assert pieces[1000] == reference[1000] and pieces[-1] == reference[-1]
    with pytest.raises(IndexError):
        pieces[train]
    with pytest.raises(ValueError):
        pieces[::2]


def test_shard_writer_picks_uint32_above_65536_tokens(tmp_path):
    assert token_dtype(65536) == np.dtype("<u2") and token_dtype(65537) == np.dtype("<u4")
    ids = np.array([0, 65535, 65536, 69999, 5], dtype=np.int64)
    with ShardWriter(tmp_path, "train", vocab_size=70000, shard_tokens=2) as writer:
        writer.write(ids[:3])
        writer.write(ids[3:])
        shards = writer.close()
    assert [(s.file, s.tokens) for s in shards] == [
        ("train_000.bin", 2), ("train_001.bin", 2), ("train_002.bin", 1)]
    assert [(tmp_path / s.file).stat().st_size for s in shards] == [8, 8, 4]
    assert (tmp_path / "train_001.bin").read_bytes() == np.array([65536, 69999], "<u4").tobytes()
    tokens = TokenArray.from_files([tmp_path / s.file for s in shards], np.dtype("<u4"))
    assert np.array_equal(tokens[:], ids)
    with ShardWriter(tmp_path, "val", vocab_size=70000) as writer, pytest.raises(ValueError):
        writer.write(np.array([70000]))


def test_a_missing_source_is_named(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(CorpusError, match="source not found: .*no_such_dir"):
        build(tmp_path / "out", [missing])
    assert not (tmp_path / "out").exists()


def test_no_documents_is_an_error(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "empty.txt").write_text("")
    (src / "blank.rst").write_text(" \n ")
    (src / "binary.md").write_bytes(b"\x00\x00")
    (src / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(CorpusError, match="no documents found in .*src"):
        build(tmp_path / "out", [src])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_bad_inputs_are_corpus_errors(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2"):
        build(tmp_path / "out", [tmp_path / "bad.jsonl"])
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "no_text.parquet")
    with pytest.raises(CorpusError, match="no 'text' column"):
        build(tmp_path / "out", [tmp_path / "no_text.parquet"])
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(CorpusError, match="unsupported source file"):
        build(tmp_path / "out", [tmp_path / "table.csv"])
    with pytest.raises(CorpusError, match="vocab_size must be at least 257"):
        build(tmp_path / "out", [tmp_path / "bad.jsonl"], vocab_size=100)
    assert not (tmp_path / "out").exists()


def test_an_existing_corpus_is_not_overwritten(built, tmp_path):
    out = built[0]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert is_corpus(out)
    with pytest.raises(CorpusError, match="already holds a corpus"):
        build(out, [tree_root(built)])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    assert not is_corpus(occupied)
    with pytest.raises(CorpusError, match="not an empty directory"):
        build(occupied, [tree_root(built)])
    assert [p.name for p in occupied.iterdir()] == ["notes.txt"]

    empty = tmp_path / "empty"
    empty.mkdir()
    build(empty, [tree_root(built)])
    assert is_corpus(empty)


def test_opening_a_damaged_corpus_says_what_is_wrong(built, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(built[0], damaged)
    with open(damaged / "train_000.bin", "r+b") as f:
        f.truncate((damaged / "train_000.bin").stat().st_size - 2)
    with pytest.raises(CorpusError, match="train_000.bin is .* bytes; the manifest expects"):
        Corpus(damaged)
    (damaged / "tokenizer.json").unlink()
    with pytest.raises(CorpusError, match="has no tokenizer.json"):
        Corpus(damaged)
    (damaged / "manifest.json").unlink()
    with pytest.raises(CorpusError, match="is not a corpus: no manifest.json"):
        Corpus(damaged)
    with pytest.raises(CorpusError, match="unknown split 'test'"):
        Corpus(built[0]).tokens("test")


def test_the_builtin_corpus_is_the_standard_library(tmp_path):
    manifest = build_corpus(tmp_path / "builtin", vocab_size=300, max_bytes=200_000,
                            progress=False)
    assert manifest.sources[0].startswith("builtin:stdlib 3.")
    assert 200_000 <= manifest.counts.bytes < 200_000 + 2_000_000
    assert manifest.splits["train"].documents >= 1 and manifest.splits["val"].documents >= 1
    corpus = Corpus(tmp_path / "builtin")
    first = split_documents(corpus, "train")[0]
    assert corpus.decode(corpus.encode(first)) == first
    assert "import" in first or "def " in first


def test_sources_changing_during_a_build_are_caught(built, tmp_path, monkeypatch):
    root = tmp_path / "src"
    shutil.copytree(tree_root(built), root)
    real = build_module.train_tokenizer

    def edit_then_train(texts, *args, **kwargs):
        with open(root / "bad.txt", "a") as f:
            f.write("text added after the scan")
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(build_module, "train_tokenizer", edit_then_train)
    with pytest.raises(CorpusError, match="sources changed"):
        build(tmp_path / "out", [root])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_a_given_tokenizer_is_copied_byte_for_byte_and_used(tmp_path, small_corpus):
    source = write_text_tree(tmp_path / "text", n_docs=10)
    given = small_corpus / "tokenizer.json"
    build_corpus(tmp_path / "c", [source], progress=False, tokenizer=given)
    corpus = Corpus(tmp_path / "c")
    assert (tmp_path / "c" / "tokenizer.json").read_bytes() == given.read_bytes()
    tokens = np.asarray(corpus.tokens("train")[:20_000]).tolist()
    first = tokens[:tokens.index(EOT_ID)]
    text = Corpus(small_corpus).tokenizer.decode(first)
    assert text in {p.read_text() for p in source.iterdir()}
    assert Corpus(small_corpus).tokenizer.encode(text).ids == first

    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CorpusError, match="not a readable tokenizer.json"):
        build_corpus(tmp_path / "d", [source], progress=False, tokenizer=tmp_path / "bad.json")
    data = json.loads(given.read_text())
    data["added_tokens"][0]["content"] = "<|other|>"
    data["model"]["vocab"]["<|other|>"] = data["model"]["vocab"].pop("<|endoftext|>")
    (tmp_path / "other.json").write_text(json.dumps(data))
    with pytest.raises(CorpusError, match="must have id 0"):
        build_corpus(tmp_path / "d", [source], progress=False, tokenizer=tmp_path / "other.json")
    assert not (tmp_path / "d").exists()
