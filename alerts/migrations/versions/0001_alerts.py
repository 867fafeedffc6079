"""The alerts room's tables, as they stood when they moved under Alembic, and the append-only audit trail.

- ``alert_deliveries``    one row per (item, receiver): pending → delivered | silenced | unrouted
- ``alert_notifications`` one message to one receiver carrying one or more items; retried durably with backoff
- ``alert_attempts``      every attempt on every channel, with its outcome
- ``alert_incidents``     per ticket: when it started, which tiers were told, reminders and resolution notices
- ``alert_silences``      maintenance windows
- ``alert_audit``         append-only (triggers refuse UPDATE and DELETE): silences added/expired, test messages

A database whose alert tables were made by ``create_all`` before this revision is stamped here, not re-created
(``alerts.delivery_log.MIGRATIONS``).

Revision ID: 0001_alerts
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_alerts"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY_PG = [
    """CREATE OR REPLACE FUNCTION alert_audit_append_only() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'alert_audit is append-only'; END $$ LANGUAGE plpgsql""",
    """CREATE OR REPLACE TRIGGER alert_audit_no_change BEFORE UPDATE OR DELETE ON alert_audit
       FOR EACH ROW EXECUTE FUNCTION alert_audit_append_only()""",
]
APPEND_ONLY_SQLITE = """
CREATE TRIGGER IF NOT EXISTS alert_audit_no_{op} BEFORE {OP} ON alert_audit
BEGIN SELECT RAISE(ABORT, 'alert_audit is append-only'); END
"""


def append_only(dialect: str) -> list[str]:
    """The statements that make ``alert_audit`` append-only on this database."""
    if dialect == "sqlite":
        return [APPEND_ONLY_SQLITE.format(op=o, OP=o.upper()) for o in ("update", "delete")]
    if dialect == "postgresql":
        return APPEND_ONLY_PG
    return []


def upgrade() -> None:
    op.create_table('alert_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('notification_id', sa.Integer(), nullable=False),
    sa.Column('receiver', sa.String(length=120), nullable=False),
    sa.Column('channel', sa.String(length=64), nullable=False),
    sa.Column('at_ms', sa.BigInteger(), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_alert_attempts_notification_id'), 'alert_attempts', ['notification_id'], unique=False)
    op.create_table('alert_audit',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at_ms', sa.BigInteger(), nullable=False),
    sa.Column('actor', sa.String(length=120), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('entity', sa.String(length=32), nullable=False),
    sa.Column('entity_id', sa.String(length=64), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('alert_deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('alert_id', sa.String(length=120), nullable=False),
    sa.Column('receiver', sa.String(length=120), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('first_attempt_ms', sa.BigInteger(), nullable=False),
    sa.Column('delivered_ms', sa.BigInteger(), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=True),
    sa.Column('ticket_id', sa.Integer(), nullable=True),
    sa.Column('group_key', sa.String(length=200), nullable=True),
    sa.Column('urgent', sa.Boolean(), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=True),
    sa.Column('notification_id', sa.Integer(), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('alert_id', 'receiver', name='uq_delivery_alert_receiver')
    )
    op.create_index(op.f('ix_alert_deliveries_notification_id'), 'alert_deliveries', ['notification_id'], unique=False)
    op.create_table('alert_incidents',
    sa.Column('ticket_id', sa.Integer(), nullable=False),
    sa.Column('started_ms', sa.BigInteger(), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('notified', sa.JSON(), nullable=False),
    sa.Column('acked_ms', sa.BigInteger(), nullable=True),
    sa.Column('resolved_ms', sa.BigInteger(), nullable=True),
    sa.Column('resolutions', sa.Integer(), nullable=False),
    sa.Column('done', sa.Boolean(), nullable=False),
    sa.Column('updated_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('ticket_id')
    )
    op.create_table('alert_notifications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=160), nullable=False),
    sa.Column('receiver', sa.String(length=120), nullable=False),
    sa.Column('group_key', sa.String(length=200), nullable=False),
    sa.Column('items', sa.Integer(), nullable=False),
    sa.Column('urgent', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('next_attempt_ms', sa.BigInteger(), nullable=False),
    sa.Column('lease_until_ms', sa.BigInteger(), nullable=True),
    sa.Column('owner', sa.String(length=120), nullable=True),
    sa.Column('rounds', sa.Integer(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=64), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('delivered_ms', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key', 'receiver', name='uq_notification_key_receiver')
    )
    op.create_index(op.f('ix_alert_notifications_status'), 'alert_notifications', ['status'], unique=False)
    op.create_table('alert_silences',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('matchers', sa.JSON(), nullable=False),
    sa.Column('starts_ms', sa.BigInteger(), nullable=False),
    sa.Column('ends_ms', sa.BigInteger(), nullable=False),
    sa.Column('author', sa.String(length=120), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('expired_ms', sa.BigInteger(), nullable=True),
    sa.Column('expired_by', sa.String(length=120), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    for stmt in append_only(op.get_bind().dialect.name):
        op.execute(stmt)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS alert_audit_no_change ON alert_audit")
        op.execute("DROP FUNCTION IF EXISTS alert_audit_append_only()")
    op.drop_table('alert_silences')
    op.drop_index(op.f('ix_alert_notifications_status'), table_name='alert_notifications')
    op.drop_table('alert_notifications')
    op.drop_table('alert_incidents')
    op.drop_index(op.f('ix_alert_deliveries_notification_id'), table_name='alert_deliveries')
    op.drop_table('alert_deliveries')
    op.drop_table('alert_audit')
    op.drop_index(op.f('ix_alert_attempts_notification_id'), table_name='alert_attempts')
    op.drop_table('alert_attempts')
