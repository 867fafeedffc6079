"""Episodes, late (back-dated) tickets, inhibition and device health.

- tickets: the episode the sensor saw (peak time, first/last breach, the clearing reading) and, for tickets
  opened from readings a gateway buffered during an outage, ``late``, the arrival delay and the outage window;
- ``applied_late_findings``: idempotency of back-dated findings (unique key + ts + level);
- ``inhibited_findings``: findings not ticketed because an inhibition rule's source ticket was active;
- ``device_health``: the latest health state per device.

Revision ID: 0003_episodes
Revises: 0002_ledger
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_episodes"
down_revision = "0002_ledger"
branch_labels = None
depends_on = None


def ticket_columns() -> list[sa.Column]:
    """Fresh Column objects each call (a Column can belong to one Table only)."""
    return [
        sa.Column("peak_ts_ms", sa.BigInteger, nullable=True),
        sa.Column("first_breach_ms", sa.BigInteger, nullable=True),
        sa.Column("last_breach_ms", sa.BigInteger, nullable=True),
        sa.Column("clear_value", sa.Float, nullable=True),
        sa.Column("late", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("arrival_delay_s", sa.Float, nullable=True),
        sa.Column("outage_from_ms", sa.BigInteger, nullable=True),
        sa.Column("outage_to_ms", sa.BigInteger, nullable=True),
    ]


def upgrade() -> None:
    for col in ticket_columns():  # plain ADD/DROP COLUMN: no table copy (the partial unique index stays as is)
        op.add_column("tickets", col)
    op.create_table(
        "applied_late_findings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dedup_key", sa.String(200), nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("ticket_id", sa.Integer, nullable=True),
        sa.Column("applied_ms", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("dedup_key", "ts", "level", name="uq_applied_late_findings"),
    )
    op.create_table(
        "inhibited_findings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dedup_key", sa.String(200), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("family", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("last_ts", sa.BigInteger, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("source_ticket_id", sa.Integer, nullable=False),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("resolved_ms", sa.BigInteger, nullable=True),
        sa.Column("resolution", sa.String(32), nullable=True),
    )
    op.create_index("ix_inhibited_findings_dedup_key", "inhibited_findings", ["dedup_key"])
    op.create_index("ix_inhibited_findings_site", "inhibited_findings", ["site"])
    op.create_index("ix_inhibited_findings_source_ticket_id", "inhibited_findings", ["source_ticket_id"])
    op.create_table(
        "device_health",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("device", sa.String(64), primary_key=True),
        sa.Column("family", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("since_ms", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("gateway", sa.String(64), nullable=True),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("device_health")
    op.drop_index("ix_inhibited_findings_source_ticket_id", table_name="inhibited_findings")
    op.drop_index("ix_inhibited_findings_site", table_name="inhibited_findings")
    op.drop_index("ix_inhibited_findings_dedup_key", table_name="inhibited_findings")
    op.drop_table("inhibited_findings")
    op.drop_table("applied_late_findings")
    for col in reversed(ticket_columns()):
        op.drop_column("tickets", col.name)
