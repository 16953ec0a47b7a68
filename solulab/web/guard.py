"""What every solulab server does before and after its routes: refuse requests for other host
names (DNS rebinding), refuse bodies over a size limit before reading them whole, answer bad
input with a 4xx that echoes none of it, and send security headers with every response.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("solulab.web")

MAX_BODY_BYTES = 64 * 1024
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy",
     b"default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
     b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
]


def host_name(header: str) -> str:
    """The Host header without its port (``[::1]:8000`` -> ``[::1]``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class BodyTooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: the allowed Host names, the body limit, the security headers."""

    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str],
                 max_body: int = MAX_BODY_BYTES):
        self.app, self.allowed_hosts, self.max_body = app, allowed_hosts, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if host_name(headers.get("host", "")) not in self.allowed_hosts:
            await self._refuse(send, 400, "unknown Host: this server answers only to "
                               + ", ".join(sorted(self.allowed_hosts)))
            return
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > self.max_body:
            await self._refuse(send, 413, f"request bodies are limited to {self.max_body} bytes")
            return
        received, started = 0, False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise BodyTooLarge
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = list(message.get("headers", [])) + HEADERS
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, 413, f"request bodies are limited to {self.max_body} "
                                   "bytes")

    @staticmethod
    async def _refuse(send: Send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())] + HEADERS})
        await send({"type": "http.response.body", "body": body})


def safe_errors(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Validation errors as where and what, without the input that caused them."""
    def text(value: Any) -> str:
        return str(value)[:64].encode("utf-8", "replace").decode("utf-8")

    return [{"loc": ".".join(text(part) for part in e.get("loc", ())), "msg": text(e["msg"])}
            for e in errors]


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


async def read_json(request: Request, model: type[BaseModel]) -> BaseModel:
    """The request body as ``model``: strict JSON (no NaN or Infinity), a 422 otherwise. A
    client that hangs up before its body arrives is one line in the log, not a traceback."""
    try:
        raw = await request.body()
    except ClientDisconnect:
        # The path is not logged: a study's holds the annotator's secret token.
        log.warning("a %s request's client disconnected before sending its whole body",
                    request.method)
        raise HTTPException(400, "the request body was not received whole") from None
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # bad UTF-8, bad JSON, NaN, nesting too deep
        raise HTTPException(422, "the body is not valid JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise HTTPException(422, safe_errors(error.errors())) from None


def guarded(app: FastAPI, allowed_hosts: frozenset[str]) -> FastAPI:
    """Install the guard and an input-free 422 handler on ``app``."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_, error: RequestValidationError):
        return JSONResponse({"detail": safe_errors(error.errors())}, status_code=422)

    app.add_middleware(Guard, allowed_hosts=allowed_hosts)
    return app
