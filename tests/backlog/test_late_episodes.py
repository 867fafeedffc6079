"""Tickets tell the episode; late (back-dated) findings from a gateway's buffered outage are ticketed exactly once;
a late clear never clears what newer readings hold; a retracted silence is closed by the pipeline.

Every test runs on SQLite and on a real PostgreSQL (the ``db_url`` fixture)."""

from __future__ import annotations

import pytest

from backlog.store import RETRACT_REASON, ticket_summary
from tests.backlog.conftest import actor
from tests.backlog.late_helpers import (ARRIVED, MIN, OUT_FROM, OUT_TO, crane, late_overload_episode, local_ms,
                                        silent)


def _alerts(b):
    return [p for _, p in b.pending_alerts()]


def _events(b, tid):
    return [e.action for e in b.events(tid)]


# ------------------------------------------------------------------------------------------------ the episode
def test_live_ticket_keeps_the_peak_and_the_clearing_reading(backlog):
    """The crane bug: a red ticket showed the last value (4 t) instead of the peak (11.5 t)."""
    t1 = local_ms("09:00")
    backlog.apply_findings([crane(3, t1, 11.2, episode={"start": t1, "peak": 11.5, "peak_ts": t1 + 20_000,
                                                        "peak_x": 11.5, "first_breach": t1 - 5000,
                                                        "last_breach": t1 + 20_000, "worst": 3})])
    backlog.apply_findings([crane(1, t1 + MIN, 9.2)])
    backlog.apply_findings([crane(0, t1 + 2 * MIN, 4.0, cleared_by={"value": 4.0, "ts": t1 + 2 * MIN - 3000})])
    (t,) = backlog.tickets()
    assert (t.peak_value, t.peak_ts_ms, t.peak_level) == (11.5, t1 + 20_000, 3)
    assert (t.first_breach_ms, t.last_breach_ms) == (t1 - 5000, t1 + MIN)
    assert (t.clear_value, t.cleared_ms, t.active, t.last_value) == (4.0, t1 + 2 * MIN - 3000, False, 4.0)
    s = ticket_summary(t)
    assert (s["peak_value"], s["peak_ts_ms"], s["clear_value"], s["late"], s["rated"]) == (11.5, t1 + 20_000, 4.0,
                                                                                         False, 10.0)
    (a,) = _alerts(backlog)
    assert a["ticket"]["peak_value"] == 11.5  # what the alert leads with


def test_a_bigger_value_at_a_lower_level_is_still_the_peak(backlog):
    t1 = local_ms("09:00")
    backlog.apply_findings([crane(2, t1, 10.1), crane(3, t1 + 1000, 11.0), crane(3, t1 + 2000, 11.9),
                            crane(2, t1 + 3000, 10.5)])
    (t,) = backlog.tickets()
    assert (t.peak_value, t.peak_ts_ms, t.peak_level, t.level) == (11.9, t1 + 2000, 3, 2)


# ------------------------------------------------------------------------------------------------ late episodes
def test_late_overload_opens_one_back_dated_major_ticket_and_one_alert(org):
    assert org.credit_deductions() == []
    episode = late_overload_episode()
    assert org.apply_findings(episode) == 1
    (t,) = org.tickets()
    assert t.opened_ms == OUT_FROM + 30_000 < ARRIVED, "back-dated to the measurement, not the arrival"
    assert t.late is True and (t.outage_from_ms, t.outage_to_ms) == (OUT_FROM, OUT_TO)
    assert t.arrival_delay_s == pytest.approx((ARRIVED - t.opened_ms) / 1000)
    assert (t.peak_value, t.peak_ts_ms, t.peak_level) == (11.5, OUT_FROM + 90_000, 3)
    assert t.first_breach_ms == OUT_FROM + 30_000
    assert t.major and t.stop_work and t.listed_supervision, "a red overload in a buffered window is still major"
    assert t.status == "open" and not t.active and t.level == 0
    assert (t.cleared_ms, t.clear_value) == (OUT_FROM + 210_000, 4.0)
    assert len(org.credit_deductions()) == 1
    (a,) = _alerts(org)
    assert a["alert_id"] == f"t{t.id}-opened-L3" and a["action"] == "opened"
    assert a["ticket"]["late"] and a["ticket"]["peak_value"] == 11.5 and a["ticket"]["clear_value"] == 4.0
    assert a["finding"]["evidence"]["late"] and a["finding"]["level"] == 3

    events = _events(org, t.id)
    # replay after a crash: nothing changes, no second alert, no second credit deduction
    assert org.apply_findings(episode) == 0
    assert org.apply_findings(list(reversed(episode))) == 0
    (t2,) = org.tickets()
    assert (t2.id, t2.count, t2.peak_value, t2.cleared_ms) == (t.id, t.count, 11.5, t.cleared_ms)
    assert _events(org, t.id) == events and len(_alerts(org)) == 1 and len(org.credit_deductions()) == 1


def test_late_episode_split_over_batches_and_interleaved_with_live_findings(backlog):
    live_other = [crane(1, ARRIVED + i * 1000, 9.1, device="tc-02") for i in range(3)]
    ep = late_overload_episode()
    backlog.apply_findings([live_other[0], ep[0]])
    backlog.apply_findings([ep[1], live_other[1]])
    backlog.apply_findings([ep[2], live_other[2], ep[0]])  # ep[0] again: a replayed record
    backlog.apply_findings(ep + live_other)  # the whole lot again
    late = [t for t in backlog.tickets() if t.device == "tc-01"]
    assert len(late) == 1
    t = late[0]
    assert (t.opened_ms, t.peak_value, t.peak_level, t.cleared_ms) == (OUT_FROM + 30_000, 11.5, 3, OUT_FROM + 210_000)
    ids = [a["alert_id"] for a in _alerts(backlog) if a["ticket"]["device"] == "tc-01"]
    assert ids == [f"t{t.id}-opened-L2", f"t{t.id}-upgraded-L3"], "one alert per level, never a copy"


def test_late_clear_never_clears_a_ticket_live_readings_hold(backlog):
    """The crane is overloaded NOW (live, 02:20); the buffered 02:10–02:14 episode ended at 02:13:30 — that end
    is history and must not clear the live alarm."""
    live = local_ms("02:20")
    assert backlog.apply_findings([crane(1, live, 9.3)]) == 1
    (t,) = backlog.tickets()
    ep = late_overload_episode()
    assert backlog.apply_findings(ep) == 1  # red inside the window: an upgrade of the open ticket, one alert
    t = backlog.ticket(t.id)
    assert t.active and t.level == 1 and t.cleared_ms is None and t.clear_value is None
    assert (t.peak_level, t.peak_value, t.last_seen_ms) == (3, 11.5, live)
    assert t.opened_ms == live and t.first_breach_ms == OUT_FROM + 30_000
    acts = _events(backlog, t.id)
    assert "late_episode" in acts and "late_episode_ended" in acts and "condition_cleared" not in acts
    ended = [e for e in backlog.events(t.id) if e.action == "late_episode_ended"][0]
    assert ended.detail["outage"] == [OUT_FROM, OUT_TO] and ended.detail["clear_value"] == 4.0
    assert [a["alert_id"] for a in _alerts(backlog)] == [f"t{t.id}-opened-L1", f"t{t.id}-upgraded-L3"]
    # replay of everything, interleaved
    assert backlog.apply_findings([crane(1, live, 9.3)] + ep) == 0
    assert _events(backlog, t.id) == acts and len(backlog.tickets()) == 1
    # live readings still hold it: a live clear is what clears it
    backlog.apply_findings([crane(0, live + MIN, 3.0, cleared_by={"value": 3.0, "ts": live + MIN})])
    t = backlog.ticket(t.id)
    assert not t.active and (t.cleared_ms, t.clear_value) == (live + MIN, 3.0)


def test_late_clear_clears_when_nothing_newer_holds_the_alarm(backlog):
    """A live ticket opened before the outage; its buffered readings show it cleared during the outage."""
    before = OUT_FROM - 2 * MIN
    backlog.apply_findings([crane(2, before, 10.4)])
    backlog.apply_findings([crane(0, OUT_FROM + MIN, 5.0, late=True, cleared_by={"value": 5.0, "ts": OUT_FROM + MIN})])
    (t,) = backlog.tickets()
    assert not t.active and (t.cleared_ms, t.clear_value) == (OUT_FROM + MIN, 5.0) and not t.late


def test_late_findings_older_than_a_closed_ticket_open_a_new_one(org):
    """Today's time rule would drop a back-dated hazard older than a closed ticket's last_seen_ms; it must not."""
    live = local_ms("02:20")
    org.apply_findings([crane(2, live, 10.4), crane(0, live + MIN, 4.0)])
    (t,) = org.tickets()
    org.acknowledge(t.id, actor(org, "wang.officer"))
    org.start_rectification(t.id, actor(org, "wang.officer"))
    org.rectify(t.id, actor(org, "wang.officer"), "load limiter reset")
    org.verify(t.id, actor(org, "zhao.manager"))
    org.apply_findings(late_overload_episode())
    tickets = org.tickets()
    assert len(tickets) == 2 and tickets[1].late and tickets[1].opened_ms < tickets[0].opened_ms
    assert tickets[1].reopened_from is None, "it happened before that closure: not a repeat after it"


# ------------------------------------------------------------------------------------------------ retracted silence
@pytest.mark.parametrize("status", ["open", "acknowledged", "rectifying", "rectified"])
def test_retracted_silence_is_closed_by_the_pipeline(org, status):
    org.apply_findings([silent(1, OUT_FROM + 2 * MIN, gateway=None)])
    (t,) = org.tickets()
    ops = actor(org, "zhou.ops")
    steps = ["acknowledge", "start_rectification", "rectify"][:["open", "acknowledged", "rectifying",
                                                                 "rectified"].index(status)]
    for step in steps:
        if step == "rectify":
            org.rectify(t.id, ops, "checked the cable")
        else:
            getattr(org, step)(t.id, ops)
    assert org.ticket(t.id).status == status
    clear = silent(0, ARRIVED, gateway=None, retracted=True, cleared_by={"value": 0.0, "ts": ARRIVED})
    assert org.apply_findings([clear]) == 0
    t = org.ticket(t.id)
    assert (t.status, t.closed_by, t.active, t.level) == ("closed", "pipeline", False, 0)
    ev = org.events(t.id)[-1]
    assert ev.action == "retracted" and ev.detail["reason"] == RETRACT_REASON
    assert ev.detail["before"]["status"] == status and ev.detail["after"]["status"] == "closed"
    assert ev.detail["measured_during"] == [OUT_FROM, OUT_TO]
    n = len(org.events(t.id))
    org.apply_findings([clear])  # replay
    assert len(org.events(t.id)) == n and len(org.tickets()) == 1


def test_a_plain_silent_clear_does_not_close(backlog):
    backlog.apply_findings([silent(1, OUT_FROM, gateway=None)])
    backlog.apply_findings([silent(0, OUT_FROM + MIN, gateway=None)])
    (t,) = backlog.tickets()
    assert t.status == "open" and not t.active


def test_health_findings_are_never_tickets_nor_alerts(backlog):
    from tests.backlog.late_helpers import health

    assert backlog.apply_findings([health("tc-01", "silent", OUT_FROM), health("tc-02", "faulty", OUT_FROM)]) == 0
    assert backlog.tickets() == [] and _alerts(backlog) == []
    assert [h.state for h in backlog.device_health()] == ["silent", "faulty"]


def test_concurrent_workers_apply_one_late_episode_once(pg_url):
    """Four workers (own engines) race on the same buffered episode on PostgreSQL: one ticket, one alert."""
    import threading

    from backlog.store import Backlog

    Backlog(pg_url).engine.dispose()
    barrier, errors = threading.Barrier(4), []

    def run():
        b = Backlog(pg_url, create=False)
        try:
            barrier.wait()
            for _ in range(3):
                b.apply_findings(late_overload_episode())
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)
        finally:
            b.engine.dispose()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    b = Backlog(pg_url, create=False)
    try:
        (t,) = b.tickets()
        assert (t.peak_value, t.peak_level, t.cleared_ms, t.major) == (11.5, 3, OUT_FROM + 210_000, True)
        assert [a["alert_id"] for a in _alerts(b)] == [f"t{t.id}-opened-L3"]
        assert len(b.credit_deductions()) == 1
    finally:
        b.engine.dispose()


def test_a_flush_delivered_newest_first_back_dates_the_ticket_to_where_the_episode_began(backlog):
    red, orange = OUT_FROM + 2 * MIN, OUT_FROM + 30_000
    # the later part of the episode arrives first (reverse-order flush), then the frame where it began
    backlog.apply_findings([crane(3, red, 11.4, late=True)])
    (t,) = backlog.tickets()
    assert t.opened_ms == red
    backlog.apply_findings([crane(2, orange, 10.1, late=True)])
    (t,) = backlog.tickets()
    assert (t.opened_ms, t.first_breach_ms, t.peak_level) == (orange, orange, 3)
    assert [e.action for e in backlog.events(t.id)].count("back_dated") == 1
