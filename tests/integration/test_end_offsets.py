"""Log end offsets on Tansu (``streams.offsets``): its ListOffsets(latest) answers the last record batch's base
offset + 1, so a tail batch of several records looked consumed; the worker's consumer (Faust's changelog recovery)
and the lag/benchmark helpers must see the real end."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.integration


def test_end_offsets_count_every_record_of_the_last_batch(tansu):
    from aiokafka import AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from streams.offsets import EndOffsets, end_offsets
    from streams.pipeline import _low_latency_fetch

    _low_latency_fetch()
    import aiokafka  # the class Faust instantiates, as the worker patches it

    tps = [TopicPartition("t", 0), TopicPartition("t", 1)]

    async def produce_and_ask():
        admin = AIOKafkaAdminClient(bootstrap_servers=tansu)
        await admin.start()
        await admin.create_topics([NewTopic("t", 2, 1)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=tansu, linger_ms=50)
        await producer.start()
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=tansu)
        await consumer.start()
        try:
            await (await producer.send("t", b"one", partition=0))
            sent = [await producer.send("t", b"%d" % i, partition=0) for i in range(17)]  # one batch of 17
            sent += [await producer.send("t", b"%d" % i, partition=1) for i in range(5)]
            await asyncio.gather(*sent)
            listed = await aiokafka.consumer.AIOKafkaConsumer.end_offsets(consumer, tps)  # ListOffsets alone
            return listed, await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
            await producer.stop()

    listed, ends = asyncio.run(produce_and_ask())
    want = {tps[0]: 18, tps[1]: 5}
    assert ends == want
    assert listed != want, "Tansu's ListOffsets is right now: streams.offsets may be retired"
    assert end_offsets(tansu, ["t", "no-such-topic"]) == want
    e = EndOffsets(tansu, ["t"])
    try:
        assert e() == want
    finally:
        e.close()
