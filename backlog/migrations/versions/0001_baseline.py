"""Baseline: the spine's tickets, ticket events and alert outbox (what ``create_all`` made before migrations).

Revision ID: 0001_baseline
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dedup_key", sa.String(200), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("family", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("peak_level", sa.Integer, nullable=False),
        sa.Column("major", sa.Boolean, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("opened_ms", sa.BigInteger, nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger, nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("last_value", sa.Float, nullable=False),
        sa.Column("peak_value", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("evidence", sa.JSON, nullable=False),
    )
    op.create_index("ix_tickets_dedup_key", "tickets", ["dedup_key"])
    op.create_index("ix_tickets_site", "tickets", ["site"])
    op.create_index("uq_tickets_one_open_per_key", "tickets", ["dedup_key"], unique=True,
                    sqlite_where=sa.text("status != 'closed'"), postgresql_where=sa.text("status != 'closed'"))
    op.create_table(
        "ticket_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("ticket_id", sa.Integer, sa.ForeignKey("tickets.id"), nullable=False),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_level", sa.Integer, nullable=True),
        sa.Column("to_level", sa.Integer, nullable=True),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_ticket_events_ticket_id", "ticket_events", ["ticket_id"])
    op.create_table(
        "alert_outbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("alert_id", sa.String(120), nullable=False, unique=True),
        sa.Column("dedup_key", sa.String(200), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("published_ms", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_alert_outbox_published_ms", "alert_outbox", ["published_ms"])


def downgrade() -> None:
    op.drop_table("alert_outbox")
    op.drop_table("ticket_events")
    op.drop_table("tickets")
