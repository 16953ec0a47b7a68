"""The ``solulab`` command: one module per domain registers its commands here."""

from __future__ import annotations

import signal
import sys

import typer

from solulab.cli import autointerp, data, interop, neurons, pipelines, study, training, web
from solulab.cli.exits import raise_on_sigterm

app = typer.Typer(
    help="Train SoLU and baseline language models and read their neurons.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from solulab import __version__

        typer.echo(f"solulab {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version,
                                          is_eager=True, help="Print the version and exit.")):
    """Train SoLU and baseline language models and read their neurons."""


app.add_typer(data.app, name="corpus")
for name, command in [("import", interop.import_command), ("export", interop.export_command),
                      ("sizes", training.list_sizes), ("train", training.train),
                      ("sweep", training.sweep), ("compare", training.compare),
                      ("eval", training.eval_run), ("report", training.report),
                      ("demo", pipelines.demo), ("replicate", pipelines.replicate),
                      ("site", web.site), ("regex", autointerp.regex_command),
                      ("serve", web.serve)]:
    app.command(name)(command)
app.add_typer(neurons.app, name="neurons")
app.add_typer(study.app, name="study")
app.add_typer(autointerp.app, name="autointerp")


def main() -> None:  # pragma: no cover - console entry point
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    app()


if __name__ == "__main__":
    sys.exit(main())
