"""``solulab study``: create a blinded study database and unblind it into a report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

import typer

from solulab.cli.exits import reports_errors
from solulab.study.display import DEFAULT_DISPLAY, DESCRIPTIONS

app = typer.Typer(help="The randomized, blinded human study.", no_args_is_help=True)


def parse_models(specs: list[str]) -> dict[str, Path]:
    models = {}
    for spec in specs:
        name, sep, run = spec.partition("=")
        if not sep or not name or not run:
            raise typer.BadParameter(f"--model takes NAME=RUN, got {spec!r}")
        if name in models:
            raise typer.BadParameter(f"model name {name!r} given twice")
        models[name] = Path(run)
    return models


@app.command()
@reports_errors
def create(
    model: list[str] = typer.Option(..., help="NAME=RUN, once per model (RUN has a store)."),
    out: Path = typer.Option(..., help="The new study database (SQLite)."),
    neurons_per_model: int = typer.Option(60, help="Neurons sampled per model."),
    seed: Optional[int] = typer.Option(None, help="Fixes which neurons are drawn (default: a "
                                       "fresh random seed); orders are always secret."),
    annotators: str = typer.Option("annotator", help="Comma-separated annotator names."),
    base_url: str = typer.Option("http://127.0.0.1:8000", help="Where `solulab serve` runs."),
    exclude: list[Path] = typer.Option([], help="A study whose neurons are not drawn again "
                                       "(repeatable): a fresh, held-out sample."),
    display: str = typer.Option(DEFAULT_DISPLAY, help="How tokens are shaded: " + "; ".join(
        f"{name}: {text}" for name, text in DESCRIPTIONS.items())),
    layers: Optional[str] = typer.Option(None, help="Draw only from these layers, e.g. 1 or "
                                         "1,2 (default: every layer, the same share of each)."),
):
    """Sample neurons uniformly from each model and print one secret link per annotator. The
    study database holds the key to the blinding: it is created readable by you only."""
    from solulab.cli.neurons import parse_layers
    from solulab.study.create import create_study

    names = [a.strip() for a in annotators.split(",")]
    links = create_study(parse_models(model), out, neurons_per_model, seed, names, exclude,
                         display, parse_layers(layers))
    typer.echo(f"study: {links.path}")
    port = urlsplit(base_url).port
    serve = f"solulab serve --study {links.path}" + (f" --port {port}" if port and port != 8000
                                                      else "")
    typer.echo(f"serve it to annotators: {serve}   # the links below point there")
    for name, link in links.links(base_url).items():
        typer.echo(f"  {name}: {link}")


@app.command()
@reports_errors
def report(
    study: Path = typer.Argument(..., help="Study database."),
    out: Optional[Path] = typer.Option(None, help="Report directory (default STUDY-report/)."),
    include_unfinished: bool = typer.Option(False, help="Count the ratings of annotators who "
                                            "have not pressed Finish (left out by default)."),
):
    """Unblind: fractions interpretable, Fisher tests, kappas, Figures 4 and 9, CSVs, and the
    blinding audit. The report is readable by you only, like the study."""
    from solulab.study.report import format_summary, write_report

    path, summary = write_report(study, out, include_unfinished)
    typer.echo(format_summary(summary))
    typer.echo(f"report: {path}")
