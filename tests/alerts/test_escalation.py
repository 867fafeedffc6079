"""On-call tiers and escalation, driven by a controllable clock (no sleeping): tier 1 at once, tier 2 after
15 min unacknowledged, acknowledgement stops it, major hazards reach the bureau, red reminders, resolution
notices. Every message goes through a real local webhook receiver that checks its HMAC."""

from __future__ import annotations

import pytest

from tests.alerts.conftest import MIN, alert, config, hook, make_notifier, run, to

CFG = """
defaults:
  group_wait: 0
  group_interval: 0
  remind_red_every: 30min
  retry_backoff: 0.01s
receivers:
  officer: {{user: wang.officer, channels: [{officer}]}}
  manager: {{channels: [{manager}]}}
  bureau: {{channels: [{bureau}]}}
routes:
  - name: jianan
    match: {{site: cz-0001}}
    group_by: []
    tiers:
      - {{name: site officer, receivers: [officer]}}
      - {{name: company manager, after: 15min, receivers: [manager]}}
      - {{name: bureau, major_only: true, receivers: [bureau]}}
"""


@pytest.fixture
def cfg(http, secrets_env):
    return config(CFG, officer=hook(http, "officer"), manager=hook(http, "manager"), bureau=hook(http, "bureau"))


def who(http) -> list[tuple[str, str, str]]:
    """(receiver, kind, alert id) of every accepted, signature-verified webhook call, in order."""
    out = []
    for r in http.got("/hook"):
        assert r.verified is True, r.why
        out.append((to(r), r.json["kind"], r.json["alert_id"]))
    return out


def test_tier1_at_once_tier2_only_after_15_minutes_unacknowledged(cfg, http, db_url, clock, states):
    n = make_notifier(cfg, db_url, clock, states)
    states.set(1)
    assert run(n.deliver(alert(1))) == 1
    assert who(http) == [("officer", "alert", "t1-opened-L3")]

    clock.advance(14 * MIN + 59)
    run(n.tick())
    assert [w[0] for w in who(http)] == ["officer"], "not yet: 14 min 59 s"

    clock.advance(1)
    run(n.tick())
    assert who(http)[1:] == [("manager", "escalation", "t1-opened-L3")]
    esc = http.got("/hook")[1].json
    assert "15分钟未确认" in esc["text"] and esc["ticket"]["id"] == 1
    assert esc["items"][0]["item_kind"] == "escalation"

    clock.advance(5 * MIN)
    run(n.tick())
    run(n.tick())
    assert len(who(http)) == 2, "escalation happens once"


def test_acknowledged_alert_does_not_escalate(cfg, http, db_url, clock, states):
    n = make_notifier(cfg, db_url, clock, states)
    states.set(2)
    run(n.deliver(alert(2)))
    clock.advance(10 * MIN)
    states.set(2, status="acknowledged", acknowledged_ms=int(clock() * 1000))
    run(n.tick())
    clock.advance(60 * MIN)
    run(n.tick())
    assert [w[0] for w in who(http) if w[1] != "reminder"] == ["officer"]
    assert n.log_db.incident(2).acked_ms is not None


def test_major_hazard_reaches_the_bureau_at_once_and_a_normal_one_does_not(cfg, http, db_url, clock, states):
    n = make_notifier(cfg, db_url, clock, states)
    states.set(3, major=True)
    states.set(4, major=False, level=2)
    run(n.deliver(alert(3, major=True)))
    run(n.deliver(alert(4, device="tc-02", level=2)))
    got = sorted((w[0], w[2]) for w in who(http))
    assert got == [("bureau", "t3-opened-L3"), ("officer", "t3-opened-L3"), ("officer", "t4-opened-L2")]


def test_flagged_major_later_reaches_the_bureau_on_the_next_tick(cfg, http, db_url, clock, states):
    n = make_notifier(cfg, db_url, clock, states)
    states.set(5, level=2)
    run(n.deliver(alert(5, level=2)))
    states.set(5, level=2, major=True)  # a supervisor flagged it (POST /tickets/5/major)
    clock.advance(MIN)
    run(n.tick())
    assert sorted(w[0] for w in who(http)) == ["bureau", "officer"]


def test_red_reminders_until_rectified(cfg, http, db_url, clock, states):
    n = make_notifier(cfg, db_url, clock, states)
    states.set(6)
    states.set(7, level=1)
    run(n.deliver(alert(6)))
    run(n.deliver(alert(7, device="pit-01", level=1, family="pit", kind="pit.wall_top_horizontal")))
    clock.advance(10 * MIN)
    states.set(6, status="acknowledged", acknowledged_ms=int(clock() * 1000))
    states.set(7, level=1, status="acknowledged", acknowledged_ms=int(clock() * 1000))
    run(n.tick())
    clock.advance(20 * MIN)  # 30 min
    run(n.tick())
    run(n.tick())
    reminders = [w for w in who(http) if w[1] == "reminder"]
    assert reminders == [("officer", "reminder", "t6-remind-1")], "one reminder, red only, no duplicate"
    clock.advance(15 * MIN)  # 45 min
    run(n.tick())
    assert len([w for w in who(http) if w[1] == "reminder"]) == 1
    clock.advance(15 * MIN)  # 60 min
    run(n.tick())
    assert [w[2] for w in who(http) if w[1] == "reminder"] == ["t6-remind-1", "t6-remind-2"]
    assert "第2次提醒" in http.got("/hook")[-1].json["text"]
    states.set(6, status="rectified")
    clock.advance(60 * MIN)
    run(n.tick())
    assert len([w for w in who(http) if w[1] == "reminder"]) == 2, "rectified: no more reminders"


def test_resolution_notice_once_to_everyone_told(cfg, http, db_url, clock, states):
    n = make_notifier(cfg, db_url, clock, states)
    states.set(8, level=2)
    run(n.deliver(alert(8, level=2)))
    clock.advance(16 * MIN)
    run(n.tick())  # escalated to the manager
    states.set(8, level=0, active=False)  # the sensor says the condition cleared
    run(n.tick())
    run(n.tick())
    resolved = [w for w in who(http) if w[1] == "resolved"]
    assert sorted(resolved) == [("manager", "resolved", "t8-resolved-1"), ("officer", "resolved", "t8-resolved-1")]
    assert "监测值已恢复正常" in http.got("/hook")[-1].json["text"]
    states.set(8, level=0, active=False, status="closed")
    clock.advance(MIN)
    run(n.tick())
    assert len([w for w in who(http) if w[1] == "resolved"]) == 2, "closing after the clear adds no second notice"
    assert n.log_db.incident(8).done


def test_upgrade_goes_to_every_tier_already_told(cfg, http, db_url, clock, states):
    n = make_notifier(cfg, db_url, clock, states)
    states.set(9, level=2)
    run(n.deliver(alert(9, level=2)))
    clock.advance(15 * MIN)
    run(n.tick())
    states.set(9, level=3)
    run(n.deliver(alert(9, level=3, action="upgraded")))
    ups = sorted(w[0] for w in who(http) if w[2] == "t9-upgraded-L3")
    assert ups == ["manager", "officer"]
    run(n.deliver(alert(9, level=3, action="upgraded")))  # Kafka redelivers it
    assert len([w for w in who(http) if w[2] == "t9-upgraded-L3"]) == 2


def test_escalation_counts_from_when_the_alert_was_raised_not_when_a_late_notifier_saw_it(cfg, http, db_url, clock,
                                                                                           states):
    n = make_notifier(cfg, db_url, clock, states)
    a = alert(10)  # created at T0
    clock.advance(20 * MIN)  # the notifier was down for 20 minutes
    states.set(10)
    run(n.deliver(a))
    run(n.tick())
    assert [(w[0], w[1]) for w in who(http)] == [("officer", "alert"), ("manager", "escalation")]
