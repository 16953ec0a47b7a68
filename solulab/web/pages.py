"""HTML of the neuron viewer, rendered on the server; every value is escaped."""

from __future__ import annotations

import html
from collections.abc import Sequence
from urllib.parse import urlencode

import numpy as np

from solulab.neurons.store import Example, NeuronStats, NeuronStore
from solulab.stats import wilson_interval
from solulab.visible import visible
from solulab.web.explorer import NeuronTable

POINT_LABEL = {"mid": "pre-LayerNorm (hook_mid)", "post": "post-LayerNorm (hook_post)"}


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            "<link rel=stylesheet href=/static/style.css></head>"
            f"<body>{body}</body></html>")


def neuron_url(run: str, layer: int, neuron: int, point: str | None = None) -> str:
    query = {"run": run, "layer": layer, "neuron": neuron}
    if point:
        query["point"] = point
    return "/neuron?" + urlencode(query)


def neuron_href(run: str, layer: int, neuron: int, point: str | None = None) -> str:
    """``neuron_url`` escaped for an HTML attribute."""
    return html.escape(neuron_url(run, layer, neuron, point))


def shade_tokens(tokens: Sequence[str], acts: np.ndarray, scale: float,
                 fire_index: int | None) -> str:
    """Tokens as spans shaded red by ``act / scale``; the value on hover."""
    spans = []
    for i, (token, act) in enumerate(zip(tokens, acts)):
        level = 0.0 if scale <= 0 or not np.isfinite(act) else float(np.clip(act / scale, 0, 1))
        text = html.escape(visible(token)) or "&nbsp;"
        fire = " fire" if i == fire_index else ""
        spans.append(f'<span class="tok{fire}" data-act="{act:.4f}" title="{act:.4f}" '
                     f'style="background: rgba(255,0,0,{level:.3f})">{text}</span>')
    return "".join(spans)


def examples_block(examples: Sequence[Example], scale: float) -> str:
    rows = [f'<div class=example><span class=value>{e.value:+.3f}</span> '
            f'<span class=text>{shade_tokens(e.tokens, e.acts, scale, e.fire_index)}</span></div>'
            for e in examples]
    return "".join(rows) or "<p class=note>none</p>"


def histogram_svg(stats: NeuronStats, width: int = 420, height: int = 120) -> str:
    counts = stats.hist_counts.astype(float)
    if not len(counts):
        return ""
    top = np.log1p(counts).max() or 1.0
    bar = width / len(counts)
    bars = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - h:.1f}" width="{max(bar - 1, 1):.1f}" '
        f'height="{h:.1f}"><title>[{stats.hist_edges[i]:.3g}, {stats.hist_edges[i + 1]:.3g}): '
        f'{int(c)}</title></rect>'
        for i, c in enumerate(counts) for h in [np.log1p(c) / top * (height - 14)])
    return (f'<svg class=hist width="{width}" height="{height + 16}" role=img>'
            f'{bars}<text x="0" y="{height + 14}">{stats.hist_edges[0]:.3g}</text>'
            f'<text x="{width}" y="{height + 14}" text-anchor=end>{stats.hist_edges[-1]:.3g}'
            '</text></svg><p class=note>Histogram of activations over the collection '
            '(log counts).</p>')


def logit_table(store: NeuronStore, layer: int, neuron: int) -> str:
    effects = store.logit_effects(layer, neuron)
    rows = "".join(
        f"<tr><td>{html.escape(repr(up))}</td><td>{uv:+.3f}</td>"
        f"<td>{html.escape(repr(down))}</td><td>{dv:+.3f}</td></tr>"
        for up, uv, down, dv in zip(effects.top_tokens, effects.top_values,
                                    effects.bottom_tokens, effects.bottom_values))
    note = ("In a 1-layer model this is the neuron's whole effect on the logits."
            if effects.complete else "Direct path only: later layers also read this neuron.")
    return (f"<table class=logits><tr><th>increases</th><th></th><th>decreases</th><th></th>"
            f"</tr>{rows}</table><p class=note>{note}</p>")


def explanation_block(explanation: dict | None) -> str:
    """The automated explanation and its scores, when ``solulab autointerp`` has run."""
    if explanation is None:
        return ""

    def fmt(key: str) -> str:
        value = explanation.get(key)
        return "n/a" if value is None else f"{value:.3f}"

    verdict = "auto-INTERPRETABLE" if explanation["interpretable"] else "not auto-interpretable"
    return (f"<h2>Automated explanation</h2><p id=explanation><b>"
            f"{html.escape(explanation['description'])}</b> ({verdict}: covers "
            f"{explanation['coverage']:.0%} of the top 20)</p><p class=note>On held-out text: "
            f"precision {fmt('precision')} (random rule: {fmt('firing_rate')}), recall "
            f"{fmt('recall')} (random rule: {fmt('frequency')}), AUROC {fmt('auroc')} "
            f"(random rule: 0.5), simulation correlation {fmt('simulation')}.</p>"
            f"<p class=note>Best rejected: {html.escape(explanation['rejected'])} "
            f"({html.escape(explanation['rejected_reason'])}).</p>")


def neuron_page(run: str, store: NeuronStore, layer: int, neuron: int, point: str,
                random_neuron: int, explanation: dict | None = None) -> str:
    stats = store.stats(layer, neuron, point)
    top = store.examples(layer, neuron, point)
    nav = ['<a href="/">runs</a>', f'<a href="/run?{urlencode({"run": run})}">'
           f'{html.escape(run)}</a>']
    if neuron > 0:
        nav.append(f'<a id=prev href="{neuron_href(run, layer, neuron - 1, point)}">previous</a>')
    if neuron + 1 < store.d_mlp:
        nav.append(f'<a id=next href="{neuron_href(run, layer, neuron + 1, point)}">next</a>')
    nav.append(f'<a id=random href="{neuron_href(run, layer, random_neuron, point)}">random</a>')
    switch = " ".join(
        f'<a class="point{" on" if p == point else ""}" '
        f'href="{neuron_href(run, layer, neuron, p)}">{POINT_LABEL[p]}</a>'
        for p in store.points) if len(store.points) > 1 else ""
    intervals = "".join(
        f"<h3>[{low:+.3f}, {high:+.3f})</h3>{examples_block(examples, stats.max)}"
        for (low, high), examples in store.interval_examples(layer, neuron, point))
    body = f"""
<nav>{" · ".join(nav)}</nav>
<h1>{html.escape(run)} · layer {layer} · neuron {neuron}</h1>
<p class=switch>{switch}</p>
<p class=stats>max {stats.max:.3f} · mean {stats.mean:.4f} · std {stats.std:.4f} ·
kurtosis {stats.kurtosis:.1f} · above 0: {stats.frac_positive:.1%} ·
above {stats.threshold:g}: {stats.frac_above:.2%} · {stats.n_tokens:,} tokens</p>
{histogram_svg(stats)}
{explanation_block(explanation)}
<h2>Top activations</h2>
<div id=top>{examples_block(top, stats.max)}</div>
<h2>Logit effects</h2>{logit_table(store, layer, neuron)}
<h2>Across the activation range</h2>
<p class=note>Uniform samples from each interval between the smallest and largest activation.</p>
{intervals}
<h2>On your text</h2>
<form id=neuron-probe data-run="{html.escape(run)}" data-layer={layer} data-neuron={neuron}
data-point={html.escape(point)} data-max="{stats.max:.6g}"><textarea name=text maxlength=4000
placeholder="type or paste text: this neuron's activation at every token"></textarea>
<button>run</button></form><p id=probe-status class=note></p><div id=probed class=example></div>
<script src=/static/explorer.js></script>"""
    return page(f"{run} L{layer} N{neuron}", body)


COLUMNS = [("layer", "layer"), ("neuron", "neuron"), ("max", "max"), ("firing", "firing"),
           ("kurtosis", "kurtosis"), ("interpretable", "verdict"), ("auroc", "AUROC"),
           ("explanation", "explanation")]


def filters_form(layers: Sequence[int]) -> str:
    """The explorer's query: explanation text, token, layer, verdict and firing range."""
    options = "".join(f"<option value={layer}>layer {layer}</option>" for layer in layers)
    return ('<form id=filters class=filters>'
            '<input name=q placeholder="explanation contains" maxlength=200> '
            '<input name=token placeholder="fires on token" maxlength=200> '
            f'<select name=layer><option value="">all layers</option>{options}</select> '
            '<select name=interpretable><option value="">any verdict</option>'
            '<option value=true>interpretable</option><option value=false>not interpretable'
            '</option></select> '
            'firing <input name=min_firing type=number min=0 max=1 step=0.001 value=0> to '
            '<input name=max_firing type=number min=0 max=1 step=0.001 value=1> '
            '<button>search</button></form>')


def neuron_table(run: str, status: str) -> str:
    """An empty table that ``static/explorer.js`` fills from ``/api/neurons``."""
    head = "".join(f'<th data-sort="{key}">{label}</th>' for key, label in COLUMNS)
    return (f"<p id={status} class=note></p><table class=neurons data-run=\"{html.escape(run)}\" "
            f"data-status={status}><thead><tr>{head}</tr></thead><tbody></tbody></table>")


PAGER = '<p class=pager><button id=prev>previous</button> <button id=next>next</button></p>'


def run_page(run: str, store: NeuronStore, table: NeuronTable) -> str:
    """The run's neurons as a table that sorts, filters, searches and pages through
    ``/api/neurons``, and a probe of your own text (``static/explorer.js``)."""
    meta = store.meta
    explained = int((table.columns["interpretable"] >= 0).sum())
    points = "".join(f"<option value={p}>{POINT_LABEL[p]}</option>" for p in store.points)
    body = (f'<nav><a href="/">runs</a></nav><h1>{html.escape(run)}</h1>'
            f"<p>{html.escape(meta['act_fn'])}, {meta['n_layers']} layers, {store.d_mlp} neurons "
            f"per layer ({table.run_meta['rows']:,} in all, {explained:,} explained), collected "
            f"over {meta['n_tokens']:,} {html.escape(meta['split'])} tokens. Firing: the share "
            "of tokens where the neuron reaches half its largest activation (from its histogram,"
            " to one bin). Click a column to sort; the neuron's number opens its page.</p>"
            f"{filters_form(store.layers)}{neuron_table(run, 'status')}{PAGER}"
            f'<h2>Probe with your text</h2><form id=probe data-run="{html.escape(run)}">'
            '<textarea name=text maxlength=4000 placeholder="type or paste text: the neurons '
            f'that fire most at each token"></textarea><select name=point>{points}</select> '
            "<button>probe</button></form><p id=probe-status class=note></p>"
            "<table id=probed></table><script src=/static/explorer.js></script>")
    return page(run, body)


def compare_page(runs: Sequence[str], tables: Sequence[NeuronTable]) -> str:
    """Two runs side by side: the interpretable fraction per layer (Wilson 95%), and one query
    answered by both."""
    layers = sorted({layer for t in tables for layer in t.run_meta["layers"]})
    fractions = [t.layer_fractions() for t in tables]
    head = "".join(f"<th>{html.escape(r)}</th>" for r in runs)
    rows = []
    for layer in layers:
        cells = []
        for by_layer in fractions:
            k, n = by_layer.get(layer, (0, 0))
            if n == 0:
                cells.append("<td>not explained</td>")
                continue
            low, high = wilson_interval(k, n)
            cells.append(f"<td>{k} of {n} ({k / n:.1%}; {low:.1%} to {high:.1%})</td>")
        rows.append(f"<tr><td>layer {layer}</td>{''.join(cells)}</tr>")
    side = "".join(f"<div class=side><h2>{html.escape(r)}</h2>{neuron_table(r, f'status{i}')}"
                   "</div>" for i, r in enumerate(runs))
    body = (f'<nav><a href="/">runs</a></nav><h1>{" vs ".join(html.escape(r) for r in runs)}'
            "</h1><h2>Interpretable by the automated verdict, per layer (95% Wilson)</h2>"
            f"<table class=fractions><tr><th></th>{head}</tr>{''.join(rows)}</table>"
            f"<h2>The same query on both</h2>{filters_form(layers)}<div class=sides>{side}</div>"
            f"{PAGER}<script src=/static/explorer.js></script>")
    return page(" vs ".join(runs), body)


def runs_page(runs: list[str]) -> str:
    items = "".join(f'<li><a href="/run?{urlencode({"run": r})}">{html.escape(r)}</a></li>'
                    for r in runs)
    if len(runs) > 1:
        pick = "".join(f"<option>{html.escape(r)}</option>" for r in runs)
        items += (f"</ul><form action=/compare class=filters>Compare <select name=a>{pick}"
                  f"</select> with <select name=b>{pick}</select> <button>compare</button>"
                  "</form><ul>")
    return page("solulab runs", f"<h1>Runs with neuron stores</h1><ul>{items}</ul>" if runs else
                "<h1>No neuron stores yet</h1><p>Collect one with "
                "<code>solulab neurons collect RUN</code>.</p>")
