"""The audit trail is complete (replaying it rebuilds the ticket) and append-only (the database refuses edits)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from backlog import orgs
from backlog.evidence import EvidenceStore
from backlog.models import AuditEvent
from backlog.store import LEDGER_FIELDS, snapshot
from sitewatch.findings import Level
from tests.backlog.conftest import DEMO_ORG, HOUR, T0, actor, finding

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def test_replaying_events_rebuilds_every_ledger_field(org, clock, tmp_path):
    b = org
    b.apply_findings([finding(level=Level.YELLOW)])
    (t,) = b.tickets()
    officer, mgr, sup = actor(b, "wang.officer"), actor(b, "zhao.manager"), actor(b, "sun.supervisor")
    b.apply_findings([finding(level=Level.ORANGE, ts=T0 + 1000), finding(level=Level.RED, ts=T0 + 2000, major=True)])
    b.acknowledge(t.id, officer, "seen")
    clock.advance(30 * HOUR)
    b.escalate_overdue()
    b.start_rectification(t.id, officer)
    a = EvidenceStore(b, tmp_path / "ev").add(t.id, officer, "after.png", "image/png", PNG)
    b.apply_findings([finding(level=Level.CLEAR, ts=T0 + 40 * HOUR)])
    b.rectify(t.id, officer, "wall re-anchored", [a.id])
    b.verify(t.id, mgr, "photos unclear", accept=False)
    b.rectify(t.id, officer, "better photos", [a.id])
    b.lift_stop_work(t.id, sup, "re-inspected")
    b.verify(t.id, sup, "ok")
    clock.advance(24 * HOUR)
    b.reopen(t.id, sup, "回头看: anchors loose")

    events = b.events(t.id)
    assert events[0].action == "opened" and events[0].detail["before"] == {}
    state = dict(events[0].detail["after"])
    assert set(state) == set(LEDGER_FIELDS)
    for e in events[1:]:
        assert e.actor and e.at_ms > 0 and e.action
        before = {k: v for k, v in e.detail["before"].items() if k in LEDGER_FIELDS}
        after = {k: v for k, v in e.detail["after"].items() if k in LEDGER_FIELDS}
        assert {k: state[k] for k in before} == before, f"{e.action}: 'before' disagrees with the history"
        state.update(after)
    assert state == snapshot(b.ticket(t.id)), "an unjournalled change happened"
    actions = [e.action for e in events]
    for expected in ("level_upgraded", "major_flagged", "credit_deducted", "acknowledged",
                     "escalated", "rectification_started", "evidence_attached", "condition_cleared", "rectified",
                     "verification_rejected", "stop_work_lifted", "closed", "reopened"):
        assert expected in actions, expected
    who = {e.action: e.actor for e in events}
    assert who["rectified"] == "wang.officer" and who["closed"] == "sun.supervisor" and who["escalated"] == "system"
    assert next(e for e in events if e.action == "rectified").detail["attachments"] == [a.id]


def test_history_tables_are_append_only(org):
    org.apply_findings([finding(major=True)])  # a ticket event, a credit deduction …
    orgs.create_token(org, "sun.supervisor")  # … and an audit event: one row in each history table
    for table in ("ticket_events", "audit_events", "credit_deductions"):
        for stmt in (f"UPDATE {table} SET actor = 'mallory'", f"DELETE FROM {table}"):
            with pytest.raises(DBAPIError, match="append-only"):
                with org.engine.begin() as c:
                    c.execute(text(stmt))
    with org.engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM ticket_events WHERE actor = 'mallory'")).scalar() == 0
        assert c.execute(text("SELECT count(*) FROM credit_deductions")).scalar() == 1


def test_org_import_is_audited_and_idempotent(backlog):
    counts = orgs.import_org(backlog, DEMO_ORG)
    assert counts == {"districts": 2, "companies": 3, "projects": 4, "devices": 7, "users": 6}
    n = len(orgs.audit_trail(backlog, limit=1000))
    assert n == 1 + 2 + 3 + 4 + 7 + 6 + 2  # city, districts, companies, projects, devices, users, 2 officers' sites
    orgs.import_org(backlog, DEMO_ORG)
    assert len(orgs.audit_trail(backlog, limit=1000)) == n  # nothing changed, nothing journalled
    import yaml

    doc = yaml.safe_load(DEMO_ORG.read_text(encoding="utf-8"))
    doc["users"][0]["sites"] = ["cz-0001"]
    doc["districts"][0]["companies"][0]["name"] = "常州建安建设集团"
    orgs.import_org(backlog, doc, actor="admin")
    new = orgs.audit_trail(backlog, limit=1000)[: len(orgs.audit_trail(backlog, limit=1000)) - n]
    assert {(e.entity, e.action) for e in new} == {("org_unit", "updated"), ("user", "sites_changed")}
    changed = next(e for e in new if e.entity == "org_unit")
    assert changed.before == {"name": "常州建安建设有限公司"} and changed.after == {"name": "常州建安建设集团"}
    assert actor(backlog, "wang.officer").sites == frozenset({"cz-0001"})
    with backlog.session() as s:
        assert s.query(AuditEvent).filter_by(actor="admin").count() == 2
