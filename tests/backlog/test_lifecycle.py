"""The ledger's rules, on SQLite and on a real PostgreSQL: allowed and refused transitions, the four-eyes rule,
major hazards, deadlines and escalation, sensor re-alarms after closure."""

from __future__ import annotations

import pytest

from backlog.errors import Conflict, Forbidden, Invalid
from backlog.lifecycle import TRANSITIONS
from backlog.models import STATUSES
from sitewatch.findings import Level
from tests.backlog.conftest import HOUR, T0, actor, finding

PLAN = ["acknowledge", "start_rectification", "rectify", "verify"]


def _open(b, **kw) -> int:
    b.apply_findings([finding(**kw)])
    return b.tickets()[-1].id


def _work(b, tid, upto: str, officer="wang.officer", verifier="zhao.manager"):
    """Drive a ticket along the happy path until (and including) ``upto``."""
    o, v = actor(b, officer), actor(b, verifier)
    for step in PLAN:
        if step == "acknowledge":
            b.acknowledge(tid, o, "seen")
        elif step == "start_rectification":
            b.start_rectification(tid, o, "crew on it")
        elif step == "rectify":
            b.rectify(tid, o, "braced the wall")
        elif step == "verify":
            b.verify(tid, v, "checked on site")
        if step == upto:
            return


def test_happy_path_open_to_closed(org, clock):
    tid = _open(org)
    org.apply_findings([finding(level=Level.CLEAR, ts=T0 + 1000, value=10.0)])
    _work(org, tid, "verify")
    t = org.ticket(tid)
    assert t.status == "closed" and t.rectified_by == "wang.officer" and t.closed_by == "zhao.manager"
    actions = [e.action for e in org.events(tid)]
    assert actions == ["opened", "condition_cleared", "acknowledged", "rectification_started", "rectified", "closed"]


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("action", sorted(set(TRANSITIONS) - {"retract"}))  # retract: pipeline only (test_late_episodes)
def test_transition_table_is_enforced(org, status, action):
    """Every (status, action) pair not in the lifecycle table is refused with Conflict — and the rest work."""
    tid = _open(org)
    org.apply_findings([finding(level=Level.CLEAR, ts=T0 + 1000, value=1.0)])
    steps = {"open": None, "acknowledged": "acknowledge", "rectifying": "start_rectification",
             "rectified": "rectify", "closed": "verify"}
    if steps[status]:
        _work(org, tid, steps[status])
    assert org.ticket(tid).status == status
    sup, mgr = actor(org, "sun.supervisor"), actor(org, "zhao.manager")
    officer = actor(org, "wang.officer")
    call = {
        "acknowledge": lambda: org.acknowledge(tid, officer),
        "start_rectification": lambda: org.start_rectification(tid, officer),
        "rectify": lambda: org.rectify(tid, officer, "done"),
        "verify": lambda: org.verify(tid, sup, "ok"),
        "reject": lambda: org.verify(tid, mgr, "not good enough", accept=False),
        "reopen": lambda: org.reopen(tid, sup, "回头看: crack is back"),
    }[action]
    allowed, target = TRANSITIONS[action]
    if status in allowed:
        assert call().status == target
    else:
        with pytest.raises(Conflict):
            call()
        assert org.ticket(tid).status == status


def test_rectifier_cannot_verify_own_work(org):
    tid = _open(org)
    org.apply_findings([finding(level=Level.CLEAR, ts=T0 + 1000)])
    mgr = actor(org, "zhao.manager")
    org.acknowledge(tid, mgr)
    org.start_rectification(tid, mgr)
    org.rectify(tid, mgr, "fixed it myself")
    with pytest.raises(Conflict, match="cannot verify"):
        org.verify(tid, mgr)
    assert org.verify(tid, actor(org, "sun.supervisor")).status == "closed"


def test_rectify_needs_a_note(org):
    tid = _open(org)
    _work(org, tid, "start_rectification")
    with pytest.raises(Invalid):
        org.rectify(tid, actor(org, "wang.officer"), "   ")


def test_cannot_close_while_sensor_still_alarms(org):
    tid = _open(org)
    _work(org, tid, "rectify")
    with pytest.raises(Conflict, match="still reports"):
        org.verify(tid, actor(org, "zhao.manager"))
    org.apply_findings([finding(level=Level.CLEAR, ts=T0 + 5000)])
    assert org.verify(tid, actor(org, "zhao.manager")).status == "closed"


def test_alarm_returning_after_rectification_sends_ticket_back(org):
    tid = _open(org)
    org.apply_findings([finding(level=Level.CLEAR, ts=T0 + 1000)])
    _work(org, tid, "rectify")
    org.apply_findings([finding(level=Level.ORANGE, ts=T0 + 2000)])
    t = org.ticket(tid)
    assert t.status == "rectifying" and t.rectified_by is None
    assert org.events(tid)[-1].action == "rectification_failed"


def test_verification_rejected_goes_back_to_rectifying(org):
    tid = _open(org)
    org.apply_findings([finding(level=Level.CLEAR, ts=T0 + 1000)])
    _work(org, tid, "rectify")
    t = org.verify(tid, actor(org, "zhao.manager"), "photos do not show the bracing", accept=False)
    assert t.status == "rectifying" and t.rectified_ms is None


def test_sensor_alarm_after_closure_opens_linked_ticket_and_ignores_replays(org):
    tid = _open(org)
    org.apply_findings([finding(level=Level.CLEAR, ts=T0 + 1000)])
    _work(org, tid, "verify")
    # a redelivered old finding must not resurrect anything
    assert org.apply_findings([finding(ts=T0), finding(level=Level.CLEAR, ts=T0 + 1000)]) == 0
    assert len(org.tickets()) == 1
    # the sensor alarms again, later
    assert org.apply_findings([finding(ts=T0 + 10 * HOUR)]) == 1
    old, new = org.tickets()
    assert old.status == "closed" and new.status == "open" and new.reopened_from == old.id
    alerts = [p["alert_id"] for _, p in org.pending_alerts()]
    assert alerts == [f"t{old.id}-opened-L2", f"t{new.id}-opened-L2"]


def test_reopen_on_follow_up_review(org, clock):
    tid = _open(org)
    org.apply_findings([finding(level=Level.CLEAR, ts=T0 + 1000)])
    _work(org, tid, "verify")
    clock.advance(30 * 24 * HOUR)
    with pytest.raises(Forbidden):
        org.reopen(tid, actor(org, "wang.officer"), "x")
    t = org.reopen(tid, actor(org, "sun.supervisor"), "回头看: bracing removed")
    assert t.status == "open" and t.reopen_count == 1 and t.closed_ms is None
    assert t.deadline_ms == clock.now + 72 * HOUR  # orange: a fresh 72 h from the review


def test_reopen_refused_when_a_newer_ticket_is_open(org):
    tid = _open(org)
    org.apply_findings([finding(level=Level.CLEAR, ts=T0 + 1000)])
    _work(org, tid, "verify")
    org.apply_findings([finding(ts=T0 + 5 * HOUR)])
    with pytest.raises(Conflict, match="already open"):
        org.reopen(tid, actor(org, "sun.supervisor"), "回头看")
    assert org.ticket(tid).status == "closed"


def test_deadlines_per_level_and_upgrade_shortens(org):
    org.apply_findings([finding(device="a", level=Level.YELLOW, ts=T0), finding(device="b", level=Level.RED, ts=T0)])
    a, b = org.tickets()
    assert a.deadline_ms == T0 + 168 * HOUR and b.deadline_ms == T0 + 24 * HOUR
    org.apply_findings([finding(device="a", level=Level.RED, ts=T0 + HOUR)])
    assert org.ticket(a.id).deadline_ms == T0 + HOUR + 24 * HOUR
    ev = org.events(a.id)[-1]
    assert ev.action == "level_upgraded" and ev.detail["before"]["deadline_ms"] == T0 + 168 * HOUR


def test_escalation_marks_overdue_once(org, clock):
    org.apply_findings([finding(device="a", level=Level.RED), finding(device="b", level=Level.YELLOW)])
    a, b = org.tickets()
    assert org.escalate_overdue() == []
    clock.advance(25 * HOUR)
    assert org.escalate_overdue() == [a.id]
    assert org.escalate_overdue() == []  # idempotent
    assert [e.action for e in org.events(a.id)].count("escalated") == 1
    rows, total = org.search(actor(org, "sun.supervisor"), overdue=True)
    assert total == 1 and rows[0].id == a.id
    # rectified in time stops the clock
    clock.advance(200 * HOUR)
    _work(org, b.id, "rectify")
    assert org.escalate_overdue() == []


def test_major_by_rule_stops_work_and_deducts_credit(org):
    org.apply_findings([finding(level=Level.RED, major=True)])
    (t,) = org.tickets()
    assert t.major and t.stop_work and t.listed_supervision
    (d,) = org.credit_deductions()
    assert d.ticket_id == t.id and d.points == 10 and d.actor == "pipeline"
    org.apply_findings([finding(level=Level.CLEAR, ts=T0 + 1000)])
    _work(org, t.id, "rectify")
    with pytest.raises(Forbidden, match="supervisor"):
        org.verify(t.id, actor(org, "zhao.manager"))
    with pytest.raises(Forbidden):
        org.lift_stop_work(t.id, actor(org, "zhao.manager"), "ok")
    sup = actor(org, "sun.supervisor")
    with pytest.raises(Conflict, match="stop-work"):
        org.verify(t.id, sup)
    org.lift_stop_work(t.id, sup, "re-inspected, work may resume")
    assert org.verify(t.id, sup).status == "closed"


def test_major_by_hand_only_supervisor(org):
    tid = _open(org)
    with pytest.raises(Forbidden):
        org.flag_major(tid, actor(org, "zhao.manager"), "looks bad")
    t = org.flag_major(tid, actor(org, "sun.supervisor"), "wall cracking", credit_points=6)
    assert t.major and t.stop_work
    (d,) = org.credit_deductions()
    assert d.points == 6 and d.actor == "sun.supervisor"
    with pytest.raises(Conflict):
        org.flag_major(tid, actor(org, "sun.supervisor"), "again")


def test_inspection_ticket_and_dedup(org):
    officer = actor(org, "wang.officer")
    t = org.create_ticket(officer, site="cz-0002", family="formwork", kind="inspection.scaffold-ties", level=2,
                          title="scaffold ties missing on floors 3-5")
    assert t.origin == "inspection" and t.deadline_ms == T0 + 72 * HOUR
    with pytest.raises(Conflict, match="already open"):
        org.create_ticket(officer, site="cz-0002", family="formwork", kind="inspection.scaffold-ties", level=1,
                          title="again")
    with pytest.raises(Forbidden):
        org.create_ticket(officer, site="cz-0002", family="formwork", kind="x", level=1, title="x", major=True)
    from backlog.errors import NotFound
    with pytest.raises(NotFound):  # not their site
        org.create_ticket(officer, site="cz-0412", family="crane", kind="x", level=1, title="x")
    # an inspection ticket has no sensor condition: it can be closed once rectified
    _work(org, t.id, "verify")
    assert org.ticket(t.id).status == "closed"


def test_ops_work_fault_tickets_only(org):
    org.apply_findings([finding(kind="fault.silent", category="fault", level=Level.YELLOW),
                        finding(device="tc-01", family="crane", kind="crane.overload")])
    fault, hazard = org.tickets()
    ops = actor(org, "zhou.ops")
    assert org.acknowledge(fault.id, ops).status == "acknowledged"
    with pytest.raises(Forbidden, match="fault"):
        org.acknowledge(hazard.id, ops)
