"""The alerts room's tables under Alembic (own version table, beside the backlog's in one database): up and down on
SQLite and PostgreSQL, the models match the migrated schema, the audit trail stays append-only, and alert tables
made by ``create_all`` before the migrations existed are adopted with their data."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, inspect, text
from sqlalchemy.exc import DBAPIError

from alerts.delivery_log import MIGRATIONS, AlertsBase, DeliveryLog
from backlog import migrate as backlog_migrate
from backlog.models import Base as BacklogBase
from sitewatch.db import make_engine
from tests.backlog.conftest import db_url, pg_server, pg_url  # noqa: F401 (fixtures: SQLite and PostgreSQL)
from tests.conftest import schema_drift

ALERT_TABLES = set(AlertsBase.metadata.tables)


def _tables(url: str) -> set[str]:
    e = make_engine(url)
    try:
        return set(inspect(e).get_table_names())
    finally:
        e.dispose()


def test_alerts_and_backlog_migrate_side_by_side(db_url):  # noqa: F811
    backlog_migrate.upgrade(db_url)
    log = DeliveryLog(db_url)  # migrates the alert tables at start
    assert MIGRATIONS.current(db_url) == MIGRATIONS.head() == "0001_alerts"
    assert ALERT_TABLES | {"alembic_version_alerts", "alembic_version", "tickets"} <= _tables(db_url)
    assert schema_drift(db_url, AlertsBase.metadata, "alembic_version_alerts") == []
    assert schema_drift(db_url, BacklogBase.metadata, "alembic_version") == [], "each room compares only its own tables"

    log.audit("ops", "silence_added", "silence", "1", {"reason": "crane maintenance"}, at_ms=5)
    with log.engine.begin() as c, pytest.raises(DBAPIError, match="append-only"):
        c.execute(text("UPDATE alert_audit SET actor = 'someone else'"))
    log.engine.dispose()

    MIGRATIONS.downgrade(db_url, "base")
    left = _tables(db_url)
    assert not (ALERT_TABLES & left), "the alerts' downgrade drops its tables"
    assert "tickets" in left and backlog_migrate.current(db_url) == backlog_migrate.head(), "…and only its tables"
    MIGRATIONS.upgrade(db_url)
    assert ALERT_TABLES <= _tables(db_url)


def test_tables_made_by_create_all_before_alembic_are_adopted(db_url):  # noqa: F811
    e = make_engine(db_url)
    old = MetaData()  # alert_deliveries as the first release made it: no issue-6 columns, no other alert table
    Table("alert_deliveries", old, Column("id", Integer, primary_key=True), Column("alert_id", String(120)),
          Column("receiver", String(120)), Column("channel", String(32)), Column("status", String(16)),
          Column("attempts", Integer), Column("last_error", String), Column("first_attempt_ms", Integer),
          Column("delivered_ms", Integer))
    old.create_all(e)
    with e.begin() as c:
        c.execute(text("INSERT INTO alert_deliveries (alert_id, receiver, channel, status, attempts, "
                       "first_attempt_ms) VALUES ('a-1', 'wang', 'webhook', 'delivered', 1, 5)"))
    e.dispose()

    log = DeliveryLog(db_url)
    assert MIGRATIONS.current(db_url) == MIGRATIONS.head()
    assert log.delivered("a-1", "wang"), "the old row survives adoption"
    cols = {c["name"] for c in inspect(log.engine).get_columns("alert_deliveries")}
    assert {"kind", "ticket_id", "payload", "notification_id"} <= cols
    assert ALERT_TABLES <= _tables(db_url)
    log.engine.dispose()
