"""The formats public corpora ship in, each on small files made here: compressed JSON lines,
directories of parquet shards, a saved ``datasets`` directory, another text field; a damaged
shard is a clear error naming the file that leaves nothing behind."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from solulab.data import Corpus, CorpusError, build_corpus
from solulab.data.sources import SourceStats, iter_documents, resolve_sources

TEXTS = [f"document {i}: the value of item {i} is {i * 7} and def f{i}(x): return x"
         for i in range(40)]


def read(source, **kw) -> list[str]:
    return [d.text for d in iter_documents(resolve_sources([source], **kw), SourceStats())]


def jsonl(records, field="text") -> bytes:
    return "".join(json.dumps({field: t, "id": i}) + "\n" for i, t in enumerate(records)).encode()


def test_compressed_json_lines(tmp_path):
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(jsonl(TEXTS[:20])))
    with pa.output_stream(str(tmp_path / "b.jsonl.zst"), compression="zstd") as out:
        out.write(jsonl(TEXTS[20:]))
    assert read(tmp_path) == TEXTS


def test_a_directory_of_parquet_shards_and_another_text_field(tmp_path):
    for shard in range(4):
        rows = TEXTS[shard * 10:(shard + 1) * 10]
        pq.write_table(pa.table({"content": rows, "n": list(range(10))}),
                       tmp_path / f"train-{shard:05d}-of-00004.parquet")
    assert read(tmp_path, text_field="content") == TEXTS
    with pytest.raises(Exception, match="no 'text' column .*content, n.*--text-field"):
        read(tmp_path)


def test_a_saved_datasets_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": TEXTS}).save_to_disk(str(tmp_path / "ds"),
                                                             num_shards=2)
    assert read(tmp_path / "ds") == TEXTS
    manifest = build_corpus(tmp_path / "corpus", sources=[tmp_path / "ds"], vocab_size=300,
                            val_fraction=0.2, progress=False)
    assert manifest.counts.documents == len(TEXTS)
    assert len(Corpus(tmp_path / "corpus").tokens("train")) > 0


@pytest.mark.parametrize("name, damage", [
    ("b.jsonl.gz", lambda data: data[: len(data) // 2]),
    ("b.parquet", lambda data: data[:100]),
])
def test_a_damaged_shard_names_the_file_and_leaves_nothing(tmp_path, name, damage):
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.jsonl.gz").write_bytes(gzip.compress(jsonl(TEXTS * 50)))
    good = tmp_path / "good.bin"
    if name.endswith(".gz"):
        good.write_bytes(gzip.compress(jsonl(TEXTS * 50)))
    else:
        pq.write_table(pa.table({"text": TEXTS}), good)
    (source / name).write_bytes(damage(good.read_bytes()))
    existing = tmp_path / "corpus"
    build_corpus(existing, sources=[source / "a.jsonl.gz"], vocab_size=300, progress=False)
    before = {p.name: p.read_bytes() for p in existing.iterdir()}
    with pytest.raises(CorpusError, match=name.replace(".", r"\.")):
        build_corpus(tmp_path / "new", sources=[source], vocab_size=300, progress=False)
    assert not (tmp_path / "new").exists()
    assert not list(tmp_path.glob(".new.partial*"))
    assert {p.name: p.read_bytes() for p in existing.iterdir()} == before
