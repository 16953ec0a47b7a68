"""The study database (SQLite): what annotators see, who they are, and what they said. All of
the study's SQL lives here.

Blinding lives in the schema. ``items`` and ``checks`` hold everything an annotator is shown;
``secrets`` (which model, layer and neuron an item is) and ``check_secrets`` (which activation
point and interval a section 6.4 example came from) are read only by ``solulab study report``;
no response ever includes them. Each annotator addresses items and examples by aliases of their
own (``orders``, ``check_orders``), drawn at random, so ids cannot be pooled between annotators
or matched to anything outside the study. Annotators are known by the sha256 of their token.

Ratings may be revised until the annotator finishes; finishing opens the section 6.4 examples
and makes the ratings final, so what the examples show cannot change a rating. The seconds spent
on an item are measured here, from when the server sent it to when its rating arrived; a rating
whose item was never sent before it arrived keeps 0 seconds, which is how the report knows an
item was rated without being opened.

The database and its journal files are readable by their owner only (0600, whatever the umask):
``secrets`` unblinds the study.

Every write is one ``BEGIN IMMEDIATE`` transaction in WAL mode with ``synchronous=FULL``: a rating
that was acknowledged survives a killed server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from solulab.errors import SolulabError

SCHEMA = """
CREATE TABLE IF NOT EXISTS study (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS secrets (
    item_id TEXT PRIMARY KEY REFERENCES items(id), model TEXT NOT NULL, run TEXT NOT NULL,
    layer INTEGER NOT NULL, neuron INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY, run TEXT NOT NULL, act_fn TEXT NOT NULL, n_params INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS annotators (
    name TEXT PRIMARY KEY, token_sha256 TEXT UNIQUE NOT NULL, finished_at TEXT);
CREATE TABLE IF NOT EXISTS orders (
    annotator TEXT NOT NULL REFERENCES annotators(name), position INTEGER NOT NULL,
    alias TEXT UNIQUE NOT NULL, item_id TEXT NOT NULL REFERENCES items(id),
    shown_at REAL, PRIMARY KEY (annotator, position));
CREATE TABLE IF NOT EXISTS ratings (
    annotator TEXT NOT NULL REFERENCES annotators(name), item_id TEXT NOT NULL REFERENCES items(id),
    label TEXT NOT NULL CHECK (label IN ('interpretable', 'not_interpretable')),
    hypothesis TEXT NOT NULL DEFAULT '', seconds REAL NOT NULL DEFAULT 0,
    revision INTEGER NOT NULL DEFAULT 1, updated_at TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (annotator, item_id));
CREATE TABLE IF NOT EXISTS checks (
    id TEXT PRIMARY KEY, item_id TEXT NOT NULL REFERENCES items(id), position INTEGER NOT NULL,
    payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS check_secrets (
    check_id TEXT NOT NULL REFERENCES checks(id), point TEXT NOT NULL,
    interval_index INTEGER NOT NULL, interval_count INTEGER NOT NULL,
    PRIMARY KEY (check_id, point));
CREATE TABLE IF NOT EXISTS check_orders (
    annotator TEXT NOT NULL REFERENCES annotators(name), alias TEXT UNIQUE NOT NULL,
    check_id TEXT NOT NULL REFERENCES checks(id), PRIMARY KEY (annotator, check_id));
CREATE TABLE IF NOT EXISTS check_labels (
    annotator TEXT NOT NULL REFERENCES annotators(name),
    check_id TEXT NOT NULL REFERENCES checks(id),
    consistent INTEGER NOT NULL CHECK (consistent IN (0, 1)),
    updated_at TEXT NOT NULL DEFAULT (datetime('now')), PRIMARY KEY (annotator, check_id));
"""

MAX_SECONDS_PER_VIEW = 3600.0  # a tab left open overnight counts as an hour


class StudyError(SolulabError):
    """A study database that is missing or not a study."""


class StudyConflict(SolulabError):
    """A request the study's state does not allow now (a rating after finishing, say)."""


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


OWNER_ONLY = 0o600
JOURNALS = ("-wal", "-shm", "-journal")


def owner_only(path: Path) -> None:
    """Take group and other permissions off the study at ``path`` and its journal files
    (SQLite gives new journal files the database's own mode)."""
    for file in (path, *(Path(f"{path}{suffix}") for suffix in JOURNALS)):
        try:
            if file.stat().st_mode & 0o077:
                os.chmod(file, OWNER_ONLY)
        except OSError:  # absent, or not ours to change
            pass


def connect(path: str | Path, create: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode with full syncs; refuses a path that is not a study. A new
    database is created owner-only; an existing one is made so."""
    path = Path(path)
    if create:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, OWNER_ONLY))
    elif not path.is_file():
        raise StudyError(f"{path} does not exist: create a study with `solulab study create`")
    owner_only(path)
    if not create and not _is_sqlite(path):
        raise StudyError(f"{path} is not a solulab study database (not even SQLite)")
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    if create:
        conn.executescript(SCHEMA)
    elif conn.execute("SELECT name FROM sqlite_master WHERE name='check_orders'").fetchone() \
            is None:
        conn.close()
        raise StudyError(f"{path} is not a solulab study database of this version")
    return conn


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


class Transaction:
    """``with Transaction(conn):`` runs the block in ``BEGIN IMMEDIATE`` ... ``COMMIT``.
    Writers of one process take turns on a lock first: SQLite's own wait for a busy database
    sleeps in steps of up to 100 ms, which made the slowest ratings wait seconds."""

    _writers = threading.Lock()

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self._writers.acquire()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._writers.release()
            raise
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self._writers.release()


# -- what `study create` writes ---------------------------------------------------------------

def add_settings(conn: sqlite3.Connection, settings: dict[str, Any]) -> None:
    conn.executemany("INSERT INTO study VALUES (?, ?)", [(k, str(v)) for k, v in settings.items()])


def setting(conn: sqlite3.Connection, key: str, default: str | None = None) -> str | None:
    row = conn.execute("SELECT value FROM study WHERE key = ?", (key,)).fetchone()
    return default if row is None else row["value"]


def display_name(conn: sqlite3.Connection) -> str:
    """How the study shades tokens; studies made before there was a choice used ``plain``."""
    return setting(conn, "display", "plain")


def add_model(conn: sqlite3.Connection, name: str, run: Path, act_fn: str, n_params: int) -> None:
    conn.execute("INSERT INTO models VALUES (?, ?, ?, ?)", (name, str(run), act_fn, n_params))


def add_item(conn: sqlite3.Connection, item_id: str, payload: dict, model: str, run: Path,
             layer: int, neuron: int) -> None:
    """An item: what annotators are shown, and (secret) which neuron it is."""
    conn.execute("INSERT INTO items VALUES (?, ?)", (item_id, json.dumps(payload)))
    conn.execute("INSERT INTO secrets VALUES (?, ?, ?, ?, ?)",
                 (item_id, model, str(run), layer, neuron))


def add_check(conn: sqlite3.Connection, check_id: str, item_id: str, position: int,
              payload: dict, sources: list[tuple[str, int, int]]) -> None:
    """A section 6.4 example and (secret) each (point, interval, intervals) it stands for."""
    conn.execute("INSERT INTO checks VALUES (?, ?, ?, ?)",
                 (check_id, item_id, position, json.dumps(payload)))
    conn.executemany("INSERT INTO check_secrets VALUES (?, ?, ?, ?)",
                     [(check_id, *source) for source in sources])


def add_annotator(conn: sqlite3.Connection, name: str, token: str,
                  items: list[tuple[str, str]], checks: list[tuple[str, str]]) -> None:
    """An annotator, their ``(alias, item id)`` pairs in order and ``(alias, check id)``."""
    conn.execute("INSERT INTO annotators (name, token_sha256) VALUES (?, ?)",
                 (name, token_sha256(token)))
    conn.executemany("INSERT INTO orders (annotator, position, alias, item_id) "
                     "VALUES (?, ?, ?, ?)", [(name, i, *pair) for i, pair in enumerate(items)])
    conn.executemany("INSERT INTO check_orders VALUES (?, ?, ?)",
                     [(name, *pair) for pair in checks])


# -- what the annotator's routes read and write ----------------------------------------------

def annotator_for(conn: sqlite3.Connection, token: str) -> str | None:
    """The annotator whose token this is, compared in constant time; None if none is."""
    digest = token_sha256(token)
    found = None
    for row in conn.execute("SELECT name, token_sha256 FROM annotators"):
        if hmac.compare_digest(row["token_sha256"], digest):
            found = row["name"]
    return found


def is_finished(conn: sqlite3.Connection, annotator: str) -> bool:
    return conn.execute("SELECT finished_at FROM annotators WHERE name = ?",
                        (annotator,)).fetchone()["finished_at"] is not None


def item_list(conn: sqlite3.Connection, annotator: str) -> dict[str, Any]:
    """The annotator's items in their order, each with their own label, and the progress."""
    rows = conn.execute(
        "SELECT o.alias, r.label, r.hypothesis FROM orders o LEFT JOIN ratings r "
        "ON r.annotator = o.annotator AND r.item_id = o.item_id WHERE o.annotator = ? "
        "ORDER BY o.position", (annotator,)).fetchall()
    items = [{"id": r["alias"], "label": r["label"], "hypothesis": r["hypothesis"] or ""}
             for r in rows]
    return {"items": items, "done": sum(i["label"] is not None for i in items),
            "total": len(items), "finished": is_finished(conn, annotator),
            "display": display_name(conn)}


def _item_id(conn: sqlite3.Connection, annotator: str, alias: str) -> tuple[str, int] | None:
    row = conn.execute("SELECT item_id, position FROM orders WHERE annotator = ? AND alias = ?",
                       (annotator, alias)).fetchone()
    return None if row is None else (row["item_id"], row["position"])


def show_item(conn: sqlite3.Connection, annotator: str, alias: str) -> dict[str, Any] | None:
    """One item as the annotator sees it, noting when it was sent; None if not theirs."""
    found = _item_id(conn, annotator, alias)
    if found is None:
        return None
    item_id, position = found
    with Transaction(conn):
        conn.execute("UPDATE orders SET shown_at = ? WHERE annotator = ? AND alias = ?",
                     (time.time(), annotator, alias))
    payload = conn.execute("SELECT payload FROM items WHERE id = ?", (item_id,)).fetchone()
    rating = conn.execute("SELECT label, hypothesis FROM ratings WHERE annotator = ? AND "
                          "item_id = ?", (annotator, item_id)).fetchone()
    return {"id": alias, "position": position, **json.loads(payload["payload"]),
            "label": rating["label"] if rating else None,
            "hypothesis": rating["hypothesis"] if rating else ""}


def save_rating(conn: sqlite3.Connection, annotator: str, alias: str, label: str,
                hypothesis: str) -> int | None:
    """Store (or revise) a rating; returns its revision, None if the item is not theirs.
    The seconds since the server sent the item are added to the rating's time."""
    found = _item_id(conn, annotator, alias)
    if found is None:
        return None
    with Transaction(conn):
        if is_finished(conn, annotator):
            raise StudyConflict("your ratings are final: you finished the study")
        shown = conn.execute("SELECT shown_at FROM orders WHERE annotator = ? AND alias = ?",
                             (annotator, alias)).fetchone()["shown_at"]
        seconds = 0.0 if shown is None else min(max(time.time() - shown, 0.0),
                                                MAX_SECONDS_PER_VIEW)
        conn.execute("UPDATE orders SET shown_at = NULL WHERE annotator = ? AND alias = ?",
                     (annotator, alias))
        conn.execute(
            "INSERT INTO ratings (annotator, item_id, label, hypothesis, seconds) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (annotator, item_id) DO UPDATE SET "
            "label = excluded.label, hypothesis = excluded.hypothesis, "
            "seconds = seconds + excluded.seconds, revision = revision + 1, "
            "updated_at = datetime('now')",
            (annotator, found[0], label, hypothesis, seconds))
        return conn.execute("SELECT revision FROM ratings WHERE annotator = ? AND item_id = ?",
                            (annotator, found[0])).fetchone()["revision"]


def finish(conn: sqlite3.Connection, annotator: str) -> None:
    """Make the annotator's ratings final and open their section 6.4 examples."""
    with Transaction(conn):
        left = conn.execute(
            "SELECT COUNT(*) FROM orders o LEFT JOIN ratings r ON r.annotator = o.annotator "
            "AND r.item_id = o.item_id WHERE o.annotator = ? AND r.label IS NULL",
            (annotator,)).fetchone()[0]
        if left:
            raise StudyConflict(f"{left} neurons are not rated yet: rate every neuron first")
        conn.execute("UPDATE annotators SET finished_at = COALESCE(finished_at, datetime('now')) "
                     "WHERE name = ?", (annotator,))


def check_groups(conn: sqlite3.Connection, annotator: str) -> dict[str, Any]:
    """After finishing: one group per neuron the annotator found interpretable with a
    hypothesis, its examples in their stored (shuffled) order, with the annotator's labels,
    and how many are still unlabelled (0: the study is complete; None before finishing)."""
    if not is_finished(conn, annotator):
        return {"open": False, "groups": [], "unlabelled": None}
    rows = conn.execute(
        "SELECT o.alias AS item, k.alias, c.payload, r.hypothesis, l.consistent FROM ratings r "
        "JOIN orders o ON o.annotator = r.annotator AND o.item_id = r.item_id "
        "JOIN checks c ON c.item_id = r.item_id "
        "JOIN check_orders k ON k.annotator = r.annotator AND k.check_id = c.id "
        "LEFT JOIN check_labels l ON l.annotator = r.annotator AND l.check_id = c.id "
        "WHERE r.annotator = ? AND r.label = 'interpretable' AND r.hypothesis != '' "
        "ORDER BY o.position, c.position", (annotator,)).fetchall()
    groups: dict[str, dict] = {}
    for r in rows:
        group = groups.setdefault(r["item"], {"id": r["item"], "hypothesis": r["hypothesis"],
                                              "checks": []})
        consistent = None if r["consistent"] is None else bool(r["consistent"])
        group["checks"].append({"id": r["alias"], **json.loads(r["payload"]),
                                "consistent": consistent})
    unlabelled = sum(c["consistent"] is None for g in groups.values() for c in g["checks"])
    return {"open": True, "groups": list(groups.values()), "unlabelled": unlabelled}


def save_check_label(conn: sqlite3.Connection, annotator: str, alias: str,
                     consistent: bool) -> bool:
    """Label one of the annotator's open examples; False if it is not open to them."""
    with Transaction(conn):
        row = conn.execute(
            "SELECT k.check_id FROM check_orders k JOIN checks c ON c.id = k.check_id "
            "JOIN ratings r ON r.annotator = k.annotator AND r.item_id = c.item_id "
            "JOIN annotators a ON a.name = k.annotator WHERE k.annotator = ? AND k.alias = ? "
            "AND r.label = 'interpretable' AND r.hypothesis != '' "
            "AND a.finished_at IS NOT NULL", (annotator, alias)).fetchone()
        if row is None:
            return False
        conn.execute("INSERT INTO check_labels (annotator, check_id, consistent) "
                     "VALUES (?, ?, ?) ON CONFLICT (annotator, check_id) DO UPDATE SET "
                     "consistent = excluded.consistent, updated_at = datetime('now')",
                     (annotator, row["check_id"], int(consistent)))
    return True


# -- what `study report` reads ----------------------------------------------------------------
# Ratings count once their annotator pressed Finish; ``unfinished=True`` counts the others too.

FINISHED = "(a.finished_at IS NOT NULL OR ?)"


def unfinished_annotators(conn: sqlite3.Connection) -> list[str]:
    return [row["name"] for row in conn.execute(
        "SELECT name FROM annotators WHERE finished_at IS NULL ORDER BY name")]


def unblinded_ratings(conn: sqlite3.Connection, unfinished: bool = False
                      ) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(
        "SELECT r.annotator, s.model, m.act_fn, m.n_params, s.layer, s.neuron, r.label, "
        "r.hypothesis, r.seconds, r.revision, r.updated_at, r.item_id FROM ratings r "
        "JOIN secrets s ON s.item_id = r.item_id JOIN models m ON m.name = s.model "
        f"JOIN annotators a ON a.name = r.annotator WHERE {FINISHED} "
        "ORDER BY s.model, s.layer, s.neuron, r.annotator", (unfinished,))]


def unblinded_check_labels(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """One row per label and activation point (an example drawn at both points counts for
    both)."""
    return [dict(row) for row in conn.execute(
        "SELECT l.annotator, s.model, m.act_fn, s.layer, s.neuron, x.point, x.interval_index, "
        "x.interval_count, l.consistent FROM check_labels l JOIN checks c ON c.id = l.check_id "
        "JOIN check_secrets x ON x.check_id = c.id JOIN secrets s ON s.item_id = c.item_id "
        "JOIN models m ON m.name = s.model "
        "ORDER BY s.model, s.layer, s.neuron, x.point, x.interval_index")]


def sampled_neurons(conn: sqlite3.Connection) -> list[tuple[str, int, int]]:
    """``(run, layer, neuron)`` of every item."""
    return [tuple(row) for row in conn.execute("SELECT run, layer, neuron FROM secrets")]


def neuron_labels(conn: sqlite3.Connection, unfinished: bool = False) -> list[sqlite3.Row]:
    """Every rating with its run, layer and neuron (for comparing with automated labels)."""
    return conn.execute("SELECT r.annotator, s.run, s.layer, s.neuron, r.label FROM ratings r "
                        "JOIN secrets s ON s.item_id = r.item_id "
                        f"JOIN annotators a ON a.name = r.annotator WHERE {FINISHED}",
                        (unfinished,)).fetchall()


def shown_payloads(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Per item: its model and everything an annotator can be shown of it (the item's
    snippets and its section 6.4 examples), for the blinding audit."""
    checks: dict[str, list[dict]] = {}
    for row in conn.execute("SELECT item_id, payload FROM checks ORDER BY item_id, position"):
        checks.setdefault(row["item_id"], []).append(json.loads(row["payload"]))
    return [{"model": row["model"], "act_fn": row["act_fn"], "item": json.loads(row["payload"]),
             "checks": checks.get(row["id"], [])}
            for row in conn.execute("SELECT i.id, i.payload, s.model, m.act_fn FROM items i "
                                    "JOIN secrets s ON s.item_id = i.id "
                                    "JOIN models m ON m.name = s.model ORDER BY s.model, i.id")]


def models(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute("SELECT * FROM models ORDER BY n_params, name")]
