"""Fixtures of the record's tests: SQLite and PostgreSQL (the backlog's real throwaway server), a chain of two
interleaved sites, and an attacker who can write the database behind the application's back."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from blackbox.chain import GENESIS, NewEntry, Recorder, canonical_payload, entry_hash
from tests.backlog.conftest import db_url, pg_server, pg_url  # noqa: F401 (fixtures: SQLite and PostgreSQL)

SITE, OTHER = "s-1", "s-2"
KINDS = ("readings", "finding", "ticket", "delivery")


@pytest.fixture
def recorder(db_url) -> Iterator[Recorder]:  # noqa: F811
    rec = Recorder(db_url)
    yield rec
    rec.close()


def build(rec: Recorder, n: int = 12) -> None:
    """``n`` entries for SITE, each followed by one for OTHER (so row ids of a site are not consecutive)."""
    for i in range(1, n + 1):
        rec.record([NewEntry(SITE, KINDS[i % 4], 1_791_000_000_000 + i * 1000, {"n": i, "what": f"entry {i}"})])
        rec.record([NewEntry(OTHER, "finding", 1_791_000_000_000 + i * 1000, {"n": i})])


@contextmanager
def attacker(engine: Engine) -> Iterator[Connection]:
    """A transaction with the append-only triggers out of the way: someone with the database owner's rights
    (PostgreSQL: replication role; SQLite: whoever holds the file)."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            for t in ("blackbox_entries", "blackbox_checkpoints"):
                for op in ("update", "delete"):
                    conn.execute(text(f"DROP TRIGGER IF EXISTS {t}_no_{op}"))
        yield conn


def rows(conn_or_engine, site: str = SITE) -> dict[int, dict]:
    q = text("SELECT id, seq, kind, at_ms, payload, prev, hash FROM blackbox_entries WHERE site = :s ORDER BY seq, id")
    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.connect() as c:
            return {r.seq: dict(r._mapping) for r in c.execute(q, {"s": site})}
    return {r.seq: dict(r._mapping) for r in conn_or_engine.execute(q, {"s": site})}


def rehash(conn: Connection, site: str = SITE, from_seq: int = 1) -> None:
    """Recompute every hash from ``from_seq`` on, as a careful forger would, and fix the head row too."""
    rs = rows(conn, site)
    prev = rs[from_seq - 1]["hash"] if from_seq > 1 else GENESIS
    seq = from_seq - 1
    for seq in sorted(s for s in rs if s >= from_seq):
        r = rs[seq]
        h = entry_hash(prev, site, seq, r["kind"], r["at_ms"], r["payload"])
        conn.execute(text("UPDATE blackbox_entries SET prev = :p, hash = :h WHERE id = :id"),
                     {"p": prev, "h": h, "id": r["id"]})
        prev = h
    conn.execute(text("UPDATE blackbox_heads SET seq = :q, hash = :h WHERE site = :s"),
                 {"q": seq, "h": prev, "s": site})


def payload(d: dict) -> str:
    return canonical_payload(d)
