"""Stage 4: sw.alerts → receivers, through the notifier's routing, escalation and idempotent delivery.

The notifier is handed in (``app.worker`` builds it from ``$SW_ALERTS_CONFIG`` or ``$SW_WEBHOOK_URL`` and gives it
the backlog's ticket readers). A timer on every worker runs escalation every few seconds (items are unique per
receiver, so a second worker queues nothing twice); sending never blocks the stream (one flush task at a time,
kicked by new alerts and by a 1 s timer), so a slow receiver does not hold up the next alert.

The delivery log lives in the backlog's database. While that database is unreachable the stage holds its batch
(retried in place with backoff, offsets not committed: ``streams.resilience``), and the flush and escalation
timers skip their turn with one warning every 10 s; nothing of that reaches the rest of the worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any, Protocol

from streams.pipeline import Pipeline
from streams.resilience import Quiet, describe, storage_unavailable, until_stored

log = logging.getLogger("sitewatch.notify")

TICK_S = float(os.environ.get("SW_ALERTS_TICK_S", "5"))  # escalation / reminders / resolution poll
FLUSH_S = min(1.0, TICK_S)  # due messages (group_wait over, retry due) go out within this


class AlertDispatcher(Protocol):
    """What this stage needs of the notifier (``alerts.notifier.Notifier`` is one)."""

    def ingest(self, alert: dict) -> Any: ...  # queue durably (before the offset commits)

    async def flush(self) -> int: ...  # send what is due; returns how many went out

    def escalate(self) -> Any: ...  # escalation, red reminders, resolution notices


def register(pipe: Pipeline, notifier: AlertDispatcher) -> None:
    state: dict = {"task": None, "again": False}
    quiet = Quiet()

    async def _flush_loop() -> None:
        while True:
            state["again"] = False
            try:
                pipe.count("alerts_sent", await notifier.flush())
            except Exception as e:  # a bug here must not stop the worker; the timer tries again
                if storage_unavailable(e):
                    quiet.warn(log, "flush", "backlog database unavailable (alert flush: %s), retrying in %.0f s",
                               describe(e), FLUSH_S)
                    return
                log.exception("alert flush failed")
            else:
                quiet.clear(log, "flush", "alert flush: backlog database reachable again")
            if not state["again"]:
                return

    def kick() -> None:
        """Send what is due without holding up the stream; one flush at a time, re-run if kicked meanwhile."""
        t = state["task"]
        if t is None or t.done():
            state["task"] = asyncio.ensure_future(_flush_loop())
        else:
            state["again"] = True

    @pipe.app.agent(pipe.alerts, name="notify")
    async def notify(stream):
        # one alert at a time, not take(n, within): each alert is its own transaction anyway, and a batch window
        # only held the first alert of a quiet moment back by up to the window
        async for data in stream:
            # queued durably before the offset commits: a crash after this never loses the alert
            try:
                # a database outage holds this alert (and its offset) until it is stored
                await until_stored("alert", _ingest(data), log)
            except Exception:  # one malformed alert must not stop the stage for every other one
                log.exception("could not queue alert %r", data[:300])
                pipe.count("alerts_rejected")
            kick()

    def _ingest(data: bytes):
        async def call():
            return notifier.ingest(json.loads(data))  # idempotent: a retry after a half-done one queues nothing twice
        return call

    @pipe.app.on_before_shutdown.connect
    async def close_connections(sender, **kwargs):
        """The channels keep their HTTP connections open between messages; a clean stop closes them."""
        close = getattr(notifier, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception:  # noqa: BLE001 - a stop must not fail on a connection that is already gone
                log.warning("closing the alert channels' connections failed", exc_info=True)

    @pipe.app.timer(FLUSH_S, name="alerts-flush")
    async def flush():
        kick()  # group_wait ends, durable retries come due, quiet hours end

    @pipe.app.timer(TICK_S, name="alerts-escalation")  # every worker: items are unique, a copy is refused
    async def escalation():
        try:
            notifier.escalate()  # escalation, red reminders, resolution notices (reads the backlog)
        except Exception as e:  # an exception out of a timer would crash the worker
            if not storage_unavailable(e):
                log.exception("escalation failed")
            else:
                quiet.warn(log, "escalation", "backlog database unavailable (escalation: %s), retrying in %.0f s",
                           describe(e), TICK_S)
        else:
            quiet.clear(log, "escalation", "escalation: backlog database reachable again")
        kick()
