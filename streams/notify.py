"""Stage 4: sw.alerts → receivers, through the notifier's routing, escalation and idempotent delivery.

The notifier is handed in (``app.worker`` builds it from ``$SW_ALERTS_CONFIG`` or ``$SW_WEBHOOK_URL`` and gives it
the backlog's ticket readers). A timer on every worker runs escalation every few seconds (items are unique per
receiver, so a second worker queues nothing twice); sending never blocks the stream (one flush task at a time,
kicked by new alerts and by a 1 s timer), so a slow receiver does not hold up the next alert.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any, Protocol

from streams.pipeline import Pipeline

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

    async def _flush_loop() -> None:
        while True:
            state["again"] = False
            try:
                pipe.count("alerts_sent", await notifier.flush())
            except Exception:  # a bug here must not stop the worker; the timer tries again
                log.exception("alert flush failed")
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
        async for batch in stream.take(100, within=0.05):
            for data in batch:
                # queued durably before the offsets commit: a crash after this never loses the alert
                try:
                    notifier.ingest(json.loads(data))
                except Exception:  # one malformed alert must not stop the stage for every other one
                    log.exception("could not queue alert %r", data[:300])
                    pipe.count("alerts_rejected")
            kick()

    @pipe.app.timer(FLUSH_S, name="alerts-flush")
    async def flush():
        kick()  # group_wait ends, durable retries come due, quiet hours end

    @pipe.app.timer(TICK_S, name="alerts-escalation")  # every worker: items are unique, a copy is refused
    async def escalation():
        notifier.escalate()  # escalation, red reminders, resolution notices (reads the backlog)
        kick()
