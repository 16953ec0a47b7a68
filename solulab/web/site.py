"""``solulab site RUN... --out DIR``: a static copy of the explorer that works from ``file://``
and on any static host, with the search running in the page.

Layout::

    DIR/index.html                  the runs
    DIR/explorer.js  style.css      the pages' code and style
    DIR/RUN/index.html              the neuron table: sort, filter, search, pages
    DIR/RUN/neuron.html?layer=L&neuron=N
    DIR/RUN/table.js                every neuron's columns and explanation
    DIR/RUN/vocab.js                the text of every token the examples show
    DIR/RUN/shards/L{layer}-{first}.js   SHARD neurons' statistics and top examples

Data travels as scripts that call a function of the page (``solulabData``), not as JSON that a
page fetches: browsers refuse ``fetch`` of ``file://`` URLs, but load scripts from them. The
site is written into a hidden sibling directory and renamed over ``DIR``, so re-running updates
it whole, and an interrupted export leaves the previous one as it was.
"""

from __future__ import annotations

import html
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from solulab.errors import SolulabError
from solulab.io import atomic_write_text, replacing_directory
from solulab.neurons.collect import open_store
from solulab.neurons.store import NeuronStore
from solulab.web.explorer import NeuronTable

SHARD = 256  # neurons per shard file
STATIC = Path(__file__).parent / "static"
PAGE = """<!doctype html><html><head><meta charset=utf-8><title>{title}</title>
<link rel=stylesheet href="{up}style.css"><script src="{up}explorer.js"></script></head>
<body>{body}</body></html>"""


@dataclass
class SiteSummary:
    path: Path
    runs: int
    neurons: int
    files: int
    bytes: int


def _script(call: str, payload) -> str:
    """A script that hands ``payload`` to the page: ``solulabData(call, payload)``."""
    return f"solulabData({json.dumps(call)},{json.dumps(payload, separators=(',', ':'))});\n"


def _numbers(values: np.ndarray, digits: int = 4) -> list:
    """Rounded numbers, null where not finite (strict JSON)."""
    rounded = np.round(np.asarray(values, dtype=np.float64), digits)
    return [v if np.isfinite(v) else None for v in rounded.tolist()]


def run_names(runs: list[Path]) -> list[str]:
    """A file-name-safe, distinct name per run: its directory name, then its parent's."""
    names = []
    for run in runs:
        parts = [p for p in run.resolve().parts[-3:] if p not in ("/", "")]
        for depth in range(1, len(parts) + 1):
            name = "-".join(parts[-depth:])
            if name not in names:
                break
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "run"
        names.append(safe)
    if len(set(names)) != len(names):
        raise SolulabError("two runs would share a name in the site: pass distinct runs")
    return names


def _table_payload(table: NeuronTable, store: NeuronStore, name: str) -> dict:
    columns = {key: _numbers(values) if values.dtype.kind == "f" else values.tolist()
               for key, values in table.columns.items()}
    return {"run": name, "act_fn": store.meta["act_fn"], "layers": store.layers,
            "d_mlp": store.d_mlp, "threshold": store.meta["threshold"],
            "n_tokens": store.meta["n_tokens"], "columns": columns,
            "explanations": table.explanations}


def _write_shards(store: NeuronStore, table: NeuronTable, directory: Path, examples: int,
                  bar) -> set[int]:
    """Every neuron's statistics, verdict and top examples, SHARD neurons a file; returns the
    token ids the examples use."""
    point, used = store.main_point, set()
    directory.mkdir()
    for i, layer in enumerate(store.layers):
        stats = np.asarray(store.array(layer, f"{point}.stats"))
        values = np.asarray(store.array(layer, f"{point}.top.values")[:, :examples])
        ids = np.asarray(store.array(layer, f"{point}.top.ids")[:, :examples])
        acts = np.asarray(store.array(layer, f"{point}.top.acts")[:, :examples])
        used.update(np.unique(ids[ids >= 0]).tolist())
        for first in range(0, store.d_mlp, SHARD):
            neurons = []
            for n in range(first, min(first + SHARD, store.d_mlp)):
                row = i * store.d_mlp + n
                kept = [j for j in range(values.shape[1]) if np.isfinite(values[n, j])]
                neurons.append({
                    "stats": _numbers(stats[n]),
                    "verdict": None if table.columns["interpretable"][row] < 0 else
                    bool(table.columns["interpretable"][row]),
                    "explanation": table.explanations[row],
                    "examples": [[round(float(values[n, j]), 4), ids[n, j].tolist(),
                                  _numbers(acts[n, j], 3)] for j in kept]})
            atomic_write_text(directory / f"L{layer}-{first}.js",
                              _script(f"L{layer}-{first}", neurons))
            bar.update(len(neurons))
    return used


def _run_pages(directory: Path, name: str, before: int) -> None:
    title = html.escape(name)
    table = ('<nav><a href="../index.html">runs</a></nav><h1 id=title></h1><p id=about></p>'
             '<form id=filters class=filters><input name=q placeholder="explanation contains" '
             'maxlength=200> <select name=layer><option value="">all layers</option></select> '
             '<select name=interpretable><option value="">any verdict</option><option '
             'value=true>interpretable</option><option value=false>not interpretable</option>'
             '</select> <button>search</button></form><p id=status class=note></p>'
             '<table id=neurons data-static=1><thead><tr></tr></thead><tbody></tbody></table>'
             '<p class=pager><button id=prev>previous</button> <button id=next>next</button>'
             '</p><script src="table.js"></script>')
    atomic_write_text(directory / "index.html", PAGE.format(title=title, up="../", body=table))
    neuron = ('<nav><a href="../index.html">runs</a> / <a href="index.html">' + title +
              f'</a></nav><div id=static-neuron data-shard={SHARD} data-before={before}></div>'
              '<script src="vocab.js"></script>')
    atomic_write_text(directory / "neuron.html", PAGE.format(title=title, up="../", body=neuron))


def export_site(runs: list[Path], out: Path, examples: int = 10,
                progress: bool = True) -> SiteSummary:
    """Write the site of ``runs`` to ``out`` (replacing what is there); see the module."""
    if not runs:
        raise SolulabError("give at least one run with a neuron store")
    if examples < 1:
        raise SolulabError("examples must be at least 1")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SolulabError(f"--out {out} is a file: choose a directory")
    stores = [open_store(run) for run in runs]  # every run checked before anything is written
    names = run_names(runs)
    total = sum(len(s.layers) * s.d_mlp for s in stores)
    with replacing_directory(out) as tmp, \
            tqdm(total=total, unit="neuron", desc="site", disable=not progress) as bar:
        for store, name in zip(stores, names):
            directory = tmp / name
            directory.mkdir()
            table = NeuronTable(store)
            atomic_write_text(directory / "table.js",
                              _script("table", _table_payload(table, store, name)))
            used = _write_shards(store, table, directory / "shards", examples, bar)
            vocab = dict(zip(map(str, sorted(used)), store.decode(sorted(used))))
            atomic_write_text(directory / "vocab.js", _script("vocab", vocab))
            _run_pages(directory, name, store.meta["window_before"])
        items = "".join(f'<li><a href="{html.escape(n)}/index.html">{html.escape(n)}</a></li>'
                        for n in names)
        atomic_write_text(tmp / "index.html", PAGE.format(
            title="solulab neurons", up="", body=f"<h1>Runs</h1><ul>{items}</ul>"))
        for static in ("explorer.js", "style.css"):
            shutil.copyfile(STATIC / static, tmp / static)
    files = [p for p in out.rglob("*") if p.is_file()]
    return SiteSummary(out, len(runs), total, len(files), sum(p.stat().st_size for p in files))
