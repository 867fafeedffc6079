"""May the deadman trust the wall clock right now? Not while Kafka is unreachable, and not until it has been
reachable again for a while.

Why: silence is "no reading for longer than the device's limit, by the wall clock". While the worker cannot reach
Kafka, every device looks silent — and is not: the readings wait in the MQTT broker and the bridge. A full-length
fault test (Tansu frozen 120 s, tests/faults/test_outages.py) opened a ``fault.silent`` ticket for every one of
its 100 devices, and then, while the worker worked through the buffered readings (event times minutes behind the
wall clock), closed and reopened them again and again: 180 false tickets in two minutes, each one an SMS to a
safety officer about a sensor that was fine. So the silence checks pause while a probe of the broker fails, and
resume ``settle_s`` after it answers again — time for the bridge to write what it held and the worker to catch
up. A device that really fell silent meanwhile is found ``settle_s`` later, not missed: its state still holds
its last reading time. The pause and the resumption are logged once each (operators see a Kafka outage in the
worker log and in Kafka's own monitoring; a pipeline outage is not a sensor fault).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

log = logging.getLogger("sitewatch.detect")


class BrokerWatch:
    """``await trusted()`` on each deadman tick. ``probe`` answers True when the broker answered within its
    timeout (the default asks Kafka for its metadata on a client of its own)."""

    def __init__(self, probe: Callable[[], Awaitable[bool]], settle_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.probe = probe
        self.settle_s = settle_s
        self.clock = clock
        self.reachable_since: float | None = clock()  # a worker starts catching up: it settles first too
        self.paused_logged = False

    async def trusted(self) -> bool:
        ok = await self.probe()
        now = self.clock()
        if not ok:
            if not self.paused_logged:
                log.error("Kafka unreachable: silence (deadman) checks paused until it has answered again for "
                          "%.0f s — devices are not called silent for an outage of the pipeline", self.settle_s)
                self.paused_logged = True
            self.reachable_since = None
            return False
        if self.reachable_since is None:
            self.reachable_since = now
            log.warning("Kafka reachable again: silence checks resume in %.0f s, once the buffered readings are "
                        "in", self.settle_s)
        if now - self.reachable_since < self.settle_s:
            return False
        if self.paused_logged:
            log.warning("silence checks resumed")
            self.paused_logged = False
        return True


class StallWatch:
    """``trusted()`` on each deadman tick: False while the detect stage has records of ``sw.readings`` waiting and
    has taken none of them for ``stall_s``, and for ``settle_s`` after it moves again.

    Why: a worker that stops consuming looks, to its own clock, exactly like a fleet that stopped reporting. A
    worker restarted after a SIGKILL once sat with its fetch position at the end of ``sw.raw`` and
    ``sw.readings`` and its read offsets at the committed ones (a Faust fetch race, fixed in
    ``streams.pipeline``) and called all 100 devices of the crash test silent: 100 tickets, each an SMS about a
    sensor that was fine, while the readings that would have cleared them sat unread in Kafka. A stalled stage is
    the pipeline's fault, not the sensors': it is logged as an error once (operators alert on it) and the
    silence checks wait. ``lag`` counts the records waiting in the stage's partitions, ``progress`` the readings
    it has taken (a counter)."""

    def __init__(self, lag: Callable[[], int], progress: Callable[[], int], stall_s: float, settle_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.lag, self.progress, self.clock = lag, progress, clock
        self.stall_s, self.settle_s = stall_s, settle_s
        self.seen = (progress(), clock())  # the counter, and when it last moved (or nothing waited)
        self.stalled_at: float | None = None
        self.moved_at: float | None = None  # when a stall ended

    def trusted(self) -> bool:
        waiting, done, now = self.lag(), self.progress(), self.clock()
        if waiting <= 0 or done != self.seen[0]:
            self.seen = (done, now)
            if self.stalled_at is not None:
                log.warning("detect stage moving again after %.0f s: silence checks resume in %.0f s",
                            now - self.stalled_at, self.settle_s)
                self.stalled_at, self.moved_at = None, now
        elif now - self.seen[1] >= self.stall_s and self.stalled_at is None:
            self.stalled_at = now
            log.error("detect stage stalled: %d records of sw.readings waiting and none taken for %.0f s — silence "
                      "(deadman) checks paused; restart the worker if this persists", waiting, now - self.seen[1])
        if self.stalled_at is not None:
            return False
        return self.moved_at is None or now - self.moved_at >= self.settle_s


def kafka_probe(bootstrap: str, kafka_options: dict, timeout_s: float = 3.0) -> Callable[[], Awaitable[bool]]:
    """A metadata request on an aiokafka client of its own (the worker's consumer keeps its connections busy and
    hides failures behind retries): True if the broker answered within ``timeout_s``."""
    state: dict = {}

    async def probe() -> bool:
        from aiokafka import AIOKafkaClient

        try:
            client = state.get("client")
            if client is None:
                client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000),
                                        **kafka_options)
                await asyncio.wait_for(client.bootstrap(), timeout_s)
                state["client"] = client
                return True
            await asyncio.wait_for(client.fetch_all_metadata(), timeout_s)
            return True
        except Exception:  # noqa: BLE001 - any failure to get an answer is "unreachable"
            client = state.pop("client", None)
            if client is not None:
                try:
                    await client.close()
                except Exception:  # noqa: BLE001
                    pass
            return False

    return probe
