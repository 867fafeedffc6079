"""Deliver alerts to receivers: at least once, never twice to the same receiver, never dropped silently.

A failing receiver is retried with exponential backoff and jitter (tenacity) for as long as it takes; every
attempt lands in the delivery log, so a stuck alert is visible there (and in the logs) rather than lost.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential

from alerts.delivery_log import DeliveryLog

log = logging.getLogger("sitewatch.alerts")


class Channel(Protocol):
    channel: str

    async def send(self, alert: dict[str, Any]) -> None: ...


class Notifier:
    def __init__(self, log_db: DeliveryLog, receivers: dict[str, Channel], max_backoff_s: float = 30.0):
        self.log_db = log_db
        self.receivers = receivers
        self.max_backoff_s = max_backoff_s

    async def deliver(self, alert: dict[str, Any]) -> int:
        """Deliver one alert to every receiver that does not have it yet; returns how many were sent now."""
        sent = 0
        alert_id = alert["alert_id"]
        for name, channel in self.receivers.items():
            if self.log_db.delivered(alert_id, name):
                continue
            async for attempt in AsyncRetrying(
                wait=wait_random_exponential(multiplier=0.2, max=self.max_backoff_s),
                retry=retry_if_exception_type(Exception),
                reraise=True,
            ):
                with attempt:
                    try:
                        await channel.send(alert)
                    except Exception as e:
                        n = attempt.retry_state.attempt_number
                        log.warning("alert %s to %s failed (attempt %d): %s; retrying", alert_id, name, n, e)
                        self.log_db.record_attempt(alert_id, name, channel.channel, f"{type(e).__name__}: {e}")
                        raise
            self.log_db.record_attempt(alert_id, name, channel.channel, None)
            log.info("alert %s delivered to %s", alert_id, name)
            sent += 1
        return sent
