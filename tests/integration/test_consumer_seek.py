"""The worker's consumer (``streams.pipeline``) re-seeks a partition nobody committed yet to where the reset policy
starts it: Faust discards a fetch that came back while its flow was stopped and re-seeks to committed offsets, and
aiokafka alone left such a partition past the discarded records (a taken-over ``sw.hazards`` partition lost them)."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.integration


def test_seek_to_committed_rewinds_a_partition_never_committed(tansu):
    from aiokafka import AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from streams.pipeline import _low_latency_fetch

    _low_latency_fetch()
    import aiokafka  # the class Faust instantiates, as the worker patches it

    tp = TopicPartition("t", 0)

    async def run():
        admin = AIOKafkaAdminClient(bootstrap_servers=tansu)
        await admin.start()
        await admin.create_topics([NewTopic("t", 1, 1)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=tansu)
        await producer.start()
        for i in range(10):
            await (await producer.send("t", b"%d" % i, partition=0))
        await producer.stop()
        consumer = aiokafka.AIOKafkaConsumer("t", bootstrap_servers=tansu, group_id="g", enable_auto_commit=False,
                                             auto_offset_reset="earliest")
        await consumer.start()
        try:
            read = 0
            while read < 10:  # fetched, then (as Faust does with a fetch it discards) back to committed
                read += sum(len(v) for v in (await consumer.getmany(timeout_ms=3000)).values())
            assert await consumer.position(tp) == 10
            assert (await consumer.seek_to_committed())[tp] is None
            never_committed = await consumer.position(tp)
            await consumer.commit({tp: 4})
            await consumer.seek_to_committed()
            return never_committed, await consumer.position(tp)
        finally:
            await consumer.stop()

    assert asyncio.run(run()) == (0, 4)
