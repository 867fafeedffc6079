"""The HTTP channels keep their connection open between messages (a client per message paid a TCP connect, on
https a TLS handshake, and CPU on the worker's event loop for every alarm): seen from the receiver, consecutive
messages of one channel arrive over one connection, and nothing is lost or doubled doing so."""

from __future__ import annotations

import asyncio

from alerts.channels.base import close_pooled_clients
from tests.alerts.conftest import alert, config, make_notifier, run

CFG = """
defaults:
  group_wait: 0
  retry_backoff: 0.01s
  retry_attempts: 3
receivers:
  r-webhook: {{channels: [{{type: webhook, url: '{hook}', secret: 'env:T_HOOK_SECRET'}}]}}
  r-wecom: {{channels: [{{type: wecom, endpoint: '{wecom}', key: 'env:T_WECOM_KEY'}}]}}
  r-ding: {{channels: [{{type: dingtalk, endpoint: '{ding}', access_token: 'env:T_DING_TOKEN',
                        secret: 'env:T_DING_SECRET'}}]}}
routes:
  - name: all
    group_by: []
    tiers: [{{receivers: [r-webhook, r-wecom, r-ding]}}]
"""


def _cfg(http):
    return config(CFG, hook=http.url("/hook"), wecom=http.url("/wecom"), ding=http.url("/dingtalk"))


def test_consecutive_messages_of_a_channel_share_one_connection(http, secrets_env, db_url, clock):
    n = make_notifier(_cfg(http), db_url, clock)

    async def alarms():
        for tid in range(1, 6):  # one at a time, as alarms come: each flush sends one message per receiver
            assert await n.deliver(alert(tid, site=f"cz-{tid:04d}")) == 3
        await close_pooled_clients()

    run(alarms())
    for path in ("/hook", "/wecom", "/dingtalk"):
        got = http.got(path)
        assert len(got) == 5 and all(r.verified for r in got), (path, [(r.status, r.why) for r in got])
        assert len({r.peer for r in got}) == 1, (path, [r.peer for r in got])  # one connection for all five
    assert len({http.got(p)[0].peer for p in ("/hook", "/wecom", "/dingtalk")}) == 3  # one per channel
    assert [r.json["alert_id"] for r in http.got("/hook")] == [f"t{tid}-opened-L3" for tid in range(1, 6)]


def test_a_refused_attempt_is_retried_and_the_message_delivered_once(http, secrets_env, db_url, clock):
    n = make_notifier(_cfg(http), db_url, clock)
    http.fail["/hook"] = 1  # the first request of the kept connection answers 500

    async def alarms():
        for tid in (1, 2):
            await n.deliver(alert(tid, site=f"cz-{tid:04d}"))
        await close_pooled_clients()

    run(alarms())
    hooks = [r for r in http.requests if r.path == "/hook"]
    assert [r.status for r in hooks] == [500, 200, 200]
    assert [r.json["alert_id"] for r in hooks if r.status == 200] == ["t1-opened-L3", "t2-opened-L3"]
    assert {d.alert_id: d.status for d in n.log_db.all() if d.receiver == "r-webhook"} == \
        {"t1-opened-L3": "delivered", "t2-opened-L3": "delivered"}


def test_a_new_event_loop_does_not_reuse_a_dead_loops_connection(http, secrets_env, db_url, clock):
    """The CLI and the tests run the notifier under ``asyncio.run`` once per call: a kept client belongs to the
    loop that made it, and the next loop gets its own (the old loop's connection is never touched again)."""
    n = make_notifier(_cfg(http), db_url, clock)
    run(n.deliver(alert(1, site="cz-0001")))  # the loop ends with its client still open
    run(n.deliver(alert(2, site="cz-0002")))
    got = http.got("/hook")
    assert [r.json["alert_id"] for r in got] == ["t1-opened-L3", "t2-opened-L3"]
    assert got[0].peer != got[1].peer


def test_the_policy_is_checked_for_every_message_not_once_per_kept_client(http, secrets_env, db_url, clock,
                                                                           monkeypatch):
    n = make_notifier(_cfg(http), db_url, clock)

    async def two():
        await n.deliver(alert(1, site="cz-0001"))
        monkeypatch.setenv("SW_ALERTS_ALLOW_HTTP", "0")  # plain http refused from now on
        await n.deliver(alert(2, site="cz-0002"))
        await close_pooled_clients()

    asyncio.run(two())
    assert [r.json["alert_id"] for r in http.got("/hook")] == ["t1-opened-L3"]
    assert {d.alert_id: d.status for d in n.log_db.all() if d.receiver == "r-webhook"} == \
        {"t1-opened-L3": "delivered", "t2-opened-L3": "pending"}


def test_aclose_closes_the_kept_connections_and_the_next_message_opens_a_new_one(http, secrets_env, db_url, clock):
    """What the worker's shutdown hook calls (streams/notify.py): nothing is left open, nothing is lost."""
    n = make_notifier(_cfg(http), db_url, clock)

    async def around_a_close():
        await n.deliver(alert(1, site="cz-0001"))
        await n.aclose()
        await n.deliver(alert(2, site="cz-0002"))
        await n.aclose()

    run(around_a_close())
    got = http.got("/hook")
    assert [r.json["alert_id"] for r in got] == ["t1-opened-L3", "t2-opened-L3"]
    assert got[0].peer != got[1].peer
