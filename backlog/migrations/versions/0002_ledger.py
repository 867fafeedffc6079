"""Ledger: lifecycle columns, organisations, people and tokens, evidence, credit deductions, audit trail;
append-only triggers on the history tables.

Revision ID: 0002_ledger
Revises: 0001_baseline
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_ledger"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None

def ticket_columns() -> list[sa.Column]:
    """Fresh Column objects each call (a Column can belong to one Table only)."""
    return [
        sa.Column("origin", sa.String(16), nullable=False, server_default="sensor"),
        sa.Column("title", sa.Text, nullable=False, server_default=""),
        sa.Column("deadline_ms", sa.BigInteger, nullable=True),
        sa.Column("escalated_ms", sa.BigInteger, nullable=True),
        sa.Column("acknowledged_ms", sa.BigInteger, nullable=True),
        sa.Column("rectified_ms", sa.BigInteger, nullable=True),
        sa.Column("rectified_by", sa.String(64), nullable=True),
        sa.Column("closed_ms", sa.BigInteger, nullable=True),
        sa.Column("closed_by", sa.String(64), nullable=True),
        sa.Column("cleared_ms", sa.BigInteger, nullable=True),
        sa.Column("stop_work", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("listed_supervision", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("reopened_from", sa.Integer, nullable=True),
        sa.Column("reopen_count", sa.Integer, nullable=False, server_default="0"),
    ]


APPEND_ONLY = ("ticket_events", "audit_events", "credit_deductions")


def upgrade() -> None:
    for col in ticket_columns():
        op.add_column("tickets", col)
    op.create_index("ix_tickets_deadline_ms", "tickets", ["deadline_ms"])

    op.create_table(
        "org_units",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("code", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("org_units.id"), nullable=True),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("site", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("company_id", sa.Integer, sa.ForeignKey("org_units.id"), nullable=False),
        sa.Column("district_id", sa.Integer, sa.ForeignKey("org_units.id"), nullable=False),
    )
    op.create_index("ix_projects_company_id", "projects", ["company_id"])
    op.create_index("ix_projects_district_id", "projects", ["district_id"])
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("family", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.UniqueConstraint("site", "code", name="uq_devices_site_code"),
    )
    op.create_index("ix_devices_site", "devices", ["site"])
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("company_id", sa.Integer, sa.ForeignKey("org_units.id"), nullable=True),
        sa.Column("active", sa.Boolean, nullable=False),
    )
    op.create_table(
        "user_sites",
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("site", sa.String(64), primary_key=True),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("revoked_ms", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    op.create_table(
        "attachments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("ticket_id", sa.Integer, sa.ForeignKey("tickets.id"), nullable=False),
        sa.Column("filename", sa.String(200), nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("uploaded_by", sa.String(64), nullable=False),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_attachments_ticket_id", "attachments", ["ticket_id"])
    op.create_table(
        "credit_deductions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("company_id", sa.Integer, sa.ForeignKey("org_units.id"), nullable=True),
        sa.Column("ticket_id", sa.Integer, sa.ForeignKey("tickets.id"), nullable=True),
        sa.Column("points", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_credit_deductions_company_id", "credit_deductions", ["company_id"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("entity", sa.String(32), nullable=False),
        sa.Column("entity_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("before", sa.JSON, nullable=True),
        sa.Column("after", sa.JSON, nullable=True),
    )
    _append_only_triggers()


def _append_only_triggers() -> None:
    """History is never rewritten: the database itself refuses UPDATE and DELETE on the history tables."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION sw_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$"
        )
        for t in APPEND_ONLY:
            op.execute(f"CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} "
                       f"FOR EACH ROW EXECUTE FUNCTION sw_append_only()")
    else:
        for t in APPEND_ONLY:
            for what in ("UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER {t}_no_{what.lower()} BEFORE {what} ON {t} "
                           f"BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for t in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {t}_append_only ON {t}")
        op.execute("DROP FUNCTION IF EXISTS sw_append_only()")
    else:
        for t in APPEND_ONLY:
            for what in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {t}_no_{what}")
    for t in ("audit_events", "credit_deductions", "attachments", "api_tokens", "user_sites", "users", "devices",
              "projects", "org_units"):
        op.drop_table(t)
    op.drop_index("ix_tickets_deadline_ms", table_name="tickets")
    for col in reversed(ticket_columns()):
        op.drop_column("tickets", col.name)
