"""Device detector state snapshotted into the backlog database, read back when the state table has nothing.

Why a database and not RocksDB under Faust: the local Kafka (Tansu) keeps everything in memory, so a full stop
of the local stack loses the ``device-state`` changelog topic. A RocksDB store would survive on disk, but its
recorded changelog offsets would point into a topic that no longer exists on the fresh broker, and Faust's
recovery would then face a local store ahead of an empty changelog. The backlog database (SQLite locally,
PostgreSQL in production) already survives restarts and is already opened by the worker, so the detect stage
writes the states it checkpoints anyway (same cadence: at most every few seconds per device, at once after a
finding was delivered) to ``device_state_snapshots`` and reads them back only on a table miss. With production
Kafka the changelog stays the truth: a snapshot is consulted only for a device the table does not know, so a
snapshot older than the table's state is never used.

Writes are one multi-row ``INSERT … ON CONFLICT DO UPDATE`` per batch (same statement on SQLite and
PostgreSQL), run by the caller on a thread so the event loop never waits on the database; the update is
skipped when the stored row is newer (two workers around a handover). Reads are one ``SELECT … WHERE key IN``
per batch of missing keys.

The table is the streams room's own, migrated by its own Alembic scripts (``streams/migrations/``, version table
``alembic_version_streams``) in the shared database, like the alerts room's tables.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Iterable, Mapping

import msgspec
from sqlalchemy import BigInteger, Column, MetaData, String, Table, Text, select
from sqlalchemy.engine import Engine

from sitewatch.db import make_engine
from sitewatch.migrations import Migrations, ensure_sqlite_dir

log = logging.getLogger("sitewatch.snapshots")

METADATA = MetaData()

snapshots = Table(
    "device_state_snapshots", METADATA,
    Column("key", String(512), primary_key=True),  # "site/device" (or "site/gateway:<id>"), as in the Faust table
    Column("state", Text, nullable=False),  # the detector state, JSON
    Column("updated_ms", BigInteger, nullable=False),  # wall clock of the write: a newer row is never overwritten
)

MIGRATIONS = Migrations(Path(__file__).resolve().parent / "migrations", version_table="alembic_version_streams",
                        lock_key=7408)

_ENCODER = msgspec.json.Encoder()
ROWS_PER_STATEMENT = 2000  # rows per executemany call of the one upsert statement
KEYS_PER_QUERY = 10000


def wanted(mode: str, backlog_url: str, kafka_bootstrap: str) -> bool:
    """``SW_STATE_SNAPSHOTS``: on, off, or auto = on for the local stack (SQLite backlog, or Kafka on loopback:
    Tansu in memory, whose changelog does not survive a stop), off elsewhere (production Kafka's changelog is
    replicated and durable)."""
    if mode in ("on", "off"):
        return mode == "on"
    hosts = [h.strip().rsplit(":", 1)[0].strip("[]") for h in kafka_bootstrap.split(",")]
    local_kafka = all(h in ("127.0.0.1", "localhost", "::1") for h in hosts)
    return backlog_url.startswith("sqlite") or local_kafka


class StateSnapshots:
    """The ``device_state_snapshots`` table: blocking calls, meant for a worker thread."""

    def __init__(self, url_or_engine: str | Engine, create: bool = True):
        if isinstance(url_or_engine, Engine):
            self.engine = url_or_engine
        else:
            ensure_sqlite_dir(url_or_engine)
            self.engine = make_engine(url_or_engine)
        if create:
            MIGRATIONS.upgrade(self.engine)
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            raise ValueError(f"state snapshots need SQLite or PostgreSQL, not {dialect}")
        # One statement, compiled once and run for many rows (executemany): a VALUES list of its own per save was
        # compiled again every time — a third of a worker's time when a large fleet is checkpointed
        stmt = insert(snapshots)
        self._upsert = stmt.on_conflict_do_update(
            index_elements=[snapshots.c.key],
            set_={"state": stmt.excluded.state, "updated_ms": stmt.excluded.updated_ms},
            where=snapshots.c.updated_ms <= stmt.excluded.updated_ms,
        )

    def save(self, states: Mapping[str, dict], at_ms: int | None = None) -> int:
        """Upsert these device states (one statement run for every ``ROWS_PER_STATEMENT`` rows, one transaction)."""
        if not states:
            return 0
        at = int(time.time() * 1000) if at_ms is None else at_ms
        enc = _ENCODER.encode  # msgspec: compact JSON of the same values as json.dumps, in under half the time
        rows = [{"key": k, "state": enc(v).decode(), "updated_ms": at} for k, v in states.items()]
        with self.engine.begin() as conn:
            for i in range(0, len(rows), ROWS_PER_STATEMENT):
                conn.execute(self._upsert, rows[i:i + ROWS_PER_STATEMENT])
        return len(rows)

    def load_all(self) -> dict[str, dict]:
        """Every snapshot (a new partition assignment on a fresh broker: devices that fall silent must still be
        watched by the deadman, though no reading brings them back)."""
        out: dict[str, dict] = {}
        with self.engine.connect() as conn:
            for key, state in conn.execute(select(snapshots.c.key, snapshots.c.state)):
                try:
                    out[key] = json.loads(state)
                except ValueError:
                    log.warning("unreadable state snapshot of %s ignored", key)
        return out

    def load(self, keys: Iterable[str]) -> dict[str, dict]:
        """The snapshots of these devices (absent keys: no snapshot, or one that cannot be read)."""
        keys = list(keys)
        out: dict[str, dict] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(keys), KEYS_PER_QUERY):
                part = keys[i:i + KEYS_PER_QUERY]
                for key, state in conn.execute(select(snapshots.c.key, snapshots.c.state)
                                               .where(snapshots.c.key.in_(part))):
                    try:
                        out[key] = json.loads(state)
                    except ValueError:
                        log.warning("unreadable state snapshot of %s ignored", key)
        return out

    def close(self) -> None:
        self.engine.dispose()
