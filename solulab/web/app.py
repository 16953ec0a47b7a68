"""``solulab serve``: the neuron viewer or the blinded study, never both from one server.

An annotator who could reach the viewer could match the study's items to neurons and models, so
the study is served alone: ``study_app`` has the annotator's routes and nothing else. Both apps
answer only to the host names they are given (loopback by default) and go through
``solulab.web.guard``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from solulab.errors import SolulabError
from solulab.web.guard import LOOPBACK_NAMES, guarded
from solulab.web.study_pages import STATIC, study_router
from solulab.web.viewer import viewer_router

STATIC_FILES = {"viewer": {"style.css", "explorer.js"}, "study": {"style.css", "study.js"}}


WILDCARDS = {"0.0.0.0", "::", ""}


def serving_hosts(bind: str, extra: list[str]) -> frozenset[str]:
    """The Host names a server bound to ``bind`` answers to: loopback, ``bind`` itself unless it
    is a wildcard, and ``extra``. A wildcard bind without ``extra`` is refused."""
    if bind in WILDCARDS and not extra:
        raise SolulabError(f"--host {bind or '(all)'} listens on every interface: name the host "
                           "clients will use with --allow-host (e.g. --allow-host myserver.lab), "
                           "so other sites' pages cannot read this server (DNS rebinding)")
    names = {bind if ":" not in bind else f"[{bind}]"} - {"[::]"} - WILDCARDS
    return LOOPBACK_NAMES | names | {name.lower() for name in extra}


def _app(kind: str, allowed_hosts: frozenset[str]) -> FastAPI:
    app = FastAPI(title=f"solulab {kind}", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/static/{name}")
    def static(name: str):
        if name not in STATIC_FILES[kind]:
            raise HTTPException(404, "no such file")
        return FileResponse(STATIC / name)

    return guarded(app, allowed_hosts)


def viewer_app(runs: Path, allowed_hosts: frozenset[str] = LOOPBACK_NAMES) -> FastAPI:
    app = _app("viewer", allowed_hosts)

    root = f"{runs.resolve()}{os.sep}"

    @app.exception_handler(SolulabError)
    def not_found(_, error: SolulabError):
        """Bad layers, neurons or points reach the store as SolulabErrors: no such page. Paths
        are told relative to ``runs``: no response names a directory of the machine."""
        return JSONResponse({"detail": str(error).replace(root, "")}, status_code=404)

    app.include_router(viewer_router(runs))
    return app


STUDY_ROOT = """<!doctype html><html><head><meta charset=utf-8><title>Neuron study</title>
<link rel=stylesheet href=/static/style.css></head><body><h1>A blinded neuron study</h1>
<p>This server holds a blinded study of language-model neurons. Annotators: open the personal
link you were given (it ends in <code>/study/</code> and your secret token). Nothing else is
served here.</p></body></html>"""


def study_app(study: Path, allowed_hosts: frozenset[str] = LOOPBACK_NAMES) -> FastAPI:
    app = _app("study", allowed_hosts)

    @app.get("/", response_class=HTMLResponse)
    def root():
        """What this server is, for someone who opens its address without a link."""
        return STUDY_ROOT

    app.include_router(study_router(study))
    return app


def check_port_free(host: str, port: int) -> None:
    """A one-line error, before anything is printed, when ``port`` on ``host`` is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise SolulabError(f"cannot listen on {host}:{port} ({e.strerror}): another server "
                               f"(a second `solulab serve`?) has it; choose another with "
                               f"--port, e.g. --port {port + 1}") from None
