import json

import pytest

from solulab.autointerp.run import load_explanations
from solulab.neurons.store import NeuronStore
from solulab.pipelines.demo import DemoSettings, run_demo


def check_card(run, explained, evals) -> None:
    """The run is a Hub model folder whose card states the run's own numbers."""
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {
        p.name for p in run.iterdir()}
    card = (run / "README.md").read_text()
    record = json.loads((run / "run.json").read_text())
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "library_name: solulab" in front and "license: mit" in front
    assert f"- {record['model']['act_fn']}" in front
    assert f"| non-embedding parameters | {record['n_params']:,} |" in body
    assert f"Validation loss at the end: **{record['val_loss']:.4f}**" in body
    tokens = record["total_steps"] * record["train"]["batch_size"] * record["model"]["n_ctx"]
    assert f"{record['total_steps']:,} steps" in body and f"({tokens:,} tokens)" in body
    k = sum(e["interpretable"] for e in explained.values())
    assert f"| 0 | {k} of {len(explained)} ({k / len(explained):.1%}) |" in body
    for task, result in evals.items():
        assert f"| {task} | {result['accuracy']:.3f} |" in body


def test_the_demo_pipeline_at_a_small_size(tmp_path, monkeypatch):
    monkeypatch.setenv("SOLULAB_CACHE", str(tmp_path / "cache"))
    settings = DemoSettings(sizes=("1x32", "1x64", "1x96"), steps=24, batch_size=4, n_ctx=64,
                            eval_items=12, corpus_max_bytes=400_000, neuron_tokens=2048)
    report = run_demo(tmp_path / "demo", settings, progress=False)
    page = report.read_text()
    assert "size-equivalent multiplier" in page and page.count("data:image/png") >= 1
    sweep = tmp_path / "demo" / "sweep"
    compare = json.loads((sweep / "compare.json").read_text())
    assert {(r["size"], r["act"]) for r in compare["runs"]} == {
        (s, a) for s in settings.sizes for a in settings.acts}
    for size in settings.sizes:
        for act in settings.acts:
            evals = json.loads((sweep / size / act / "evals.json").read_text())
            assert set(evals) == {"arithmetic", "cloze"}
            store = NeuronStore.open(sweep / size / act / "neurons")
            assert store.meta["n_tokens"] == 2048 and len(store.examples(0, 0)) == 40
            explained = load_explanations(store.path)
            assert len(explained) == store.d_mlp
            check_card(sweep / size / act, explained, evals)
    assert "Neuron collections" in page and "auto-interpretable (95% Wilson)" in page
    # A second run reuses everything: no retraining, no recollection, no re-explaining.
    kept = [sweep / "1x32" / "gelu" / name
            for name in ("model.safetensors", "neurons/meta.json", "neurons/autointerp.json")]
    before = [path.stat().st_mtime_ns for path in kept]
    run_demo(tmp_path / "demo", settings, progress=False)
    assert [path.stat().st_mtime_ns for path in kept] == before
    # Every JSON file is strict JSON (no NaN or Infinity), and each eval row appears once.
    for path in (tmp_path / "demo").rglob("*.json"):
        json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in {path}"))
    for task in ("arithmetic", "cloze"):
        for size in settings.sizes:
            assert page.count(f"<td>{task}</td><td>{size}</td>") == 1
