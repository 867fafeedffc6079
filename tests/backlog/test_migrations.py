"""Migrations up and down on SQLite and PostgreSQL; the models match the migrated schema; a database made by the
spine's ``create_all`` (before migrations existed) is adopted and upgraded with its data."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from backlog import migrate
from backlog.models import Base
from backlog.store import Backlog
from sitewatch.db import make_engine
from tests.backlog.conftest import finding

LEDGER_TABLES = {"org_units", "projects", "devices", "users", "user_sites", "api_tokens", "attachments",
                 "credit_deductions", "audit_events"}


def _tables(url: str) -> set[str]:
    e = make_engine(url)
    try:
        return {t for t in inspect(e).get_table_names() if t != "alembic_version" and "blackbox" not in t}  # own
    finally:
        e.dispose()


def test_up_down_up(db_url):
    migrate.upgrade(db_url)
    assert migrate.current(db_url) == migrate.head() == "0003_episodes"
    assert {"tickets", "ticket_events", "alert_outbox"} | LEDGER_TABLES <= _tables(db_url)

    e = make_engine(db_url)
    with e.connect() as c:  # the ORM models and the migrations describe the same schema
        assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []
    e.dispose()

    b = Backlog(db_url, create=False)
    b.apply_findings([finding(major=True)])
    b.engine.dispose()
    migrate.downgrade(db_url, "0001_baseline")
    assert migrate.current(db_url) == "0001_baseline"
    assert _tables(db_url) == {"tickets", "ticket_events", "alert_outbox"}
    e = make_engine(db_url)
    cols = {c["name"] for c in inspect(e).get_columns("tickets")}
    assert "deadline_ms" not in cols and "stop_work" not in cols
    with e.begin() as c:  # the baseline keeps its data, and history is editable again (no triggers)
        assert c.execute(text("SELECT count(*) FROM tickets")).scalar() == 1
        c.execute(text("UPDATE ticket_events SET actor = 'x'"))
    e.dispose()

    migrate.upgrade(db_url)
    assert migrate.current(db_url) == "0003_episodes"
    b = Backlog(db_url, create=True)
    (t,) = b.tickets()
    assert t.origin == "sensor" and t.stop_work is False and t.reopen_count == 0  # server defaults filled in
    b.engine.dispose()
    migrate.downgrade(db_url, "base")
    assert _tables(db_url) == set()


def test_pre_migration_database_is_adopted(db_url):
    """The spine created its tables with create_all; Backlog(url) must stamp and upgrade them, data intact."""
    from sqlalchemy import MetaData

    e = make_engine(db_url)
    md = MetaData()
    for name in ("tickets", "ticket_events", "alert_outbox"):
        Base.metadata.tables[name].to_metadata(md)
    # strip the ledger columns to get the spine's schema
    spine_cols = {"id", "dedup_key", "site", "device", "family", "kind", "category", "status", "level",
                  "peak_level", "major", "active", "count", "opened_ms", "last_seen_ms", "metric", "last_value",
                  "peak_value", "threshold", "rule", "source", "evidence"}
    tickets = md.tables["tickets"]
    for col in [c for c in tickets.columns if c.name not in spine_cols]:
        tickets._columns.remove(col)
    for idx in [i for i in tickets.indexes if i.name == "ix_tickets_deadline_ms"]:
        tickets.indexes.discard(idx)
    md.create_all(e)
    with e.begin() as c:
        c.execute(text(
            "INSERT INTO tickets (dedup_key, site, device, family, kind, category, status, level, peak_level, major,"
            " active, count, opened_ms, last_seen_ms, metric, last_value, peak_value, threshold, rule, source,"
            " evidence) VALUES ('s/d/k', 's', 'd', 'crane', 'k', 'hazard', 'open', 2, 2, false, true, 1, 1, 1,"
            " 'load', 9.5, 9.5, 9.0, 'r', '', '{}')"))
    e.dispose()
    b = Backlog(db_url)
    assert migrate.current(db_url) == migrate.head()
    (t,) = b.tickets()
    assert t.dedup_key == "s/d/k" and t.origin == "sensor"
    b.engine.dispose()
