"""The record's chain, per-site heads and signed checkpoints; entries and checkpoints append-only.

On PostgreSQL a trigger refuses UPDATE and DELETE (row level) and TRUNCATE (statement level) for every role,
the owner included; production also grants the application role only SELECT and INSERT on them (see
docs/evidence.md), so it cannot drop the triggers either. SQLite gets the same refusal as triggers, which stop
mistakes, not someone holding the file: that is what the hash chain and the exported checkpoints are for.

Revision ID: 0001_blackbox
Revises:
"""

import sqlalchemy as sa
from alembic import op

from sitewatch.migrations import create_append_only, drop_append_only

revision = "0001_blackbox"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY = ("blackbox_entries", "blackbox_checkpoints")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "blackbox_entries",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("prev", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("site", "seq", name="uq_blackbox_site_seq"),
    )
    op.create_table(
        "blackbox_heads",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "blackbox_checkpoints",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("signed_ms", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
    )
    op.create_index(op.f("ix_blackbox_checkpoints_site"), "blackbox_checkpoints", ["site"], unique=False)
    create_append_only(op, "blackbox_append_only", APPEND_ONLY)


def downgrade() -> None:
    drop_append_only(op, "blackbox_append_only", APPEND_ONLY)
    op.drop_index(op.f("ix_blackbox_checkpoints_site"), table_name="blackbox_checkpoints")
    op.drop_table("blackbox_checkpoints")
    op.drop_table("blackbox_heads")
    op.drop_table("blackbox_entries")
