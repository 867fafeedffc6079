"""The record's tables and their migrations (own scripts, own version table ``alembic_version_blackbox``).

- ``blackbox_entries``     the chain: one row per entry, UNIQUE(site, seq); append-only (triggers)
- ``blackbox_heads``       per site: the last seq and hash, the row appenders lock to serialise themselves
- ``blackbox_checkpoints`` signed heads, as exported to a third party; append-only (triggers)

Core tables, not ORM classes: the worker appends thousands of entries a second with executemany.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (BigInteger, Column, Integer, MetaData, String, Table, Text, UniqueConstraint, inspect)
from sqlalchemy.engine import Engine

from sitewatch.migrations import Migrations

METADATA = MetaData()
_ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite: an INTEGER primary key is the rowid

entries = Table(
    "blackbox_entries", METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("site", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("payload", Text, nullable=False),  # canonical JSON of the payload
    Column("prev", String(64), nullable=False),  # hex sha256 of the previous entry (64 zeros for the first)
    Column("hash", String(64), nullable=False),
    UniqueConstraint("site", "seq", name="uq_blackbox_site_seq"),
)

heads = Table(
    "blackbox_heads", METADATA,
    Column("site", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("at_ms", BigInteger, nullable=False),
)

checkpoints = Table(
    "blackbox_checkpoints", METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("site", String(64), nullable=False, index=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("signed_ms", BigInteger, nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("body", Text, nullable=False),  # the canonical JSON that was signed
    Column("signature", Text, nullable=False),  # base64 Ed25519 signature of ``body``
)

APPEND_ONLY = ("blackbox_entries", "blackbox_checkpoints")

MIGRATIONS = Migrations(Path(__file__).resolve().parent / "migrations", version_table="alembic_version_blackbox",
                        lock_key=7407)


def upgrade(url_or_engine: str | Engine) -> None:
    MIGRATIONS.upgrade(url_or_engine)


def present(engine: Engine) -> bool:
    """Has this database been given the record's tables (by a process that migrates it)?"""
    with engine.connect() as conn:
        return entries.name in set(inspect(conn).get_table_names())
