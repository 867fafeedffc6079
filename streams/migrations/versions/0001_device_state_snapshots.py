"""device_state_snapshots: the detect stage's per-device state, kept where a full stop of the local stack
(Kafka in memory) does not lose it (``streams.state_snapshots``).

Revision ID: 0001_streams
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_streams"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_state_snapshots",
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("device_state_snapshots")
