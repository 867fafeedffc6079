"""Stage 4: sw.alerts → receivers, through the notifier's retrying, idempotent delivery."""

from __future__ import annotations

import json
import logging

from alerts.channels.webhook import WebhookSender
from alerts.delivery_log import DeliveryLog
from alerts.notifier import Notifier
from streams.app import Pipeline

log = logging.getLogger("sitewatch.notify")


def register(pipe: Pipeline) -> None:
    s = pipe.settings
    receivers = {}
    if s.webhook_url:
        receivers["webhook"] = WebhookSender(s.webhook_url, s.webhook_secret)
    else:
        log.warning("no receiver configured (SW_WEBHOOK_URL unset): alerts are logged in the delivery log only")
    notifier = Notifier(DeliveryLog(s.backlog_url), receivers)

    @pipe.app.agent(pipe.alerts, name="notify")
    async def notify(stream):
        async for batch in stream.take(100, within=0.05):
            for data in batch:
                alert = json.loads(data)
                pipe.count("alerts_sent", await notifier.deliver(alert))
