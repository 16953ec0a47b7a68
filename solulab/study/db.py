"""The study database (SQLite): what annotators see, who they are, and what they said.

Blinding lives in the schema. ``items`` and ``checks`` hold everything an annotator is shown,
keyed by opaque random ids; ``secrets`` (which model, layer and neuron an item is) and
``check_secrets`` (which neuron, activation point and interval a 6.4 example came from) are read
only by ``solulab study report`` and, to pick an annotator's own hypothesis, the server; no
response ever includes them. Annotators are known by the sha256 of their secret token.

Every write is one ``BEGIN IMMEDIATE`` transaction in WAL mode with ``synchronous=FULL``: a rating
that was acknowledged survives a killed server.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from pathlib import Path

from solulab.errors import SolulabError

SCHEMA = """
CREATE TABLE IF NOT EXISTS study (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS secrets (
    item_id TEXT PRIMARY KEY REFERENCES items(id), model TEXT NOT NULL, run TEXT NOT NULL,
    layer INTEGER NOT NULL, neuron INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY, run TEXT NOT NULL, act_fn TEXT NOT NULL, n_params INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS annotators (name TEXT PRIMARY KEY, token_sha256 TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    annotator TEXT NOT NULL REFERENCES annotators(name), position INTEGER NOT NULL,
    item_id TEXT NOT NULL REFERENCES items(id), PRIMARY KEY (annotator, position));
CREATE TABLE IF NOT EXISTS ratings (
    annotator TEXT NOT NULL REFERENCES annotators(name), item_id TEXT NOT NULL REFERENCES items(id),
    label TEXT NOT NULL CHECK (label IN ('interpretable', 'not_interpretable')),
    hypothesis TEXT NOT NULL DEFAULT '', seconds REAL NOT NULL DEFAULT 0,
    revision INTEGER NOT NULL DEFAULT 1, updated_at TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (annotator, item_id));
CREATE TABLE IF NOT EXISTS checks (
    id TEXT PRIMARY KEY, group_id TEXT NOT NULL, position INTEGER NOT NULL, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS check_secrets (
    check_id TEXT PRIMARY KEY REFERENCES checks(id), item_id TEXT NOT NULL REFERENCES items(id),
    point TEXT NOT NULL, interval_index INTEGER NOT NULL, interval_count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS check_labels (
    annotator TEXT NOT NULL REFERENCES annotators(name),
    check_id TEXT NOT NULL REFERENCES checks(id),
    consistent INTEGER NOT NULL CHECK (consistent IN (0, 1)),
    updated_at TEXT NOT NULL DEFAULT (datetime('now')), PRIMARY KEY (annotator, check_id));
"""


class StudyError(SolulabError):
    """A study database that is missing or not a study."""


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def connect(path: str | Path, create: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode with full syncs; refuses a path that is not a study."""
    path = Path(path)
    if not create and not path.is_file():
        raise StudyError(f"{path} does not exist: create a study with `solulab study create`")
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    if create:
        conn.executescript(SCHEMA)
    elif conn.execute("SELECT name FROM sqlite_master WHERE name='ratings'").fetchone() is None:
        conn.close()
        raise StudyError(f"{path} is not a solulab study database")
    return conn


class Transaction:
    """``with Transaction(conn):`` runs the block in ``BEGIN IMMEDIATE`` ... ``COMMIT``."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def annotator_for(conn: sqlite3.Connection, token: str) -> str | None:
    """The annotator whose token this is, compared in constant time; None if none is."""
    digest = token_sha256(token)
    for row in conn.execute("SELECT name, token_sha256 FROM annotators"):
        if hmac.compare_digest(row["token_sha256"], digest):
            return row["name"]
    return None
