"""The command ledger: commands, approvals (UNIQUE per actor), events (append-only).

Revision ID: 0001_commands
Revises:
"""

import sqlalchemy as sa
from alembic import op

from sitewatch.migrations import create_append_only, drop_append_only

revision = "0001_commands"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY = ("command_approvals", "command_events")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "commands",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("gateway", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("family", sa.String(32), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("args", sa.Text(), nullable=False),
        sa.Column("dangerous", sa.Boolean(), nullable=False),
        sa.Column("approvals_needed", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(64), nullable=True),
        sa.Column("ticket_id", sa.BigInteger(), nullable=True),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("requested_ms", sa.BigInteger(), nullable=False),
        sa.Column("approval_expires_ms", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=True),
        sa.Column("issued_ms", sa.BigInteger(), nullable=True),
        sa.Column("expires_ms", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_sent_ms", sa.BigInteger(), nullable=True),
        sa.Column("ack_status", sa.String(16), nullable=True),
        sa.Column("ack_reason", sa.Text(), nullable=True),
        sa.Column("acked_ms", sa.BigInteger(), nullable=True),
        sa.Column("escalation_ticket_id", sa.BigInteger(), nullable=True),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("ticket_id", "rule", name="uq_commands_ticket_rule"),
    )
    op.create_index(op.f("ix_commands_site"), "commands", ["site"])
    op.create_index(op.f("ix_commands_state"), "commands", ["state"])
    op.create_table(
        "command_approvals",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("command_id", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.UniqueConstraint("command_id", "actor", name="uq_command_approvals_actor"),
    )
    op.create_index(op.f("ix_command_approvals_command_id"), "command_approvals", ["command_id"])
    op.create_table(
        "command_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("command_id", sa.String(32), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(24), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=True),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index(op.f("ix_command_events_command_id"), "command_events", ["command_id"])
    create_append_only(op, "commands_append_only", APPEND_ONLY)


def downgrade() -> None:
    drop_append_only(op, "commands_append_only", APPEND_ONLY)
    op.drop_table("command_events")
    op.drop_table("command_approvals")
    op.drop_table("commands")
