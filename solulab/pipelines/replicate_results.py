"""``results.md`` of a replication: loss and multipliers, automated and blinded fractions.

Every number comes with its uncertainty: Wilson 95% intervals for fractions, Fisher's exact test
for each activation against the baseline, bootstrap intervals for multipliers where the fit has
them, and Cohen's kappa with the number of neurons it is computed on.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from solulab.autointerp.agreement import agreement_score, auto_labels, rating_pairs
from solulab.io import atomic_write_json, atomic_write_text
from solulab.pipelines.replicate_seeds import Runs, seed_section
from solulab.stats import fisher_exact_2x2, proportion
from solulab.study import db
from solulab.study.report import by_activation_and_layer, plot_figures, summarise

if TYPE_CHECKING:
    from solulab.pipelines.replicate_plan import ReplicationPlan

RESULTS_FILE = "results.md"
PAPER = ("The paper (Elhage et al., 2022, section 6.2 and Figure 4) reports about 35% of the "
         "baseline's neurons and about 60% of SoLU's interpretable in blinded ratings of 1- to "
         "40-layer models, and 42% against 33% at 64 layers.")


def _interval(successes: int, n: int) -> str:
    p = proportion(successes, n)
    return f"{successes}/{n} = {p.fraction:.0%} ({p.low:.0%}-{p.high:.0%})"


def _p(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2g}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def loss_lines(comparison: dict[str, Any], seeds: int = 1) -> list[str]:
    rows = []
    for r in comparison["runs"]:
        mult = "-" if r["multiplier"] is None else f"{r['multiplier']:.2f}x"
        if r["multiplier_low"] is not None:
            mult += f" ({r['multiplier_low']:.2f}-{r['multiplier_high']:.2f})"
        delta = "-" if r["act"] == comparison["baseline"] else f"{r['loss_vs_baseline']:+.4f}"
        rows.append([r["size"], r["act"], f"{r['n_params']:,}", f"{r['val_loss']:.4f}", delta,
                     mult])
    lines = _table(["size", "activation", "non-embedding params", "validation loss",
                    "vs gelu (nats)", "size-equivalent multiplier"], rows)
    if comparison.get("note"):
        lines += ["", comparison["note"]]
    if seeds > 1:
        lines += ["", f"The first seed of every size; the spread over the {seeds} seeds of the "
                  "largest size, for its loss and its multiplier, is under \"Across seeds\"."]
    else:
        unmeasured = "One seed per model, so the losses carry no seed-to-seed interval"
        if comparison.get("fit") and all(r["multiplier_low"] is None
                                         for r in comparison["runs"]):
            unmeasured += (", and the multipliers none either (a scaling law fitted through "
                           "this few sizes has no bootstrap interval)")
        lines += ["", unmeasured + ": small differences here are unmeasured, not effects."]
    return lines + ["", "![learning curves](figures/learning_curves.png)",
                    *(["", "![multipliers](figures/multiplier.png)"] if comparison.get("fit")
                      else [])]


def fraction_rows(verdicts: dict[str, dict[tuple[int, int], bool]],
                  baseline: str = "gelu") -> list[list[str]]:
    """Per activation: the fraction of every neuron auto-interpretable, Fisher's p vs gelu."""
    rows = []
    base = list(verdicts[baseline].values())
    for act, by_neuron in verdicts.items():
        values = list(by_neuron.values())
        p = "-" if act == baseline else _p(fisher_exact_2x2(
            sum(values), len(values), sum(base), len(base)).p_value)
        rows.append([act, _interval(sum(values), len(values)), p])
    return rows


Verdicts = dict[int, dict[str, dict[tuple[int, int], bool]]]  # seed -> act -> neuron -> verdict


def program_vs_raters(study: Path, runs: Runs, verdicts: Verdicts
                      ) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, int], dict[str, Any]]]:
    """Kappa between each rating and the program's verdict on that neuron, per activation and
    per (activation, layer)."""
    act_of = {run.resolve(): act for by_act in runs.values() for act, run in by_act.items()}
    labels = {run.resolve(): verdicts[seed][act]
              for seed, by_act in runs.items() for act, run in by_act.items()}
    pairs: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    layered: dict[tuple[str, int], list[tuple[bool, bool]]] = defaultdict(list)
    for pair in rating_pairs(study, labels):
        pairs[act_of[pair.run]].append((pair.human, pair.auto))
        layered[(act_of[pair.run], pair.layer)].append((pair.human, pair.auto))
    return ({act: agreement_score(ps) for act, ps in pairs.items()},
            {key: agreement_score(ps) for key, ps in sorted(layered.items())})


def p_against_gelu(pairs: list[dict[str, Any]], name: str) -> str:
    """The p-value of a Fisher test of ``name`` against gelu among ``pairs``, if there is one."""
    for pair in pairs:
        if {pair["a"], pair["b"]} == {name, "gelu"} and name != "gelu":
            return _p(pair["p_value"])
    return "-"


def _cell(share: dict[str, Any] | None, p: str) -> str:
    if share is None or not share["rated"]:
        return "-"
    return f"{share['interpretable']}/{share['rated']}" + ("" if p == "-" else f" (p {p})")


def _program_table(scores: dict[Any, dict[str, Any]], label) -> list[str]:
    return _table(["activation" if label is str else "activation, layer",
                   "raters interpretable", "program interpretable", "kappa program-rater"],
                  [[label(key), _interval(s["human_yes"], s["ratings"]),
                    _interval(s["auto_yes"], s["ratings"]), f"{s['kappa']:.2f}"]
                   for key, s in scores.items()])


def layer_cell(summary: dict[str, Any], layer: int, act: str) -> str:
    """The pooled blinded fraction of ``act`` at ``layer``, with Fisher's p against gelu."""
    row = next(r for r in summary["layers"] if (r["layer"], r["act_fn"]) == (layer, act))
    tests = [p for p in summary["fisher_layers"] if p["layer"] == layer]
    p = p_against_gelu(tests, act)
    return _interval(row["interpretable"], row["rated"]) + ("" if p == "-" else f", p {p}")


def sampled_per_activation(study: Path) -> str:
    """How many neurons the study drew of each activation: one number, or one per activation
    where they differ (the study may have been made anew with ``solulab study create``)."""
    conn = db.connect(study)
    try:
        act_of = {m["run"]: m["act_fn"] for m in db.models(conn)}
        counts = defaultdict(int)
        for run, _, _ in db.sampled_neurons(conn):
            counts[act_of[run]] += 1
    finally:
        conn.close()
    if len(set(counts.values())) == 1:
        return f"{next(iter(counts.values()))}"
    return ", ".join(f"{n} ({act})" for act, n in counts.items())


def study_lines(out: Path, study: Path, runs: Runs, verdicts: Verdicts
                ) -> tuple[list[str], dict]:
    summary = summarise(study)
    if not summary["ratings"]:
        return [f"Not rated yet. Each annotator's secret link is in `{out.name}/annotator-links"
                f".txt`; serve the study with `solulab serve --study {study}` and run this "
                "command again once they have pressed Finish."], {}
    acts = summary["activations"]
    rows = [[act, _interval(m["interpretable"], m["rated"]),
             p_against_gelu(summary["fisher_activations"], act)] for act, m in acts.items()]
    lines = _table(["activation", "rated interpretable (Wilson 95%)", "Fisher p vs gelu"], rows)
    raters = sorted({r["annotator"] for r in summary["ratings"]})
    if len(raters) > 1:
        alone = {rater: by_activation_and_layer([r for r in summary["ratings"]
                                                 if r["annotator"] == rater])
                 for rater in raters}
        lines += ["", "These pool every rater's ratings, so a neuron rated twice counts twice and "
                  "the pooled p-values overstate the evidence. Each rater alone (one rating per "
                  "neuron, Fisher's exact test against gelu):", "",
                  *_table(["rater", *acts], [[rater, *(_cell(
                      alone[rater]["activations"].get(act),
                      p_against_gelu(alone[rater]["fisher_activations"], act)) for act in acts)]
                      for rater in raters])]
    layers = sorted({row["layer"] for row in summary["layers"]})
    if len(layers) > 1:
        lines += ["", "By layer (every rater pooled; Fisher's exact test against gelu at the "
                  "same layer):", "",
                  *_table(["layer", *acts], [[layer, *(layer_cell(summary, layer, act)
                                                       for act in acts)] for layer in layers])]
    seconds = [r["seconds"] for r in summary["ratings"] if r.get("seconds") is not None]
    lines += ["", f"Raters: {', '.join(raters)}; {len(summary['ratings'])} ratings"
              + (f", median {sorted(seconds)[len(seconds) // 2]:.0f} s per neuron"
                 if seconds else "") + "."]
    agreement = summary["agreement"]
    if agreement and agreement["kappa"] is not None:
        lines.append(f"Rater-rater agreement: {agreement['kind']} kappa {agreement['kappa']:.2f} "
                     f"over {agreement['shared_neurons']} neurons rated by every rater.")
    program, program_layers = program_vs_raters(study, runs, verdicts)
    lines += ["", "The program's verdict on the same neurons (each rating is one pair):", "",
              *_program_table(program, str)]
    if len(layers) > 1:
        lines += ["", "By layer:", "",
                  *_program_table(program_layers, lambda key: f"{key[0]}, layer {key[1]}")]
    lines += ["", *audit_lines(summary)]
    plot_figures(summary, out / "figures")
    lines += ["", "![Figure 4](figures/fig4.png)"]
    for name, title in (("fig4_layers.png", "Figure 4 by layer"), ("fig9.png", "Figure 9")):
        if (out / "figures" / name).is_file():
            lines += ["", f"![{title}](figures/{name})"]
    keep = ("interpretable", "rated", "fraction", "wilson_low", "wilson_high")
    blinded = {act: {k: m[k] for k in keep} for act, m in acts.items()}
    return lines, {"blinded": blinded, "fisher": summary["fisher_activations"],
                   "blinded_layers": [{k: row[k] for k in ("act_fn", "layer", *keep)}
                                      for row in summary["layers"]],
                   "fisher_layers": summary["fisher_layers"], "agreement": agreement,
                   "program_vs_raters": program,
                   "program_vs_raters_layers": [{"act_fn": act, "layer": layer, **score}
                                                for (act, layer), score in program_layers.items()],
                   "display": summary["display"],
                   "audit": [{k: pair[k] for k in ("a", "b", "chance", "best", "blind")}
                             for pair in summary["audit"]["pairs"]]}


def audit_lines(summary: dict[str, Any]) -> list[str]:
    """How blind the study was: its display and the blinding audit, one row per pair."""
    rows = [[f"{p['a']} vs {p['b']}", _interval(p["best"]["correct"], p["best"]["n"]),
             f"{p['chance']:.0%}", _p(p["best"]["p_corrected"]), p["best"]["classifier"],
             "yes" if p["blind"] else "**no**"] for p in summary["audit"]["pairs"]]
    return [f"Annotators saw the `{summary['display']}` display "
            f"({summary['display_description']}). The blinding audit: the best of the "
            "cross-validated classifiers at telling two models' neurons apart from exactly what "
            "the annotators saw (shading, snippet length, token classes, the checks), against "
            "guessing; p is one-sided and corrected for the classifiers tried:", "",
            *_table(["models", "best accuracy (Wilson 95%)", "chance", "p", "classifier",
                     "blind"], rows)]


def write_results(out: Path, plan: ReplicationPlan, comparison: dict[str, Any],
                  runs: Runs, study: Path, train_minutes: float) -> Path:
    """Write ``results.md`` (and ``results.json`` with the same figures); returns its path.
    ``runs`` are the largest models of every seed."""
    largest, asked = plan.largest, plan.request
    params = plan.non_embedding_params.get(largest)
    verdicts = {seed: {act: auto_labels(run) for act, run in by_act.items()}
                for seed, by_act in runs.items()}
    pooled = {act: {(seed, *neuron): v for seed, by_act in verdicts.items()
                    for neuron, v in by_act[act].items()} for act in asked.acts}
    seeds = f"{asked.seeds} seeds ({', '.join(map(str, plan.seed_values))}) of {largest}" \
        if asked.seeds > 1 else f"seed {asked.seed}"
    lines = [f"# Replication on `{Path(asked.corpus).name}`", "",
             f"Sizes {', '.join(plan.sizes)} x {', '.join(asked.acts)}, identical settings: "
             f"{plan.tokens:,} tokens each"
             + (f" ({plan.tokens / params:.0f} per non-embedding parameter of {largest})"
                if params else "")
             + f", batch {asked.batch_size} x {asked.n_ctx} tokens, lr {asked.lr}, {seeds}; "
             f"planned for {asked.budget_minutes:g} minutes of training on "
             f"{asked.device} ({plan.threads} threads), {train_minutes:.1f} minutes spent.", ""]
    if plan.undertrained:
        lines += ["**Undertrained**: the budget did not give even the smallest size 20 tokens "
                  "per parameter.", ""]
    lines += ["## Loss", "", *loss_lines(comparison, asked.seeds), "",
              f"## Automated verdict, every neuron of the {largest} models", "",
              "The study's criterion (one rule explains at least 80% of the top examples, 85% "
              "for a rule that names no token); "
              "Wilson 95% intervals, Fisher's exact test against gelu"
              + (", every seed's neurons pooled" if asked.seeds > 1 else "") + ".", "",
              *_table(["activation", "auto-interpretable", "Fisher p vs gelu"],
                      fraction_rows(pooled)), ""]
    seed_numbers = {}
    if asked.seeds > 1 or asked.layers > 1:
        seed_lines, seed_numbers = seed_section(comparison, runs, verdicts, largest,
                                                out / "figures", _table)
        lines += [*seed_lines, ""]
    lines += [f"## Blinded study, {sampled_per_activation(study)} neurons per activation of "
              f"{largest}" + (" (every seed, every layer)" if asked.seeds > 1 else ""), ""]
    blinded_lines, blinded = study_lines(out, study, runs, verdicts)
    lines += [*blinded_lines, "", "## The paper", "", PAPER, ""]
    path = out / RESULTS_FILE
    atomic_write_text(path, "\n".join(lines))
    atomic_write_json(out / "results.json", {
        "sizes": plan.sizes, "tokens": plan.tokens, "train_minutes": train_minutes,
        "loss": comparison["runs"], "fit": comparison.get("fit"),
        "automated": {act: {"interpretable": sum(v.values()), "neurons": len(v)}
                      for act, v in pooled.items()}, **seed_numbers, **blinded})
    return path
