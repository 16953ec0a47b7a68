"""``solulab serve``: the neuron viewer and the study pages, one FastAPI app.

Viewer: ``/`` (runs with a neuron store under ``--runs``), ``/run?run=R``, and
``/neuron?run=R&layer=L&neuron=N&point=mid|post`` (shareable). Study: ``/study/{token}`` and a
JSON API under ``/api/study/{token}/...`` that reads only the study's blinded tables. A missing
or wrong token is a 403, an unknown id a 404, a malformed body a 422; none of them a 500.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from solulab.autointerp.run import load_explanations
from solulab.errors import SolulabError
from solulab.neurons.collect import STORE_DIR
from solulab.neurons.store import META_FILE, NeuronStore
from solulab.study.db import Transaction, annotator_for, connect
from solulab.web import pages

STATIC = Path(__file__).parent / "static"


class Rating(BaseModel):
    label: Literal["interpretable", "not_interpretable"]
    hypothesis: str = Field("", max_length=2000)
    seconds: float = Field(0.0, ge=0, le=86_400)


class CheckLabel(BaseModel):
    consistent: bool


def find_runs(root: Path) -> list[str]:
    """Run directories under ``root`` (itself included) that hold a neuron store."""
    found = [p.parent.parent for p in root.rglob(f"{STORE_DIR}/{META_FILE}")]
    return sorted(str(p.relative_to(root)) if p != root else "." for p in found)


def create_app(runs: Path | None = None, study: Path | None = None) -> FastAPI:
    app = FastAPI(title="solulab", docs_url=None, redoc_url=None, openapi_url=None)
    root = runs.resolve() if runs else None
    stores: dict[str, NeuronStore] = {}

    def store_for(run: str) -> NeuronStore:
        if root is None:
            raise HTTPException(404, "this server was started without --runs")
        path = (root / run).resolve()
        if not path.is_relative_to(root) or not (path / STORE_DIR / META_FILE).is_file():
            raise HTTPException(404, f"no run with a neuron store named {run!r}")
        if run not in stores:
            stores[run] = NeuronStore.open(path / STORE_DIR)
        return stores[run]

    @app.exception_handler(SolulabError)
    def not_found(_, error: SolulabError):
        """Bad layers, neurons or points reach the store as SolulabErrors: no such page."""
        return JSONResponse({"detail": str(error)}, status_code=404)

    @app.get("/static/{name}")
    def static(name: str):
        path = STATIC / name
        if name not in {p.name for p in STATIC.iterdir()}:
            raise HTTPException(404, "no such file")
        return FileResponse(path)

    # -- viewer ---------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def index():
        return pages.runs_page(find_runs(root) if root else [])

    @app.get("/run", response_class=HTMLResponse)
    def run_view(run: str):
        return pages.run_page(run, store_for(run))

    @app.get("/neuron", response_class=HTMLResponse)
    def neuron_view(run: str, layer: int, neuron: int, point: str | None = Query(None)):
        store = store_for(run)
        point = point or store.main_point
        store.stats(layer, neuron, point)  # validates layer, neuron and point
        other = random.Random(f"{run}:{layer}:{neuron}").randrange(store.d_mlp)
        explanation = load_explanations(store.path).get((layer, neuron))
        return pages.neuron_page(run, store, layer, neuron, point, other, explanation)

    # -- study ----------------------------------------------------------------------------
    def db():
        if study is None:
            raise HTTPException(404, "this server was started without --study")
        return connect(study)

    def annotator(conn, token: str) -> str:
        name = annotator_for(conn, token)
        if name is None:
            conn.close()
            raise HTTPException(403, "unknown or missing study token: use your own link")
        return name

    def owned_item(conn, name: str, item_id: str) -> int:
        row = conn.execute("SELECT position FROM orders WHERE annotator = ? AND item_id = ?",
                           (name, item_id)).fetchone()
        if row is None:
            conn.close()
            raise HTTPException(404, f"no item {item_id!r} in your study")
        return row["position"]

    @app.get("/study/{token}", response_class=HTMLResponse)
    def study_page(token: str):
        conn = db()
        annotator(conn, token)
        conn.close()
        return (STATIC / "study.html").read_text()

    @app.get("/api/study/{token}/items")
    def study_items(token: str):
        conn = db()
        name = annotator(conn, token)
        rows = conn.execute(
            "SELECT o.item_id, r.label, r.hypothesis FROM orders o LEFT JOIN ratings r "
            "ON r.annotator = o.annotator AND r.item_id = o.item_id WHERE o.annotator = ? "
            "ORDER BY o.position", (name,)).fetchall()
        conn.close()
        items = [{"id": r["item_id"], "label": r["label"], "hypothesis": r["hypothesis"] or ""}
                 for r in rows]
        return {"items": items, "done": sum(i["label"] is not None for i in items),
                "total": len(items)}

    @app.get("/api/study/{token}/items/{item_id}")
    def study_item(token: str, item_id: str):
        conn = db()
        name = annotator(conn, token)
        position = owned_item(conn, name, item_id)
        payload = conn.execute("SELECT payload FROM items WHERE id = ?", (item_id,)).fetchone()
        rating = conn.execute("SELECT label, hypothesis FROM ratings WHERE annotator = ? AND "
                              "item_id = ?", (name, item_id)).fetchone()
        conn.close()
        return {"id": item_id, "position": position, **json.loads(payload["payload"]),
                "label": rating["label"] if rating else None,
                "hypothesis": rating["hypothesis"] if rating else ""}

    @app.put("/api/study/{token}/ratings/{item_id}")
    def rate(token: str, item_id: str, rating: Rating):
        conn = db()
        name = annotator(conn, token)
        owned_item(conn, name, item_id)
        with Transaction(conn):
            conn.execute(
                "INSERT INTO ratings (annotator, item_id, label, hypothesis, seconds) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (annotator, item_id) DO UPDATE SET "
                "label = excluded.label, hypothesis = excluded.hypothesis, "
                "seconds = seconds + excluded.seconds, revision = revision + 1, "
                "updated_at = datetime('now')",
                (name, item_id, rating.label, rating.hypothesis.strip(), rating.seconds))
            revision = conn.execute("SELECT revision FROM ratings WHERE annotator = ? AND "
                                    "item_id = ?", (name, item_id)).fetchone()["revision"]
        conn.close()
        return {"ok": True, "revision": revision}

    @app.get("/api/study/{token}/checks")
    def study_checks(token: str):
        """Section 6.4 groups: open once every item is rated, one per neuron the annotator
        found interpretable with a hypothesis."""
        conn = db()
        name = annotator(conn, token)
        left = conn.execute("SELECT COUNT(*) FROM orders o LEFT JOIN ratings r ON "
                            "r.annotator = o.annotator AND r.item_id = o.item_id "
                            "WHERE o.annotator = ? AND r.label IS NULL", (name,)).fetchone()[0]
        if left:
            conn.close()
            return {"open": False, "groups": []}
        rows = conn.execute(
            "SELECT c.group_id, c.id, c.payload, r.hypothesis, l.consistent FROM checks c "
            "JOIN check_secrets s ON s.check_id = c.id JOIN ratings r ON r.item_id = s.item_id "
            "AND r.annotator = ? LEFT JOIN check_labels l ON l.check_id = c.id AND "
            "l.annotator = ? WHERE r.label = 'interpretable' AND r.hypothesis != '' "
            "ORDER BY c.group_id, c.position", (name, name)).fetchall()
        conn.close()
        groups: dict[str, dict] = {}
        for r in rows:
            group = groups.setdefault(r["group_id"], {"id": r["group_id"],
                                                      "hypothesis": r["hypothesis"], "checks": []})
            consistent = None if r["consistent"] is None else bool(r["consistent"])
            group["checks"].append({"id": r["id"], **json.loads(r["payload"]),
                                    "consistent": consistent})
        return {"open": True, "groups": list(groups.values())}

    @app.put("/api/study/{token}/checks/{check_id}")
    def label_check(token: str, check_id: str, label: CheckLabel):
        conn = db()
        name = annotator(conn, token)
        allowed = conn.execute(
            "SELECT 1 FROM check_secrets s JOIN ratings r ON r.item_id = s.item_id AND "
            "r.annotator = ? WHERE s.check_id = ? AND r.label = 'interpretable'",
            (name, check_id)).fetchone()
        if allowed is None:
            conn.close()
            raise HTTPException(404, f"no example {check_id!r} open to you")
        with Transaction(conn):
            conn.execute("INSERT INTO check_labels (annotator, check_id, consistent) "
                         "VALUES (?, ?, ?) ON CONFLICT (annotator, check_id) DO UPDATE SET "
                         "consistent = excluded.consistent, updated_at = datetime('now')",
                         (name, check_id, int(label.consistent)))
        conn.close()
        return {"ok": True}

    return app
