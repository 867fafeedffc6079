"""Progress output: one log line of stage counters every 10 s (what an operator tails)."""

from __future__ import annotations

import logging
import time

from sitewatch.contracts import TOPIC_READINGS
from streams.pipeline import Pipeline

log = logging.getLogger("sitewatch.worker")


def register(pipe: Pipeline) -> None:
    @pipe.app.on_rebalance_complete.connect
    async def ready(sender, **kwargs):
        # Tests and operators wait for this line: the worker owns partitions and is processing.
        assigned = sorted(tp.partition for tp in sender.assignor.assigned_actives() if tp.topic == TOPIC_READINGS)
        log.warning("worker ready: sw.readings partitions %s", assigned)

    last = {"t": time.monotonic(), "detected": 0}

    @pipe.app.timer(10.0, name="progress-report")
    async def report():
        now = time.monotonic()
        c = pipe.counters
        rate = (c.get("readings_detected", 0) - last["detected"]) / max(now - last["t"], 1e-6)
        last.update(t=now, detected=c.get("readings_detected", 0))
        log.info(
            "worker: %.0f readings/s | valid %d rejected %d detected %d (late %d, stale %d) findings %d "
            "alerts queued %d sent %d",
            rate, c.get("readings_valid", 0), c.get("readings_rejected", 0), c.get("readings_detected", 0),
            c.get("readings_late", 0), c.get("readings_stale", 0), c.get("findings", 0), c.get("alerts_queued", 0), c.get("alerts_sent", 0),
        )

