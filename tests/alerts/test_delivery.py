"""Delivery guarantees against a real local receiver: retry with backoff on 500, failover on timeout, durable
retry when every channel is down, and a notifier killed mid-delivery: a second notifier over the same delivery
log loses nothing and duplicates nothing (counted by Idempotency-Key at the receiver)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections import Counter

from sqlalchemy import update

from alerts.delivery_log import Notification
from tests.alerts.conftest import alert, config, make_notifier, run

CFG = """
defaults: {{group_wait: 0, retry_attempts: 3, retry_backoff: 0.01s, max_backoff: 10min}}
receivers:
  officer:
    channels:
      - {{type: webhook, url: '{hook}', secret: 'env:T_HOOK_SECRET', timeout: {timeout}}}
      - {{type: wecom, endpoint: '{wecom}', key: 'env:T_WECOM_KEY'}}
routes: [{{name: all, group_by: [], tiers: [{{receivers: [officer]}}]}}]
"""


def cfg(http, timeout="2s"):
    return config(CFG, hook=http.url("/hook"), wecom=http.url("/wecom"), timeout=timeout)


def accepted(http, path="/hook") -> Counter:
    return Counter(r.headers["Idempotency-Key"] for r in http.got(path))


def test_500_is_retried_with_backoff_then_delivered(http, secrets_env, db_url, clock):
    http.fail["/hook"] = 2
    n = make_notifier(cfg(http), db_url, clock)
    assert run(n.deliver(alert(1))) == 1
    assert [r.status for r in http.requests] == [500, 500, 200]
    assert [(a.channel, a.ok) for a in n.log_db.attempts()] == [("webhook", False), ("webhook", False),
                                                                 ("webhook", True)]
    d = n.log_db.item("t1-opened-L3", "officer")
    assert d.status == "delivered" and d.channel == "webhook" and d.attempts == 3


def test_timeout_falls_over_to_the_next_channel(http, secrets_env, db_url, clock):
    http.hang["/hook"] = 1.0
    n = make_notifier(cfg(http, timeout="0.2s"), db_url, clock)
    assert run(n.deliver(alert(2))) == 1
    att = n.log_db.attempts()
    assert [(a.channel, a.ok) for a in att] == [("webhook", False)] * 3 + [("wecom", True)]
    assert all("Timeout" in a.error for a in att[:3])
    assert n.log_db.item("t2-opened-L3", "officer").channel == "wecom"
    assert len(http.got("/wecom")) == 1


def test_everything_down_is_retried_durably_and_never_dropped(http, secrets_env, db_url, clock):
    http.fail["/hook"] = 10**6
    http.fail["/wecom"] = 10**6
    n = make_notifier(cfg(http), db_url, clock)
    assert run(n.deliver(alert(3))) == 0
    (note,) = n.log_db.notifications()
    wait_s = (note.next_attempt_ms - clock() * 1000) / 1000
    assert note.status == "pending" and 2.5 <= wait_s <= 5.0, "first round backoff 5 s with jitter"
    assert run(n.flush()) == 0 and len(http.requests) == 6, "not before the backoff"
    clock.advance(wait_s)
    assert run(n.flush()) == 0 and len(http.requests) == 12
    (note,) = n.log_db.notifications()
    assert note.rounds == 2 and 5.0 <= (note.next_attempt_ms - clock() * 1000) / 1000 <= 10.0, "exponential"
    http.fail.clear()  # the receiver is back
    clock.advance(10)
    assert run(n.flush()) == 1
    assert accepted(http) == {"t3-opened-L3": 1}
    assert n.log_db.item("t3-opened-L3", "officer").status == "delivered"


def test_notifier_killed_mid_delivery_loses_and_duplicates_nothing(http, secrets_env, db_url, clock):
    a = make_notifier(cfg(http, timeout="5s"), db_url, clock)
    assert run(a.deliver(alert(10))) == 1  # delivered before the crash

    # the receiver stalls: the next requests hang 1 s and then fail; notifier A is killed while waiting
    http.hang["/hook"] = 1.0
    http.fail["/hook"] = 2

    async def crash_a():
        a.ingest(alert(11))
        a.ingest(alert(12))
        task = asyncio.ensure_future(a.flush())
        await asyncio.sleep(0.3)
        task.cancel()  # SIGKILL stand-in: no cleanup code of A runs after this
        try:
            await task
        except asyncio.CancelledError:
            pass

    run(crash_a())
    a.ingest(alert(13))  # queued (the Kafka offset may commit), then A is gone before sending it
    asyncio.run(asyncio.sleep(1.2))  # the stalled requests finish (refused) at the receiver
    http.hang.clear()

    b = make_notifier(cfg(http), db_url, clock)  # the restarted worker
    for tid in (10, 11, 12, 13):  # Kafka redelivers everything after the last committed offset
        b.ingest(alert(tid))
    run(b.flush())
    assert accepted(http) == {"t10-opened-L3": 1, "t13-opened-L3": 1}, "11 and 12 are still leased to A"
    clock.advance(b.lease_s + 6)  # A's lease ends
    run(b.flush())
    run(b.flush())
    assert accepted(http) == {f"t{t}-opened-L3": 1 for t in (10, 11, 12, 13)}
    assert {d.alert_id: d.status for d in b.log_db.all()} == {f"t{t}-opened-L3": "delivered" for t in (10, 11, 12, 13)}
    assert all(r.verified for r in http.got("/hook"))


def test_a_dead_notifier_process_on_this_host_is_taken_over_at_once(http, secrets_env, db_url, clock):
    a = make_notifier(cfg(http), db_url, clock)
    a.ingest(alert(20))
    a._batch(int(clock() * 1000))
    (note,) = a.log_db.notifications()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    with a.log_db.session.begin() as s:  # as if worker pid `dead` had claimed it and was SIGKILLed
        s.execute(update(Notification).where(Notification.id == note.id).values(
            status="sending", owner=f"{socket.gethostname()}:{dead}:x", lease_until_ms=int(clock() * 1000) + 10**7))
    b = make_notifier(cfg(http), db_url, clock)  # recovery runs on start
    assert run(b.flush()) == 1
    assert accepted(http) == {"t20-opened-L3": 1}


def test_unrouted_alert_is_logged_not_dropped(http, secrets_env, db_url, clock):
    c = config("""
        receivers: {{officer: {{channels: [{{type: webhook, url: '{hook}'}}]}}}}
        routes: [{{name: only-0002, match: {{site: cz-0002}}, tiers: [{{receivers: [officer]}}]}}]
        """, hook=http.url("/hook"))
    n = make_notifier(c, db_url, clock)
    assert run(n.deliver(alert(30, site="cz-0001"))) == 0
    (row,) = n.log_db.all()
    assert (row.alert_id, row.receiver, row.status) == ("t30-opened-L3", "(unrouted)", "unrouted")


def test_two_notifiers_racing_send_each_message_once(http, secrets_env, db_url, clock):
    c = cfg(http)
    a, b = make_notifier(c, db_url, clock), make_notifier(c, db_url, clock)
    for tid in range(50, 70):
        a.ingest(alert(tid, site=f"cz-{tid:04d}"))
        b.ingest(alert(tid, site=f"cz-{tid:04d}"))  # both workers saw every alert

    async def both():
        return await asyncio.gather(a.flush(), b.flush())

    sent = asyncio.run(both())
    assert sum(sent) == 20
    assert Counter(r.headers["Idempotency-Key"] for r in http.got("/hook")) == {f"t{t}-opened-L3": 1
                                                                               for t in range(50, 70)}


def test_a_delivery_log_from_before_issue_6_is_extended_in_place(tmp_path):
    """The pre-issue-6 table (same columns, same unique key) gains the new columns; its rows still guard."""
    import sqlite3

    from alerts.delivery_log import DeliveryLog

    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.execute("""CREATE TABLE alert_deliveries (id INTEGER PRIMARY KEY, alert_id VARCHAR(120) NOT NULL,
                   receiver VARCHAR(120) NOT NULL, channel VARCHAR(32) NOT NULL, status VARCHAR(16) NOT NULL,
                   attempts INTEGER NOT NULL, last_error TEXT, first_attempt_ms BIGINT NOT NULL, delivered_ms BIGINT,
                   CONSTRAINT uq_delivery_alert_receiver UNIQUE (alert_id, receiver))""")
    con.execute("INSERT INTO alert_deliveries VALUES (1, 't1-opened-L3', 'webhook', 'webhook', 'delivered', 1, NULL,"
                " 1, 2)")
    con.commit()
    con.close()
    lg = DeliveryLog(f"sqlite:///{path}")
    assert lg.delivered("t1-opened-L3", "webhook")
    assert not lg.enqueue("t1-opened-L3", "webhook", kind="alert", payload={}, ticket_id=1, group_key="",
                          urgent=True, at_ms=3), "an alert delivered before the upgrade is not sent again"
    assert lg.enqueue("t2-opened-L3", "webhook", kind="alert", payload={"a": 1}, ticket_id=2, group_key="",
                      urgent=True, at_ms=3)
    assert lg.item("t2-opened-L3", "webhook").payload == {"a": 1}
