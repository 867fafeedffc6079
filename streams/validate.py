"""Stage 1: sw.raw → sw.readings (valid, packed per partition) + sw.readings.dlq (rejected, with reason).

A batch of envelopes is validated into columns (``sitewatch.contracts.validate_envelopes``: schema-checked
decoding, no object per reading) and leaves as one ``sw.readings`` record per partition.

``Topic.send`` hands the record to the producer at once (faust-streaming's ``stream_publish_on_commit`` is off),
and Faust commits whatever offsets were acknowledged to it, without knowing what a batch produced. So the stage
takes its batches unacknowledged (``noack_take``) and acknowledges a batch's input records to Faust only once Kafka
acknowledged every record the batch sent, and every batch before it (``DeliveryWindow``): a worker killed
in between re-reads the batch instead of losing its readings.

It does not wait for those deliveries before taking the next batch (``take()`` acknowledges a batch when the next
one is asked for, so the stage used to await every delivery first, and the stream stood still for a produce round
trip per batch): up to ``Settings.validate_batches_in_flight`` batches may be in flight. A failed delivery stops
all acknowledgements from that batch on, and the stage raises.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from typing import Any

from sitewatch.contracts import (
    DEFAULT_ALLOWED_LATENESS_MS,
    ReadingColumns,
    device_key,
    pack_device_status,
    pack_status,
    validate_envelopes,
)
from streams.pipeline import Pipeline

log = logging.getLogger("sitewatch.validate")


def allowed_lateness_ms(pipe: Pipeline) -> int:
    """Readings older than this go to the DLQ as ``too_late`` (rules: ``lateness.allowed``)."""
    from sitewatch.rules import load_rules

    if pipe.settings.rules_path is None:
        return DEFAULT_ALLOWED_LATENESS_MS
    lateness = getattr(load_rules(pipe.settings.rules_path), "lateness", None)
    return int(lateness.allowed * 1000) if lateness is not None else DEFAULT_ALLOWED_LATENESS_MS


def outgoing(out: ReadingColumns, partitions: int) -> tuple[list[dict], list[dict]]:
    """What a validated batch sends: ``sw.readings`` records (one per partition, then the status records) and
    DLQ records, as keyword arguments of ``Topic.send``."""
    rx = out.rx
    readings = [dict(value=v, partition=p) for p, v in out.by_partition(partitions)]
    readings += [dict(key=device_key(st.site, f"gateway:{st.gateway}").encode(), value=pack_status(st))
                 for st in out.statuses]
    readings += [dict(key=device_key(ds.site, ds.device).encode(), value=pack_device_status(ds))
                 for ds in out.device_statuses]
    dlq = [dict(key=rej.topic.encode(), value=rej.to_dlq(rx)) for rej in out.rejected]
    return readings, dlq


class DeliveryWindow:
    """Input events of the batches whose output is in flight, acknowledged to Faust in batch order.

    A batch's events are acknowledged (``ack``, Faust's ``Stream.ack``) once every delivery of the batch and of every
    batch added before it succeeded, from the deliveries' done callbacks — not when the next batch is taken, so
    a quiet stream commits its last batch too, and a rebalance waiting for acknowledgements is not held up. Order
    matters: Faust commits the run of acknowledged offsets from the committed one, and a later batch
    acknowledged first would only wait in its list, but a failed batch must never be followed by acknowledged
    ones. After a failure nothing more is acknowledged (``failed``; the stage raises): the failed batch and every
    batch after it are read again by the next consumer."""

    def __init__(self, ack: Callable[[Any], Awaitable[Any]], depth: int):
        self._ack = ack
        self.depth = max(1, depth)
        self._pending: deque[tuple[asyncio.Future, Sequence[Any]]] = deque()
        self._acking: set[asyncio.Task] = set()
        self.failed: BaseException | None = None

    def add(self, deliveries: list[asyncio.Future], events: Sequence[Any]) -> None:
        done = asyncio.gather(*deliveries)
        self._pending.append((done, events))
        done.add_done_callback(self._release)

    def _release(self, _: asyncio.Future | None = None) -> None:
        while self._pending and self.failed is None and self._pending[0][0].done():
            done, events = self._pending[0]
            exc = asyncio.CancelledError() if done.cancelled() else done.exception()
            if exc is not None:
                self.failed = exc
                log.error("validate: a delivery to Kafka failed (%r); this batch and the %d after it stay "
                          "unacknowledged and will be read again", exc, len(self._pending) - 1)
                return
            self._pending.popleft()
            task = asyncio.ensure_future(self._ack_all(events))  # one task per batch: acks run in batch order
            self._acking.add(task)
            task.add_done_callback(self._acking.discard)

    async def _ack_all(self, events: Sequence[Any]) -> None:
        for event in events:
            await self._ack(event)

    def raise_if_failed(self) -> None:
        if self.failed is not None:
            raise self.failed

    async def wait_room(self) -> None:
        """Until fewer than ``depth`` batches are in flight (raises if a delivery failed)."""
        while len(self._pending) >= self.depth and self.failed is None:
            await asyncio.wait([self._pending[0][0]])
            await asyncio.sleep(0)  # let the done callbacks run
        self.raise_if_failed()


async def run(pipe: Pipeline, batches: AsyncIterable[Sequence[Any]], window: DeliveryWindow, max_age_ms: int) -> None:
    """The stage over batches of Faust events (``stream.noack_take``), their acknowledgements left to ``window``."""
    partitions = pipe.settings.kafka_partitions
    async for events in batches:
        window.raise_if_failed()
        out = validate_envelopes([ev.value for ev in events], max_age_ms=max_age_ms)
        readings, dlq = outgoing(out, partitions)
        sent = [await pipe.readings.send(**kw) for kw in readings]
        sent += [await pipe.dlq.send(**kw) for kw in dlq]
        window.add(sent, events)  # acknowledged to Faust once Kafka acknowledged all of ``sent``
        for rej in out.rejected:
            log.warning("DLQ %s on %r: %s", rej.reason, rej.topic, rej.detail)
        pipe.count("readings_valid", len(out))
        pipe.count("readings_rejected", len(out.rejected))
        pipe.count("readings_too_late", sum(r.reason == "too_late" for r in out.rejected))
        await window.wait_room()


def register(pipe: Pipeline) -> None:
    s = pipe.settings
    max_age_ms = allowed_lateness_ms(pipe)

    @pipe.app.agent(pipe.raw, name="validate")
    async def validate(stream):
        window = DeliveryWindow(stream.ack, s.validate_batches_in_flight)
        await run(pipe, stream.noack_take(s.batch_size, within=s.batch_within_s), window, max_age_ms)
