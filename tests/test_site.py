"""``solulab site``: the static explorer's data against the store, its atomic re-runs, and its
refusals."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from solulab.errors import SolulabError
from solulab.neurons.store import NeuronStore
from solulab.web.explorer import NeuronTable
from solulab.web.site import SHARD, export_site

ROOT = Path(__file__).resolve().parent.parent


def payload(path: Path):
    """What a data script hands to the page: ``solulabData(kind, payload);``."""
    text = path.read_text()
    assert text.startswith("solulabData(") and text.rstrip().endswith(");")
    kind, _, rest = text[len("solulabData("):].partition(",")
    return json.loads(kind), json.loads(rest.rstrip().removesuffix(");"))


def test_the_site_holds_every_neuron_as_the_store_does(collected_runs, tmp_path):
    runs = [collected_runs / "gelu", collected_runs / "solu_ln"]
    summary = export_site(runs, tmp_path / "site", examples=4, progress=False)
    assert summary.runs == 2 and summary.neurons == 128
    assert summary.bytes == sum(p.stat().st_size for p in (tmp_path / "site").rglob("*")
                                if p.is_file())
    for run in runs:
        store = NeuronStore.open(run / "neurons")
        site = tmp_path / "site" / run.name
        kind, table = payload(site / "table.js")
        assert kind == "table" and table["d_mlp"] == store.d_mlp
        expected = NeuronTable(store).columns
        np.testing.assert_allclose(table["columns"]["max"], expected["max"], atol=5.1e-5)
        assert table["columns"]["neuron"] == expected["neuron"].tolist()
        _, vocab = payload(site / "vocab.js")
        kind, shard = payload(site / "shards" / "L0-0.js")
        assert kind == "L0-0" and len(shard) == min(SHARD, store.d_mlp)
        for neuron in (0, 7, store.d_mlp - 1):
            top = store.examples(0, neuron)[:4]
            shown = shard[neuron]["examples"]
            assert [v for v, _, _ in shown] == pytest.approx([e.value for e in top], abs=1e-4)
            ids = [[i for i in window if i >= 0] for _, window, _ in shown]
            assert ids == [e.token_ids for e in top]
            assert ["".join(vocab[str(i)] for i in window) for window in ids] == [
                "".join(e.tokens) for e in top]
            assert shard[neuron]["stats"][0] == pytest.approx(store.stats(0, neuron).max,
                                                              abs=1e-4)


def test_rerunning_replaces_the_site_whole_and_bad_input_changes_nothing(collected_runs,
                                                                         tmp_path):
    out = tmp_path / "site"
    export_site([collected_runs / "gelu", collected_runs / "solu_ln"], out, progress=False)
    export_site([collected_runs / "gelu"], out, progress=False)  # re-run with fewer runs
    assert sorted(p.name for p in out.iterdir()) == ["explorer.js", "gelu", "index.html",
                                                     "style.css"]
    before = sorted(str(p) for p in out.rglob("*"))
    with pytest.raises(SolulabError):
        export_site([collected_runs / "gelu", tmp_path], out, progress=False)  # no store
    assert sorted(str(p) for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    result = subprocess.run([sys.executable, "-m", "solulab.cli", "site", str(tmp_path),
                             "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
