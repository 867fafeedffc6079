"""Log end offsets that are right on Tansu.

Tansu 0.6.0 answers ListOffsets(latest) with the base offset of a partition's *last record batch* plus one, not
with the log end: after a produce batch of 17 records at offsets 2..18 it answers 3, not 19 (measured; it is right
only while the last batch holds a single record). Everything that asks "where does this partition end?" through
ListOffsets is then short by up to a batch:

- Faust's table recovery reads a changelog partition up to ``end_offsets() - 1`` and stops there. A new owner of a
  partition restored the ``device-state`` of a batch *before* the last one written, and the detector treated the
  next readings as coming after stale state (the scale-out test lost a step's findings on several cranes);
- lag figures and benchmark boundaries read a tail batch as already consumed.

A Fetch response carries the partition's high watermark, which Tansu reports correctly. So the end is asked the
ordinary way first, and one Fetch per leader at that offset (no wait, no minimum size) reads the high watermark;
the larger of the two is the end. On a broker whose ListOffsets is right the Fetch only confirms it.

``fetched_end_offsets`` works on any started aiokafka client (the worker's consumer uses it through
``streams.pipeline``); ``EndOffsets`` is the blocking form for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Iterable, Mapping

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import for_code
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.structs import TopicPartition

log = logging.getLogger("sitewatch.offsets")

READ_UNCOMMITTED, READ_COMMITTED = 0, 1


async def fetched_end_offsets(client, listed: Mapping[TopicPartition, int],
                              isolation_level: int = READ_UNCOMMITTED) -> dict[TopicPartition, int]:
    """``listed`` (what ListOffsets said) raised to the high watermark of a Fetch at that offset, per partition.

    A partition whose leader is unknown or whose Fetch fails keeps its listed offset (logged): the caller gets the
    best figure there is rather than an error in the middle of a rebalance."""
    out = dict(listed)
    by_node: dict[int, list[TopicPartition]] = defaultdict(list)
    for tp, offset in listed.items():
        if offset is None or offset < 0:
            continue
        node = client.cluster.leader_for_partition(tp)
        if node is None or node < 0:
            await client.force_metadata_update()
            node = client.cluster.leader_for_partition(tp)
        if node is None or node < 0:
            log.warning("end offset of %s: no leader known, keeping ListOffsets' %s", tp, offset)
            continue
        by_node[node].append(tp)

    async def ask(node: int, tps: list[TopicPartition]) -> None:
        topics: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for tp in tps:
            topics[tp.topic].append((tp.partition, listed[tp], 1))  # 1 byte: the answer's header is what we want
        # max_wait 1 ms, not 0: Tansu answers a Fetch with max_wait 0 with no partitions at all (measured).
        req = FetchRequest(1, 0, 1, isolation_level, list(topics.items()))
        try:
            resp = await client.send(node, req)
        except Exception as e:  # noqa: BLE001 - see the docstring: keep the listed offsets
            log.warning("end offsets: Fetch from node %s failed (%r), keeping ListOffsets' answer", node, e)
            return
        answered = set()
        for topic, parts in resp.topics:
            for partition, error_code, highwater, *rest in parts:
                tp = TopicPartition(topic, partition)
                answered.add(tp)
                if error_code:
                    log.warning("end offset of %s: Fetch answered %s, keeping ListOffsets' %s", tp,
                                for_code(error_code).__name__, listed[tp])
                    continue
                end = highwater
                if isolation_level == READ_COMMITTED and resp.API_VERSION >= 4 and rest and rest[0] >= 0:
                    end = rest[0]  # the last stable offset
                out[tp] = max(listed[tp], end)
        for tp in set(tps) - answered:
            log.warning("end offset of %s: not in the Fetch answer, keeping ListOffsets' %s", tp, listed[tp])

    await asyncio.gather(*(ask(node, tps) for node, tps in by_node.items()))
    return out


class EndOffsets:
    """Blocking end offsets of every partition of some topics, on a consumer of its own (own event loop), for
    synchronous callers: lag checks in tests, benchmark boundaries."""

    def __init__(self, bootstrap: str, topics: Iterable[str], **kafka_options):
        self.loop = asyncio.new_event_loop()
        self.topics = tuple(topics)
        self.tps: list[TopicPartition] = []
        self.consumer: AIOKafkaConsumer | None = None
        try:
            self.loop.run_until_complete(self._start(bootstrap, kafka_options))
        except BaseException:
            self.close()
            raise

    async def _start(self, bootstrap: str, kafka_options: dict) -> None:
        # built inside the loop: aiokafka binds a consumer to the running loop
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                         **kafka_options)
        await self.consumer.start()
        await self._partitions()

    async def _partitions(self) -> None:
        await self.consumer.topics()  # metadata of every topic, so partitions_for_topic knows them
        self.tps = [TopicPartition(t, p) for t in self.topics
                    for p in sorted(self.consumer.partitions_for_topic(t) or ())]

    async def _ends(self) -> dict[TopicPartition, int]:
        if not self.tps:
            await self._partitions()
        listed = await AIOKafkaConsumer.end_offsets(self.consumer, self.tps)
        return await fetched_end_offsets(self.consumer._client, listed)

    def __call__(self) -> dict[TopicPartition, int]:
        return self.loop.run_until_complete(self._ends())

    def close(self) -> None:
        try:
            if self.consumer is not None:
                self.loop.run_until_complete(self.consumer.stop())
        finally:
            self.loop.close()


def end_offsets(bootstrap: str, topics: Iterable[str], **kafka_options) -> dict[TopicPartition, int]:
    """One look: the log end offset of every partition of ``topics``."""
    e = EndOffsets(bootstrap, topics, **kafka_options)
    try:
        return e()
    finally:
        e.close()
