"""The rooms write to the record inside their own transactions: a ticket's findings, transitions and
acknowledgement through ``backlog.store.Backlog``, and a delivery through ``alerts.delivery_log.DeliveryLog``
land in the site's chain (and verify); a refused or failed change leaves no entry, and a failed append undoes
the change."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from alerts.delivery_log import DeliveryLog
from backlog import migrate
from backlog.errors import Conflict
from backlog.store import Backlog
from blackbox.verify import verify_site
from sitewatch.findings import Level
from tests.backlog.conftest import T0, actor, backlog, clock, finding, org  # noqa: F401 (fixtures)
from tests.blackbox.conftest import db_url, pg_server, pg_url, rows  # noqa: F401 (fixtures)

SITE = "cz-0001"


def _entries(b: Backlog, site: str = SITE) -> list[tuple[str, dict]]:
    return [(r["kind"], json.loads(r["payload"])) for r in rows(b.engine, site).values()]


def test_ticket_lifecycle_lands_in_the_chain(org, clock):  # noqa: F811
    org.apply_findings([finding()])
    (t,) = org.tickets()
    org.apply_findings([finding(level=Level.CLEAR, ts=T0 + 1000, value=10.0)])
    officer, manager = actor(org, "wang.officer"), actor(org, "zhao.manager")
    clock.advance(60_000)
    org.acknowledge(t.id, officer, "seen")
    org.start_rectification(t.id, officer, "crew on it")
    org.rectify(t.id, officer, "braced the wall")
    org.verify(t.id, manager, "checked on site")

    got = _entries(org)
    assert [k for k, _ in got] == ["finding", "ticket", "finding", "ticket", "ticket", "ticket", "ticket", "ticket"]
    findings = [p for k, p in got if k == "finding"]
    assert [(f["level"], f["ts"]) for f in findings] == [(int(Level.ORANGE), T0), (int(Level.CLEAR), T0 + 1000)]
    tickets = [p for k, p in got if k == "ticket"]
    events = org.events(t.id)
    assert [(p["ticket"], p["action"], p["actor"]) for p in tickets] == [(t.id, e.action, e.actor) for e in events]
    ack = tickets[2]
    assert ack["action"] == "acknowledged" and ack["actor"] == "wang.officer" and ack["status"] == "acknowledged"
    assert ack["detail"]["after"]["acknowledged_ms"] == clock.now
    assert tickets[-1]["action"] == "closed" and tickets[-1]["status"] == "closed"
    at = [r["at_ms"] for r in rows(org.engine, SITE).values() if r["kind"] == "ticket"]
    assert at == [e.at_ms for e in events], "the entry carries the event's time"
    assert verify_site(org.engine, SITE).ok


def test_refused_transition_and_replayed_finding(org):  # noqa: F811
    org.apply_findings([finding()])
    (t,) = org.tickets()
    before = len(_entries(org))
    with pytest.raises(Conflict):
        org.verify(t.id, actor(org, "zhao.manager"), "not even acknowledged")
    assert len(_entries(org)) == before, "a refused transition writes nothing"
    org.apply_findings([finding()])  # Kafka redelivered it: received again, but no ticket change
    got = _entries(org)
    assert [k for k, _ in got[before:]] == ["finding"]
    assert verify_site(org.engine, SITE).ok


def test_a_failed_append_undoes_the_ledger_change(org):  # noqa: F811
    org.apply_findings([finding()])
    (t,) = org.tickets()
    with org.engine.begin() as c:  # the record's head table is gone: appending fails
        c.execute(text("ALTER TABLE blackbox_heads RENAME TO blackbox_heads_gone"))
    with pytest.raises(DBAPIError):
        org.acknowledge(t.id, actor(org, "wang.officer"), "seen")
    assert org.ticket(t.id).status == "open" and [e.action for e in org.events(t.id)] == ["opened"]


def test_delivery_lands_in_the_chain(db_url):  # noqa: F811
    log = DeliveryLog(db_url)
    alert = {"alert_id": "t7-opened-L3", "ticket": {"id": 7, "site": SITE, "dedup_key": f"{SITE}/crane-1/load"}}
    assert log.enqueue("t7-opened-L3", "ops-webhook", kind="alert", payload=alert, ticket_id=7, group_key="",
                       urgent=True, at_ms=T0)
    assert log.enqueue("test-1", "ops-webhook", kind="test", payload={"text": "hello"}, ticket_id=None,
                       group_key="", urgent=False, at_ms=T0)
    items = [d.id for d in log.unbatched()]
    nid = log.create_notification("k-1", "ops-webhook", "", items, urgent=True, at_ms=T0)
    assert nid is not None and [d.id for d in log.claim(nid, "host:1", T0, 30_000)] == items
    log.finish(log.notification(nid), "host:1", "webhook", at_ms=T0 + 250)
    (e,) = rows(log.engine, SITE).values()
    assert e["kind"] == "delivery" and e["at_ms"] == T0 + 250
    assert json.loads(e["payload"]) == {"item": "t7-opened-L3", "kind": "alert", "ticket": 7, "receiver": "ops-webhook",
                                        "channel": "webhook", "notification": nid, "key": "k-1"}
    assert verify_site(log.engine, SITE).ok
    log.engine.dispose()


def test_handle_that_does_not_migrate_records_only_once_the_tables_exist(db_url):  # noqa: F811
    migrate.upgrade(db_url)  # the backlog's tables only
    b = Backlog(db_url, create=False)
    assert not b.blackbox
    b.apply_findings([finding()])
    assert len(b.tickets()) == 1
    b.engine.dispose()
    Backlog(db_url).engine.dispose()  # a migrating handle brings the record's tables
    b = Backlog(db_url, create=False)
    assert b.blackbox
    b.apply_findings([finding(ts=T0 + 5000, level=Level.RED, value=40.0)])
    assert [k for k, _ in _entries(b)] == ["finding", "ticket"]
    b.engine.dispose()
