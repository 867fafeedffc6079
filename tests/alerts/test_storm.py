"""Storm control: a site's storm becomes one message, group_interval, rate limits (red/major never held),
silences with expiry and an audit trail, quiet hours (never for red or major). Real local webhook receiver."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from tests.alerts.conftest import MIN, alert, config, hook, make_notifier, run

SH = ZoneInfo("Asia/Shanghai")


def cfg_for(http, *, group_wait="30s", group_interval="5min", extra=""):
    return config("""
        defaults: {{group_wait: {gw}, group_interval: {gi}, remind_red_every: 0, retry_backoff: 0.01s}}
        receivers:
          officer:
            channels: [{officer}]
            {extra}
        routes:
          - name: all
            tiers: [{{receivers: [officer]}}]
        """, officer=hook(http, "officer"), gw=group_wait, gi=group_interval, extra=extra)


def bodies(http):
    out = []
    for r in http.got("/hook"):
        assert r.verified is True
        out.append(r.json)
    return out


def test_a_sites_storm_becomes_one_message(http, secrets_env, db_url, clock):
    n = make_notifier(cfg_for(http), db_url, clock)
    for i in range(6):  # six devices on cz-0001 alarm within 20 s
        run(n.deliver(alert(100 + i, device=f"pit-0{i}", level=2, family="pit", kind="pit.wall_top_horizontal",
                            metric="wall_top_horizontal", value=25 + i, threshold=30)))
        clock.advance(4)
    run(n.deliver(alert(120, site="cz-0002", device="fw-01", level=2, family="formwork")))
    assert bodies(http) == [], "still inside group_wait"
    clock.advance(30 - 24 + 0.001)  # 30 s after the first alert of cz-0001
    run(n.flush())
    got = bodies(http)
    assert len(got) == 1, [b["alert_id"] for b in got]
    g = got[0]
    assert g["kind"] == "group" and g["count"] == 6
    assert sorted(it["alert_id"] for it in g["items"]) == sorted(f"t{100 + i}-opened-L2" for i in range(6))
    assert "cz-0001" in g["text"] and "6处告警" in g["text"]
    assert http.got("/hook")[0].headers["Idempotency-Key"].startswith("g-")
    clock.advance(24)
    run(n.flush())
    assert [b["alert_id"] for b in bodies(http)[1:]] == ["t120-opened-L2"], "cz-0002 is its own group"
    # every item is delivered exactly once, through that one message
    rows = [d for d in n.log_db.all() if d.ticket_id and 100 <= d.ticket_id < 106]
    assert len(rows) == 6 and {d.status for d in rows} == {"delivered"} and len({d.notification_id for d in rows}) == 1


def test_group_interval_batches_later_alerts_of_the_same_site(http, secrets_env, db_url, clock):
    n = make_notifier(cfg_for(http), db_url, clock)
    run(n.deliver(alert(200, level=2)))
    clock.advance(30)
    run(n.flush())
    assert len(bodies(http)) == 1
    clock.advance(30)
    run(n.deliver(alert(201, device="tc-02", level=2)))
    clock.advance(MIN)
    run(n.deliver(alert(202, device="tc-03", level=2)))
    clock.advance(5 * MIN - 90 - 1)  # 1 s before last message + group_interval
    run(n.flush())
    assert len(bodies(http)) == 1
    clock.advance(1)
    run(n.flush())
    assert len(bodies(http)) == 2 and bodies(http)[1]["count"] == 2


def test_red_storm_is_grouped_but_not_held_by_group_interval(http, secrets_env, db_url, clock):
    n = make_notifier(cfg_for(http, group_wait="10s"), db_url, clock)
    run(n.deliver(alert(300, level=2)))
    clock.advance(10)
    run(n.flush())
    for i in range(3):
        run(n.deliver(alert(301 + i, device=f"tc-1{i}", level=3)))
        clock.advance(2)
    clock.advance(4)  # 10 s after the first red
    run(n.flush())
    got = bodies(http)
    assert len(got) == 2 and got[1]["count"] == 3, "red: one grouped message after group_wait, not group_interval"


def test_rate_limit_merges_overflow_and_never_holds_red(http, secrets_env, db_url, clock):
    n = make_notifier(cfg_for(http, group_wait="0", extra="rate_limit: {max: 2, per: 1h}"), db_url, clock)
    for i, site in enumerate(["cz-0001", "cz-0002", "cz-0003", "cz-0004"]):
        n.ingest(alert(400 + i, site=site, level=1))
    run(n.flush())
    got = bodies(http)
    assert len(got) == 2, "limit 2: one message, and the overflow merged into one digest"
    assert sorted(b["count"] for b in got) == [1, 3]
    clock.advance(MIN)
    run(n.deliver(alert(410, site="cz-0005", level=2)))
    assert len(bodies(http)) == 2, "orange waits for the window"
    run(n.deliver(alert(411, site="cz-0006", level=3)))
    run(n.deliver(alert(412, site="cz-0007", level=1, major=True)))
    assert [b["alert_id"] for b in bodies(http)[2:]] == ["t411-opened-L3", "t412-opened-L1"], "red/major pass"
    clock.advance(59 * MIN + 59)
    run(n.flush())
    assert len(bodies(http)) == 4, "the red/major messages count in the window too"
    clock.advance(2)
    run(n.flush())
    assert "t410-opened-L2" in [b["alert_id"] for b in bodies(http)[4:]], "held, not dropped"


def test_silence_with_expiry_and_audit(http, secrets_env, db_url, clock):
    n = make_notifier(cfg_for(http, group_wait="0"), db_url, clock)
    now = int(clock() * 1000)
    sil = n.log_db.add_silence({"site": ["cz-0001"], "device": ["tc-01"]}, now, now + 2 * 3_600_000, "zhou.ops",
                               "tc-01 annual inspection (load tests)", now)
    run(n.deliver(alert(500, device="tc-01")))  # red, but explicitly silenced by a person
    run(n.deliver(alert(501, device="tc-02")))
    assert [b["alert_id"] for b in bodies(http)] == ["t501-opened-L3"]
    row = n.log_db.item("t500-opened-L3", "officer")
    assert row.status == "silenced" and f"silence #{sil.id}" in row.note and "zhou.ops" in row.note
    clock.advance(2 * 3600 + 1)  # the silence expired
    run(n.deliver(alert(502, device="tc-01")))
    assert [b["alert_id"] for b in bodies(http)][-1] == "t502-opened-L3"
    # expire by hand, audit trail, and the trail is append-only
    sil2 = n.log_db.add_silence({"site": "cz-0009"}, int(clock() * 1000), int(clock() * 1000) + 3_600_000, "li",
                                "pour", int(clock() * 1000))
    n.log_db.expire_silence(sil2.id, "wang", int(clock() * 1000) + 1, "pour finished")
    assert not n.log_db.silences(active_at_ms=int(clock() * 1000) + 2)
    trail = [(a.action, a.actor, a.entity_id) for a in n.log_db.audit_trail()]
    assert trail == [("silence_added", "zhou.ops", str(sil.id)), ("silence_added", "li", str(sil2.id)),
                     ("silence_expired", "wang", str(sil2.id))]
    with pytest.raises(Exception, match="append-only"):
        with n.log_db.engine.begin() as c:
            c.execute(text("DELETE FROM alert_audit"))


def test_quiet_hours_hold_orange_but_never_red_or_major(http, secrets_env, db_url, clock):
    extra = "quiet_hours: {start: '22:00', end: '07:00', tz: Asia/Shanghai}"
    n = make_notifier(cfg_for(http, group_wait="0", extra=extra), db_url, clock)
    clock.now = datetime(2026, 10, 3, 23, 30, tzinfo=SH).timestamp()
    run(n.deliver(alert(600, site="cz-0001", level=2)))
    run(n.deliver(alert(601, site="cz-0002", level=3)))
    run(n.deliver(alert(602, site="cz-0003", level=1, major=True)))
    assert sorted(b["alert_id"] for b in bodies(http)) == ["t601-opened-L3", "t602-opened-L1"]
    clock.now = datetime(2026, 10, 4, 6, 59, tzinfo=SH).timestamp()
    run(n.flush())
    assert len(bodies(http)) == 2
    clock.now = datetime(2026, 10, 4, 7, 0, tzinfo=SH).timestamp()
    run(n.flush())
    assert bodies(http)[-1]["alert_id"] == "t600-opened-L2"
