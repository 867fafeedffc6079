"""The command ledger's tables and migrations (own scripts, own version table ``alembic_version_commands``).

- ``commands``           one row per command: target, action, state, who asked, what was sent and when
- ``command_approvals``  one row per person who approved or rejected it; UNIQUE(command, actor) is the database's
                         half of the two-person rule (the same account cannot count twice)
- ``command_events``     every state change and every send attempt, append-only (triggers), with its detail

Core tables like the record's: the service and the API write a handful of rows per command, and sharing the
record's transaction (``blackbox.chain.stage``) needs a session, not ORM classes.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import BigInteger, Boolean, Column, Integer, MetaData, String, Table, Text, UniqueConstraint
from sqlalchemy.engine import Engine

from sitewatch.migrations import Migrations

METADATA = MetaData()
_ID = BigInteger().with_variant(Integer(), "sqlite")

commands = Table(
    "commands", METADATA,
    Column("id", String(32), primary_key=True),
    Column("site", String(64), nullable=False, index=True),
    Column("gateway", String(64), nullable=False),
    Column("device", String(64), nullable=False),
    Column("family", String(32), nullable=True),
    Column("action", String(32), nullable=False),
    Column("args", Text, nullable=False),  # canonical JSON
    Column("dangerous", Boolean, nullable=False),
    Column("approvals_needed", Integer, nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("source", String(16), nullable=False),  # request | proposal
    Column("rule", String(64), nullable=True),  # the proposal rule that created it
    Column("ticket_id", BigInteger, nullable=True),  # the hazard ticket it acts on (proposals; optional for requests)
    Column("requested_by", String(64), nullable=False),
    Column("requested_ms", BigInteger, nullable=False),
    Column("approval_expires_ms", BigInteger, nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("nonce", String(64), nullable=True),  # set when first sent; every retry reuses it
    Column("issued_ms", BigInteger, nullable=True),
    Column("expires_ms", BigInteger, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_sent_ms", BigInteger, nullable=True),
    Column("ack_status", String(16), nullable=True),
    Column("ack_reason", Text, nullable=True),
    Column("acked_ms", BigInteger, nullable=True),
    Column("escalation_ticket_id", BigInteger, nullable=True),
    Column("updated_ms", BigInteger, nullable=False),
    UniqueConstraint("ticket_id", "rule", name="uq_commands_ticket_rule"),  # one proposal per ticket and rule
)

approvals = Table(
    "command_approvals", METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("command_id", String(32), nullable=False, index=True),
    Column("actor", String(64), nullable=False),
    Column("role", String(32), nullable=False),
    Column("decision", String(8), nullable=False),  # approve | reject
    Column("at_ms", BigInteger, nullable=False),
    Column("note", Text, nullable=False, default=""),
    UniqueConstraint("command_id", "actor", name="uq_command_approvals_actor"),
)

events = Table(
    "command_events", METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("command_id", String(32), nullable=False, index=True),
    Column("at_ms", BigInteger, nullable=False),
    Column("action", String(24), nullable=False),  # requested, proposed, approved, sent, retried, acked, …
    Column("from_state", String(16), nullable=True),
    Column("to_state", String(16), nullable=True),
    Column("actor", String(64), nullable=False),
    Column("detail", Text, nullable=False),  # canonical JSON
)

APPEND_ONLY = ("command_approvals", "command_events")
MIGRATIONS = Migrations(Path(__file__).resolve().parent / "migrations", version_table="alembic_version_commands",
                        lock_key=7409)


def upgrade(url_or_engine: str | Engine) -> None:
    MIGRATIONS.upgrade(url_or_engine)
