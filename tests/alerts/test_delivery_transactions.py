"""An alert's delivery-log writes run on the worker's event loop, in front of the next alarm: they are grouped
into as few transactions as the guarantees allow, and the grouping keeps them (nothing half-stored, nothing lost,
nothing sent twice)."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from alerts.channels.base import close_pooled_clients
from alerts.config import webhook_only
from tests.alerts.conftest import alert, config, hook, make_notifier, run

TWO = """
defaults: {{group_wait: 0, retry_backoff: 0.01s, retry_attempts: 2}}
receivers:
  ops: {{channels: [{hook_ops}]}}
  boss: {{channels: [{hook_boss}]}}
routes:
  - name: all
    group_by: []
    tiers: [{{receivers: [ops, boss]}}]
"""


def _two(http):
    return config(TWO, hook_ops=hook(http, "ops"), hook_boss=hook(http, "boss"))


def test_an_alert_is_queued_all_or_nothing(http, secrets_env, db_url, clock, monkeypatch):
    """A failure after the items were written (here: recording the tiers told) leaves nothing behind — not an
    item queued for one receiver with its incident not knowing it was told — and the retry queues and delivers
    the alert once to each receiver."""
    n = make_notifier(_two(http), db_url, clock)
    real = n.log_db.update_incident

    def broken(*a, **kw):
        raise RuntimeError("database went away")

    monkeypatch.setattr(n.log_db, "update_incident", broken)
    with pytest.raises(RuntimeError):
        n.ingest(alert(1))
    assert n.log_db.all() == [] and n.log_db.incident(1) is None

    monkeypatch.setattr(n.log_db, "update_incident", real)
    assert n.ingest(alert(1)) == 2
    assert n.ingest(alert(1)) == 0  # a replay (Kafka redelivery) queues nothing twice

    async def send():
        sent = await n.flush()
        await close_pooled_clients()
        return sent

    assert run(send()) == 2
    assert sorted(r.query["to"] for r in http.got("/hook")) == ["boss", "ops"]
    assert {(d.receiver, d.status) for d in n.log_db.all()} == {("ops", "delivered"), ("boss", "delivered")}
    assert n.log_db.incident(1).notified == ["all#0"]


def test_a_duplicate_inside_one_alert_is_refused_without_undoing_the_rest(http, secrets_env, db_url, clock):
    """The alert already queued for one receiver (an earlier, partly applied copy from an older notifier): the
    refused duplicate rolls back its own write only; the other receiver still gets it."""
    n = make_notifier(_two(http), db_url, clock)
    assert n.log_db.enqueue("t1-opened-L3", "ops", kind="alert", payload=alert(1), ticket_id=1, group_key="solo",
                            urgent=True, at_ms=int(clock() * 1000))
    assert n.ingest(alert(1)) == 1  # boss only
    assert sorted(d.receiver for d in n.log_db.all()) == ["boss", "ops"]
    assert n.log_db.incident(1) is not None


def test_one_alert_costs_four_write_transactions(http, secrets_env, db_url, clock):
    """Webhook-only mode, one alarm from Kafka to the receiver: queue (incident, item, tiers told), group into
    a message, claim it (with its items), record the delivery — four commits (it was seven: one per write)."""
    n = make_notifier(webhook_only(http.url("/hook"), http.webhook_secret), db_url, clock)
    commits: list[int] = []
    event.listen(n.log_db.engine, "commit", lambda conn: commits.append(1))

    async def one():
        n.ingest(alert(7))
        sent = await n.flush()
        await close_pooled_clients()
        return sent

    assert run(one()) == 1
    assert [r.json["alert_id"] for r in http.got("/hook")] == ["t7-opened-L3"]
    assert [d.status for d in n.log_db.all()] == ["delivered"]
    assert len(commits) == 4
