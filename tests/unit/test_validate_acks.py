"""The validate stage acknowledges a batch's ``sw.raw`` records to Faust only after Kafka acknowledged everything
the batch sent, and every batch before it — while it already validates the next batches (``DeliveryWindow``).
Faust commits acknowledged offsets on its own timer, so a record acknowledged early is a reading lost to a
SIGKILL; these tests drive the stage with deliveries whose completion they control."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from types import SimpleNamespace

import pytest

from sitewatch.contracts import pack_raw, reading_topic
from streams.validate import DeliveryWindow, run


def envelope(device: str, ts: int) -> bytes:
    return pack_raw([(reading_topic("s-001", "crane", device, "tilt"),
                      json.dumps({"ts": ts, "value": 0.5, "unit": "deg"}).encode())], int(time.time() * 1000))


class Topic:
    """``Topic.send``: a delivery future per record, completed (or failed) by the test."""

    def __init__(self, loop):
        self.loop = loop
        self.sent: list[tuple[dict, asyncio.Future]] = []

    async def send(self, **kw):
        fut = self.loop.create_future()
        self.sent.append((kw, fut))
        return fut


class Stage:
    def __init__(self, depth: int):
        loop = asyncio.get_running_loop()
        self.pipe = SimpleNamespace(settings=SimpleNamespace(kafka_partitions=4), readings=Topic(loop),
                                    dlq=Topic(loop), count=lambda *a: None)
        self.acked: list[int] = []
        self.batches: asyncio.Queue = asyncio.Queue()
        self.window = DeliveryWindow(self._ack, depth)
        self.offset = 0
        self.task = asyncio.ensure_future(run(self.pipe, self._iter(), self.window, max_age_ms=10 ** 12))

    async def _ack(self, event):
        self.acked.append(event.offset)

    async def _iter(self):
        while True:
            batch = await self.batches.get()
            if batch is None:
                return
            yield batch

    async def put(self, n: int) -> list[int]:
        """A batch of ``n`` one-reading envelopes; returns their offsets once the stage has sent its output."""
        now = int(time.time() * 1000)
        events = [SimpleNamespace(value=envelope(f"t-{i % 3}", now), offset=self.offset + i) for i in range(n)]
        self.offset += n
        before = len(self.pipe.readings.sent)
        await self.batches.put(events)
        for _ in range(100):
            if len(self.pipe.readings.sent) > before:
                break
            await asyncio.sleep(0)
        return [e.offset for e in events]

    def deliveries(self, start: int = 0) -> list[asyncio.Future]:
        return [f for _, f in self.pipe.readings.sent[start:]]

    async def deliver(self, futures: list[asyncio.Future]) -> None:
        """Kafka acknowledges these records; the done callbacks and acknowledgements run."""
        for f in futures:
            f.set_result(None)
        await settle()

    async def close(self) -> None:
        await self.batches.put(None)
        await self.task


def in_loop(test):
    """Run an async test in its own event loop."""
    @functools.wraps(test)
    def wrapper():
        asyncio.run(test())
    return wrapper


async def settle():
    for _ in range(20):
        await asyncio.sleep(0)


@in_loop
async def test_a_batch_is_acknowledged_only_after_its_deliveries_and_the_next_is_taken_meanwhile():
    st = Stage(depth=4)
    first = await st.put(5)
    sent_first = st.deliveries()
    assert sent_first  # the batch's sw.readings records are out
    second = await st.put(4)  # taken while the first batch's deliveries are still in flight
    sent_second = st.deliveries(len(sent_first))
    assert sent_second
    await settle()
    assert st.acked == []  # nothing delivered yet: nothing may become committable
    await st.deliver(sent_second)
    assert st.acked == []  # the second batch is delivered, the first is not: still nothing
    await st.deliver(sent_first[:-1])
    assert st.acked == []  # one record of the first batch is still owed
    sent_first[-1].set_result(None)
    await settle()
    assert st.acked == first + second  # in batch order
    await st.close()


@in_loop
async def test_after_a_failed_delivery_nothing_more_is_acknowledged_and_the_stage_raises():
    st = Stage(depth=4)
    first = await st.put(3)
    n1 = len(st.deliveries())
    await st.put(3)
    for f in st.deliveries(n1):
        f.set_result(None)  # the later batch made it
    st.deliveries()[0].set_exception(RuntimeError("broker said no"))
    await st.deliver(st.deliveries()[1:n1])
    assert st.acked == []  # neither the failed batch nor the one after it
    assert st.window.failed is not None
    await st.put(2)  # the next batch finds the failure
    with pytest.raises(RuntimeError, match="broker said no"):
        await asyncio.wait_for(st.task, 5)
    assert not set(first) & set(st.acked)


@in_loop
async def test_the_stage_waits_when_depth_batches_are_in_flight():
    st = Stage(depth=1)  # depth 1: each batch's deliveries awaited before the next is taken
    await st.put(2)
    n1 = len(st.deliveries())
    await st.batches.put([SimpleNamespace(value=envelope("t-9", int(time.time() * 1000)), offset=99)])
    await settle()
    assert len(st.deliveries()) == n1  # the second batch is not taken before the first is acknowledged
    await st.deliver(st.deliveries())
    assert st.acked[:2] == [0, 1]
    assert len(st.deliveries()) > n1  # now it is
    await st.deliver(st.deliveries(n1))
    assert st.acked == [0, 1, 99]
    await st.close()


@in_loop
async def test_a_quiet_stream_still_acknowledges_its_last_batch():
    st = Stage(depth=4)
    only = await st.put(3)
    for f in st.deliveries():
        f.set_result(None)
    await settle()  # no next batch comes
    assert st.acked == only
    await st.close()
