"""The study's routes: the annotator's page ``/study/{token}`` and its JSON API under
``/api/study/{token}/...``. The token is checked before anything else of a request is read;
a missing or wrong token is a 403, an id that is not the annotator's a 404, a malformed body (or
INTERPRETABLE without a hypothesis) a 422, a rating after finishing a 409. The SQL is in
``solulab.study.db``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.concurrency import run_in_threadpool

from solulab.study import db
from solulab.web.guard import read_json

STATIC = Path(__file__).parent / "static"
MAX_TOKEN_LENGTH = 128


class Rating(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: Literal["interpretable", "not_interpretable"]
    hypothesis: str = Field("", max_length=2000)

    @field_validator("hypothesis")
    @classmethod
    def printable(cls, text: str) -> str:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("the hypothesis is not valid Unicode text") from None
        if any(ord(c) < 32 and c not in "\n\t" for c in text):
            raise ValueError("the hypothesis holds control characters")
        return text.strip()

    @model_validator(mode="after")
    def explained(self) -> "Rating":
        if self.label == "interpretable" and not self.hypothesis:
            raise ValueError("an interpretable neuron needs its hypothesis: write the rule that "
                             "explains its firings")
        return self


class CheckLabel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    consistent: bool


def study_router(study: Path) -> APIRouter:
    router = APIRouter()

    def connection() -> Iterator[sqlite3.Connection]:
        conn = db.connect(study)
        try:
            yield conn
        finally:
            conn.close()

    def annotator(token: str, conn: sqlite3.Connection = Depends(connection)) -> str:
        name = db.annotator_for(conn, token) if len(token) <= MAX_TOKEN_LENGTH else None
        if name is None:
            raise HTTPException(403, "unknown or missing study token: use your own link")
        return name

    @router.get("/study/{token}", response_class=HTMLResponse,
                dependencies=[Depends(annotator)])
    def study_page():
        return (STATIC / "study.html").read_text()

    @router.get("/api/study/{token}/items")
    def items(name: str = Depends(annotator), conn=Depends(connection)):
        return db.item_list(conn, name)

    @router.get("/api/study/{token}/items/{alias}")
    def item(alias: str, name: str = Depends(annotator), conn=Depends(connection)):
        shown = db.show_item(conn, name, alias)
        if shown is None:
            raise HTTPException(404, "no such item in your study")
        return shown

    @router.put("/api/study/{token}/ratings/{alias}")
    async def rate(alias: str, request: Request, name: str = Depends(annotator),
                   conn=Depends(connection)):
        rating = await read_json(request, Rating)
        try:
            revision = await run_in_threadpool(db.save_rating, conn, name, alias, rating.label,
                                               rating.hypothesis)
        except db.StudyConflict as e:
            raise HTTPException(409, str(e)) from None
        if revision is None:
            raise HTTPException(404, "no such item in your study")
        return {"ok": True, "revision": revision}

    @router.post("/api/study/{token}/finish")
    def finish(name: str = Depends(annotator), conn=Depends(connection)):
        try:
            db.finish(conn, name)
        except db.StudyConflict as e:
            raise HTTPException(409, str(e)) from None
        return {"ok": True}

    @router.get("/api/study/{token}/checks")
    def checks(name: str = Depends(annotator), conn=Depends(connection)):
        return db.check_groups(conn, name)

    @router.put("/api/study/{token}/checks/{alias}")
    async def label_check(alias: str, request: Request, name: str = Depends(annotator),
                          conn=Depends(connection)):
        label = await read_json(request, CheckLabel)
        if not await run_in_threadpool(db.save_check_label, conn, name, alias,
                                       label.consistent):
            raise HTTPException(404, "no such example open to you")
        return {"ok": True}

    return router
