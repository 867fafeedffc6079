"""Stage 4: sw.alerts → receivers, through the notifier's routing, escalation and idempotent delivery.

Configuration: ``$SW_ALERTS_CONFIG`` (routing YAML, see docs/alerts.md). Without it, ``$SW_WEBHOOK_URL`` alone is
the zero-config default: one receiver that gets every alert at once (HMAC-signed with ``$SW_WEBHOOK_SECRET``).

The notifier never imports the backlog; this stage hands it two readers of the backlog database: the ticket's
state (acknowledged? closed? condition cleared?) for escalation, reminders and resolution notices, and a
site's company code for routing by company. A timer on every worker runs escalation every few seconds (items
are unique per receiver, so a second worker queues nothing twice); sending never blocks the stream (one flush
task at a time, kicked by new alerts and by a 1 s timer), so a slow receiver does not hold up the next alert.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

from sqlalchemy import select

from alerts.config import load_config, webhook_only
from alerts.delivery_log import DeliveryLog
from alerts.notifier import Notifier, TicketState
from streams.app import Pipeline

log = logging.getLogger("sitewatch.notify")

TICK_S = float(os.environ.get("SW_ALERTS_TICK_S", "5"))  # escalation / reminders / resolution poll
FLUSH_S = min(1.0, TICK_S)  # due messages (group_wait over, retry due) go out within this


def backlog_readers(db_url: str):
    """(ticket_state, company_of) callables over the backlog database."""
    from backlog.models import OrgUnit, Project, Ticket
    from backlog.store import Backlog

    backlog = Backlog(db_url, create=False)

    def ticket_state(ticket_id: int) -> TicketState | None:
        with backlog.session() as s:
            t = s.get(Ticket, ticket_id)
            if t is None:
                return None
            return TicketState(status=t.status, level=t.level, peak_level=t.peak_level, major=bool(t.major),
                               active=bool(t.active), acknowledged_ms=t.acknowledged_ms)

    def company_of(site: str) -> str | None:
        with backlog.session() as s:
            return s.scalar(select(OrgUnit.code).join(Project, Project.company_id == OrgUnit.id)
                            .where(Project.site == site))

    return ticket_state, company_of


def build_notifier(settings) -> Notifier | None:
    path = os.environ.get("SW_ALERTS_CONFIG")
    if path:
        cfg = load_config(path)
        log.info("alerts: routing from %s (%d receivers, %d routes)", path, len(cfg.receivers), len(cfg.routes))
    elif settings.webhook_url:
        cfg = webhook_only(settings.webhook_url, settings.webhook_secret)
    else:
        log.warning("no receiver configured (SW_ALERTS_CONFIG and SW_WEBHOOK_URL unset): "
                    "alerts are logged in the delivery log only")
        cfg = None
    log_db = DeliveryLog(settings.backlog_url)
    if cfg is None:
        from alerts.config import AlertsConfig

        cfg = AlertsConfig.model_validate({"receivers": {}})
    state, company = backlog_readers(settings.backlog_url) if path else (None, None)
    return Notifier(log_db, cfg, ticket_state=state, company_of=company)


def register(pipe: Pipeline) -> None:
    notifier = build_notifier(pipe.settings)
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
