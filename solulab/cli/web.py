"""Serving and exporting neurons: ``serve`` (the viewer or the blinded study) and ``site``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from solulab.cli.exits import reports_errors, stops_cleanly
from solulab.errors import SolulabError


@reports_errors
def site(
    runs: list[Path] = typer.Argument(..., help="Run directories with neuron stores."),
    out: Path = typer.Option(..., help="The site's directory (replaced whole when re-run)."),
    examples: int = typer.Option(10, help="Top examples per neuron."),
):
    """A static explorer of RUNS' neurons (HTML + JSON) that works from file:// and on any
    static host: the searchable table and a page per neuron."""
    import time

    from solulab.web.site import export_site

    started = time.perf_counter()
    with stops_cleanly(f"{out} is as it was before"):
        summary = export_site(runs, out, examples)
    typer.echo(f"site: {summary.path / 'index.html'}  ({summary.runs} runs, "
               f"{summary.neurons:,} neurons, {summary.files:,} files, "
               f"{summary.bytes / 2**20:.1f} MiB, {time.perf_counter() - started:.1f} s)")


@reports_errors
def serve(
    runs: Optional[Path] = typer.Option(None, help="Directory of runs with neuron stores: the "
                                        "viewer."),
    study: Optional[Path] = typer.Option(None, help="Study database: the annotators' pages."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (127.0.0.1: this machine)."),
    port: int = typer.Option(8000, help="Port."),
    allow_host: list[str] = typer.Option([], help="A host name clients may use besides "
                                         "loopback (repeatable); needed with --host 0.0.0.0."),
):
    """The neuron viewer (--runs) or the blinded study (--study), one per server."""
    import uvicorn

    from solulab.web import app as web

    if (runs is None) == (study is None):
        raise SolulabError(
            "give --runs (the viewer) or --study (the annotators' pages), not both: an annotator "
            "who can reach the viewer can unblind the study. Serve them as two servers, e.g. "
            "`solulab serve --study S` and `solulab serve --runs R --port 8001`")
    hosts = web.serving_hosts(host, allow_host)
    if runs is not None:
        if not runs.is_dir():
            raise SolulabError(f"--runs {runs} is not a directory")
        server, what = web.viewer_app(runs, hosts), "viewer"
    else:
        from solulab.study.db import connect

        connect(study).close()  # refuses a missing or foreign file now, not per request
        server, what = web.study_app(study, hosts), "study (annotator links: /study/TOKEN)"
    web.check_port_free(host, port)
    typer.echo(f"{what}: http://{host}:{port}/")
    uvicorn.run(server, host=host, port=port, log_level="warning")
