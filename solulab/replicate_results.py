"""``results.md`` of a replication: loss and multipliers, automated and blinded fractions.

Every number comes with its uncertainty: Wilson 95% intervals for fractions, Fisher's exact test
for each activation against the baseline, bootstrap intervals for multipliers where the fit has
them, and Cohen's kappa with the number of neurons it is computed on.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from solulab.autointerp.compare import agreement_score, auto_labels, rating_pairs
from solulab.io import atomic_write_json, atomic_write_text
from solulab.stats import fisher_exact_2x2, proportion
from solulab.study.report import plot_figures, summarise

if TYPE_CHECKING:
    from solulab.replicate import ReplicationPlan

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


def loss_lines(comparison: dict[str, Any]) -> list[str]:
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
    unmeasured = "One seed per model, so the losses carry no seed-to-seed interval"
    if comparison.get("fit") and all(r["multiplier_low"] is None for r in comparison["runs"]):
        unmeasured += (", and the multipliers none either (a scaling law fitted through this few "
                       "sizes has no bootstrap interval)")
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


def program_vs_raters(study: Path, runs: dict[str, Path],
                      verdicts: dict[str, dict[tuple[int, int], bool]]
                      ) -> dict[str, dict[str, Any]]:
    """Per activation: kappa between each rating and the program's verdict on that neuron."""
    act_of = {run.resolve(): act for act, run in runs.items()}
    pairs: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for _, run, human, auto in rating_pairs(study, {run.resolve(): verdicts[act]
                                                    for act, run in runs.items()}):
        pairs[act_of[run]].append((human, auto))
    return {act: agreement_score(ps) for act, ps in pairs.items()}


def p_against_gelu(pairs: list[dict[str, Any]], name: str) -> str:
    """The p-value of the study report's Fisher test of ``name`` against gelu, if there is one."""
    for pair in pairs:
        if {pair["a"], pair["b"]} == {name, "gelu"} and name != "gelu":
            return _p(pair["p_value"])
    return "-"


def per_rater_cells(summary: dict[str, Any], rater: str, models: dict[str, Any]) -> list[str]:
    """One rater's fraction per model, with Fisher's p against gelu."""
    cells = []
    for name in models:
        m = summary["per_annotator"].get(f"{rater}/{name}")
        p = p_against_gelu(summary["fisher_per_annotator"][rater], name)
        cells.append("-" if m is None else f"{m['interpretable']}/{m['rated']}"
                     + ("" if p == "-" else f" (p {p})"))
    return cells


def study_lines(out: Path, study: Path, runs: dict[str, Path],
                verdicts: dict[str, dict[tuple[int, int], bool]]) -> tuple[list[str], dict]:
    summary = summarise(study)
    if not summary["ratings"]:
        return [f"Not rated yet. Each annotator's secret link is in `{out.name}/annotator-links"
                f".txt`; serve the study with `solulab serve --study {study}` and run this "
                "command again once they have pressed Finish."], {}
    models = summary["models"]
    rows = [[name, _interval(m["interpretable"], m["rated"]),
             p_against_gelu(summary["fisher"], name)] for name, m in models.items()]
    lines = _table(["activation", "rated interpretable (Wilson 95%)", "Fisher p vs gelu"], rows)
    raters = sorted({r["annotator"] for r in summary["ratings"]})
    if len(raters) > 1:
        lines += ["", "These pool every rater's ratings, so a neuron rated twice counts twice and "
                  "the pooled p-values overstate the evidence. Each rater alone (one rating per "
                  "neuron, Fisher's exact test against gelu):", "",
                  *_table(["rater", *models], [[rater, *per_rater_cells(summary, rater, models)]
                                               for rater in raters])]
    seconds = [r["seconds"] for r in summary["ratings"] if r.get("seconds") is not None]
    lines += ["", f"Raters: {', '.join(raters)}; {len(summary['ratings'])} ratings"
              + (f", median {sorted(seconds)[len(seconds) // 2]:.0f} s per neuron"
                 if seconds else "") + "."]
    agreement = summary["agreement"]
    if agreement and agreement["kappa"] is not None:
        lines.append(f"Rater-rater agreement: {agreement['kind']} kappa {agreement['kappa']:.2f} "
                     f"over {agreement['shared_neurons']} neurons rated by every rater.")
    program = program_vs_raters(study, runs, verdicts)
    lines += ["", "The program's verdict on the same neurons (each rating is one pair):", "",
              *_table(["activation", "raters interpretable", "program interpretable",
                       "kappa program-rater"],
                      [[act, _interval(s["human_yes"], s["ratings"]),
                        _interval(s["auto_yes"], s["ratings"]), f"{s['kappa']:.2f}"]
                       for act, s in program.items()])]
    lines += ["", *audit_lines(summary)]
    plot_figures(summary, out / "figures")
    lines += ["", "![Figure 4](figures/fig4.png)"]
    if (out / "figures" / "fig9.png").is_file():
        lines += ["", "![Figure 9](figures/fig9.png)"]
    blinded = {name: {k: m[k] for k in ("interpretable", "rated", "fraction", "wilson_low",
                                        "wilson_high")} for name, m in models.items()}
    return lines, {"blinded": blinded, "fisher": summary["fisher"], "agreement": agreement,
                   "program_vs_raters": program, "display": summary["display"],
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
                  runs: dict[str, Path], study: Path, train_minutes: float) -> Path:
    """Write ``results.md`` (and ``results.json`` with the same figures); returns its path."""
    largest = plan.largest
    params = plan.non_embedding_params.get(largest)
    verdicts = {act: auto_labels(run) for act, run in runs.items()}
    lines = [f"# Replication on `{Path(plan.corpus).name}`", "",
             f"Sizes {', '.join(plan.sizes)} x {', '.join(plan.acts)}, identical settings: "
             f"{plan.tokens:,} tokens each"
             + (f" ({plan.tokens / params:.0f} per non-embedding parameter of {largest})"
                if params else "")
             + f", batch {plan.batch_size} x {plan.n_ctx} tokens, lr {plan.lr}, seed "
             f"{plan.seed}; planned for {plan.budget_minutes:g} minutes of training on "
             f"{plan.device} ({plan.threads} threads), {train_minutes:.1f} minutes spent.", ""]
    if plan.undertrained:
        lines += ["**Undertrained**: the budget did not give even the smallest size 20 tokens "
                  "per parameter.", ""]
    lines += ["## Loss", "", *loss_lines(comparison), "",
              f"## Automated verdict, every neuron of the {largest} models", "",
              "The study's criterion (one rule explains at least 80% of the top examples); "
              "Wilson 95% intervals, Fisher's exact test against gelu.", "",
              *_table(["activation", "auto-interpretable", "Fisher p vs gelu"],
                      fraction_rows(verdicts)), "",
              f"## Blinded study, {plan.neurons_per_model} neurons per {largest} model", ""]
    blinded_lines, blinded = study_lines(out, study, runs, verdicts)
    lines += [*blinded_lines, "", "## The paper", "", PAPER, ""]
    path = out / RESULTS_FILE
    atomic_write_text(path, "\n".join(lines))
    atomic_write_json(out / "results.json", {
        "sizes": plan.sizes, "tokens": plan.tokens, "train_minutes": train_minutes,
        "loss": comparison["runs"], "fit": comparison.get("fit"),
        "automated": {act: {"interpretable": sum(v.values()), "neurons": len(v)}
                      for act, v in verdicts.items()}, **blinded})
    return path
