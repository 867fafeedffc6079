"""Migration 0003 (episodes, late tickets, inhibition, device health) up and down on SQLite and PostgreSQL, with
data: the older schema keeps its tickets, and upgrading again fills the new columns' defaults."""

from __future__ import annotations

from sqlalchemy import inspect, text

from backlog import migrate
from backlog.store import Backlog
from sitewatch.db import make_engine
from tests.backlog.late_helpers import gateway, health, late_overload_episode, silent

NEW_TABLES = {"applied_late_findings", "inhibited_findings", "device_health"}
NEW_COLUMNS = {"peak_ts_ms", "first_breach_ms", "last_breach_ms", "clear_value", "late", "arrival_delay_s",
               "outage_from_ms", "outage_to_ms"}


def _schema(url):
    e = make_engine(url)
    try:
        i = inspect(e)
        return set(i.get_table_names()), {c["name"] for c in i.get_columns("tickets")}
    finally:
        e.dispose()


def test_0003_up_down_up_with_data(db_url):
    migrate.upgrade(db_url, "0002_ledger")
    tables, cols = _schema(db_url)
    assert not (NEW_TABLES & tables) and not (NEW_COLUMNS & cols)

    migrate.upgrade(db_url)
    assert migrate.current(db_url) == "0003_episodes"
    tables, cols = _schema(db_url)
    assert NEW_TABLES <= tables and NEW_COLUMNS <= cols
    b = Backlog(db_url, create=False)
    b.apply_findings(late_overload_episode() + [gateway(2, 1), silent(1, 2), health("tc-01", "silent", 3)])
    assert len(b.tickets()) == 2 and len(b.inhibited()) == 1 and len(b.device_health()) == 1
    b.engine.dispose()

    migrate.downgrade(db_url, "0002_ledger")
    assert migrate.current(db_url) == "0002_ledger"
    tables, cols = _schema(db_url)
    assert not (NEW_TABLES & tables) and not (NEW_COLUMNS & cols)
    e = make_engine(db_url)
    with e.connect() as c:
        assert c.execute(text("SELECT count(*) FROM tickets")).scalar() == 2
        # the one-open-ticket-per-key partial index survived the column drops
        idx = {i["name"] for i in inspect(c).get_indexes("tickets")}
        assert "uq_tickets_one_open_per_key" in idx
    e.dispose()

    migrate.upgrade(db_url)
    b = Backlog(db_url)
    assert {t.late for t in b.tickets()} == {False}, "server default for the old rows"
    b.apply_findings(late_overload_episode())  # the idempotency table is new: the episode re-applies as a merge
    assert len(b.tickets()) == 2
    b.engine.dispose()
