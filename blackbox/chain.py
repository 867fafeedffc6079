"""Entries, their canonical encoding and hash, and appending them with per-site sequencing.

An entry is (site, seq, kind, at_ms, payload). Its canonical encoding is deterministic JSON (sorted keys, no
whitespace, UTF-8) of exactly those five fields; ``hash = sha256(prev_hash_bytes + canonical)``, and the first
entry of a site links to 32 zero bytes. ``seq`` runs 1, 2, 3 … per site with no gap: UNIQUE(site, seq) in the
database, and every appender first locks the site's row in ``blackbox_heads`` (``FOR UPDATE`` on PostgreSQL; on
SQLite the first statement is a write, which takes the database's single write lock), so processes appending to
one site at once queue instead of forking the chain.

Three ways in:

- ``append`` / ``append_many``: now, on the caller's connection or session, inside the caller's transaction.
- ``stage``: on a SQLAlchemy session, written when that session commits (``before_commit``), in one batch and
  in site order — so a ledger change and its entry commit or roll back together, and concurrent writers lock
  the sites' heads in one order. Entries staged inside a savepoint that rolls back are dropped with it.
- ``Recorder``: an engine of its own, for writers with no transaction to share (the worker's reading batches).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import bindparam, event, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, SessionTransaction

from blackbox.schema import entries, heads

log = logging.getLogger("sitewatch.blackbox")

GENESIS = "0" * 64  # the "previous hash" of a site's first entry (32 zero bytes)
# What is recorded. ``command``: every step of a command to a site device (commands.ledger, docs/commands.md).
KINDS = ("readings", "finding", "ticket", "delivery", "command")


def _plain(obj: Any) -> Any:
    """numpy scalars (values straight from the detector arrays) as the plain numbers they are."""
    item = getattr(obj, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable in a record entry")


def canonical_payload(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain)


def canonical(site: str, seq: int, kind: str, at_ms: int, payload_json: str) -> bytes:
    """The canonical encoding, given the payload already canonical: byte for byte what
    ``json.dumps({...}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` gives for the five fields
    (keys in sorted order: at_ms, kind, payload, seq, site), without encoding the payload twice."""
    return (f'{{"at_ms":{int(at_ms)},"kind":{json.dumps(kind, ensure_ascii=False)},"payload":{payload_json},'
            f'"seq":{int(seq)},"site":{json.dumps(site, ensure_ascii=False)}}}').encode()


def entry_hash(prev: str, site: str, seq: int, kind: str, at_ms: int, payload_json: str) -> str:
    return hashlib.sha256(bytes.fromhex(prev) + canonical(site, seq, kind, at_ms, payload_json)).hexdigest()


@dataclass(frozen=True)
class NewEntry:
    """An entry before it has a place in its site's chain."""

    site: str
    kind: str
    at_ms: int
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class Appended:
    site: str
    seq: int
    hash: str


def _connection(conn_or_session: Connection | Session) -> Connection:
    return conn_or_session.connection() if isinstance(conn_or_session, Session) else conn_or_session


def append(conn_or_session: Connection | Session, site: str, kind: str, at_ms: int,
           payload: Mapping[str, Any]) -> Appended:
    """One entry, in the caller's transaction (it commits or rolls back with the caller's work)."""
    return append_many(conn_or_session, [NewEntry(site, kind, at_ms, payload)])[0]


def append_many(conn_or_session: Connection | Session, new: Iterable[NewEntry]) -> list[Appended]:
    """Many entries (any sites) in the caller's transaction; within a site they keep their given order.

    The heads of the sites are locked in site order, so two transactions appending to overlapping sets of sites
    wait for each other instead of deadlocking."""
    batch = list(new)
    if not batch:
        return []
    conn = _connection(conn_or_session)
    for e in batch:
        if e.kind not in KINDS:
            raise ValueError(f"unknown record kind {e.kind!r} (one of {', '.join(KINDS)})")
    sites = sorted({e.site for e in batch})
    head = _lock_heads(conn, sites, min(e.at_ms for e in batch))
    order = sorted(range(len(batch)), key=lambda i: (batch[i].site, i))
    rows: list[dict[str, Any]] = []
    out: list[Appended | None] = [None] * len(batch)
    for i in order:
        e = batch[i]
        seq, prev = head[e.site]
        seq += 1
        pj = canonical_payload(e.payload)
        h = entry_hash(prev, e.site, seq, e.kind, e.at_ms, pj)
        rows.append({"site": e.site, "seq": seq, "kind": e.kind, "at_ms": int(e.at_ms), "payload": pj,
                     "prev": prev, "hash": h})
        head[e.site] = (seq, h)
        out[i] = Appended(e.site, seq, h)
    conn.execute(insert(entries), rows)
    last_at: dict[str, int] = {}
    for r in rows:
        last_at[r["site"]] = r["at_ms"]
    conn.execute(update(heads).where(heads.c.site == bindparam("b_site"))
                 .values(seq=bindparam("b_seq"), hash=bindparam("b_hash"), at_ms=bindparam("b_at")),
                 [{"b_site": s, "b_seq": head[s][0], "b_hash": head[s][1], "b_at": last_at[s]} for s in sites])
    return out  # type: ignore[return-value]


def _lock_heads(conn: Connection, sites: Sequence[str], at_ms: int) -> dict[str, tuple[int, str]]:
    """The current (seq, hash) of each site, its head row locked until the transaction ends."""
    fresh = [{"site": s, "seq": 0, "hash": GENESIS, "at_ms": int(at_ms)} for s in sites]
    q = select(heads.c.site, heads.c.seq, heads.c.hash).where(heads.c.site.in_(sites)).order_by(heads.c.site)
    if conn.dialect.name == "postgresql":
        found = {r.site: (r.seq, r.hash) for r in conn.execute(q.with_for_update())}
        missing = [f for f in fresh if f["site"] not in found]
        if missing:  # a concurrent first appender may insert the same head: its row wins, then we lock it
            conn.execute(pg_insert(heads).on_conflict_do_nothing(index_elements=["site"]), missing)
            again = q.where(heads.c.site.in_([m["site"] for m in missing])).with_for_update()
            found.update({r.site: (r.seq, r.hash) for r in conn.execute(again)})
        return found
    if conn.dialect.name != "sqlite":
        raise NotImplementedError(f"the record runs on SQLite and PostgreSQL, not {conn.dialect.name}")
    # A write first: it takes SQLite's write lock (waiting for it), so the heads read next are the latest.
    conn.execute(sqlite_insert(heads).on_conflict_do_nothing(index_elements=["site"]), fresh)
    return {r.site: (r.seq, r.hash) for r in conn.execute(q)}


# ------------------------------------------------------------------------------------------------ staging
_STAGED = "blackbox_staged"
_MARKS = "blackbox_marks"


def stage(session: Session, site: str, kind: str, at_ms: int, payload: Mapping[str, Any]) -> None:
    """Record an entry when ``session`` commits (see the module docstring)."""
    session.info.setdefault(_STAGED, []).append(NewEntry(site, kind, int(at_ms), payload))


def stage_many(session: Session, new: Iterable[NewEntry]) -> None:
    session.info.setdefault(_STAGED, []).extend(new)


@event.listens_for(Session, "before_commit")
def _write_staged(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint releasing: the outer commit writes
        return
    staged = session.info.pop(_STAGED, None)
    if staged:
        append_many(session, staged)


@event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        session.info.setdefault(_MARKS, {})[id(transaction)] = len(session.info.get(_STAGED, ()))


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.nested:
        mark = session.info.get(_MARKS, {}).pop(id(previous_transaction), None)
        if mark is not None and _STAGED in session.info:
            del session.info[_STAGED][mark:]


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost transaction is over: committed (written) or rolled back
        session.info.pop(_STAGED, None)
        session.info.pop(_MARKS, None)
    # a savepoint's mark stays until the outer end: SQLAlchemy ends the savepoint before ``after_soft_rollback``


# ------------------------------------------------------------------------------------------------ own engine
class Recorder:
    """Appends in transactions of its own, for writers that share no transaction with the record."""

    def __init__(self, url_or_engine: str | Engine, migrate: bool = True):
        from sitewatch.db import make_engine
        from sitewatch.migrations import ensure_sqlite_dir

        from blackbox.schema import upgrade

        if isinstance(url_or_engine, Engine):
            self.engine = url_or_engine
        else:
            ensure_sqlite_dir(url_or_engine)
            self.engine = make_engine(url_or_engine)
        if migrate:
            upgrade(self.engine)

    def record(self, new: Iterable[NewEntry]) -> list[Appended]:
        batch = list(new)
        if not batch:
            return []
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    return append_many(conn, batch)
            except (OperationalError, IntegrityError) as e:  # locked / deadlock / lost a head race: again
                if attempt == 4:
                    raise
                log.warning("record append retried (%s)", str(e).splitlines()[0][:120])
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.engine.dispose()
