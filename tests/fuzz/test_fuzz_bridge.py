"""Fuzz of the bridge's own path: MQTT messages in (``Bridge._on_message``, as paho calls it), ``sw.raw`` records
out (``Bridge._flush`` → ``pack_raw`` → the producer), acknowledgements back to the broker.

The Kafka producer is a stand-in that keeps what is sent and refuses a record over the bridge's own
``max_request_size`` exactly as kafka-python does (by raising from ``send``): an envelope grown past it by JSON
escaping would take the bridge down. The MQTT client is paho's, never connected; only ``ack`` is recorded.

For any messages, in any number of flushes: the bridge never raises, every message lands in exactly one envelope
(its topic and bytes unchanged, in its device's partition, in arrival order per device), every QoS 1 message is
acknowledged once, after its record was written and only then. The envelopes then go through the validate stage
with the accounting of ``strategies.check_stage``: MQTT messages received == readings + statuses + DLQ records.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.errors import MessageSizeTooLargeError

import ingest.bridge as bridge_mod
from sitewatch.contracts import TOPIC_RAW, kafka_key_for_mqtt_topic, partition_of, unpack_raw

from . import TIMEOUT_S, fuzz_settings
from .strategies import MQTT_MESSAGE_LIMIT, SEED, Gen, check_stage

pytestmark = pytest.mark.timeout(TIMEOUT_S)
PARTITIONS = 6


class _Future:
    def __init__(self):
        self.callbacks, self.errbacks = [], []

    def add_callback(self, f, *args):
        self.callbacks.append((f, args))

    def add_errback(self, f, *args):
        self.errbacks.append((f, args))

    def succeed(self):
        for f, args in self.callbacks:
            f(*args, None)


class _Producer:
    def __init__(self, **config):
        self.config = config
        self.sent: list[tuple[int, bytes, _Future]] = []

    def partitions_for(self, topic):
        return set(range(PARTITIONS))

    def send(self, topic, value=None, partition=None, headers=None, **_):
        assert topic == TOPIC_RAW and isinstance(value, bytes)
        if len(value) > self.config["max_request_size"]:
            raise MessageSizeTooLargeError(f"{len(value)} bytes")
        fut = _Future()
        self.sent.append((partition, value, fut))
        return fut


@pytest.fixture(scope="module")
def bridge():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bridge_mod, "KafkaProducer", _Producer)
        b = bridge_mod.Bridge("localhost", 1883, "localhost:9092", client_id="fuzz-bridge")
    b.acks = []
    b._mqtt.ack = lambda mid, qos: b.acks.append((mid, qos))
    return b


def _topic_bytes(gen: Gen) -> bytes:
    """Mostly a topic of the grammar; sometimes bytes no broker would pass on (not UTF-8, NUL, lone surrogates)."""
    k = gen.r.randint(0, 9)
    if k == 0:
        return gen.r.randbytes(gen.r.randint(0, 40))
    if k == 1:
        return gen.topic().encode() + gen.r.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\x00", b"/\x80/"])
    return gen.topic().encode()


def _incoming(seeds_and_qos: list[tuple[int, int]]) -> list[mqtt.MQTTMessage]:
    msgs = []
    for mid, (seed, qos) in enumerate(seeds_and_qos, start=1):
        gen = Gen(seed)
        topic = _topic_bytes(gen)
        m = mqtt.MQTTMessage(mid=mid, topic=topic)
        m.payload = gen.payload(topic.decode("utf-8", "replace"))
        m.qos = qos
        msgs.append(m)
    return msgs


def _as_received(m: mqtt.MQTTMessage) -> str:
    try:
        return m.topic
    except UnicodeDecodeError:
        return m._topic.decode("utf-8", "backslashreplace")


@fuzz_settings(0.40)
@given(st.lists(st.tuples(SEED, st.sampled_from([0, 1, 1, 1])), min_size=1, max_size=12),
       st.lists(st.integers(0, 12), max_size=3))
def test_bridge_packs_every_message_once_and_acks_after_the_write(bridge, messages, flush_points):
    bridge._producer.sent.clear()
    bridge.acks.clear()
    received_before = bridge.stats.received
    incoming = _incoming(messages)
    flush_at = set(flush_points)
    for i, m in enumerate(incoming):
        if i in flush_at:
            bridge._flush()
        bridge._on_message(bridge._mqtt, None, m)
    bridge._flush()
    assert bridge.stats.received - received_before == len(incoming)
    assert bridge.acks == []  # nothing acknowledged before Kafka has it
    for _, _, fut in bridge._producer.sent:
        fut.succeed()

    # every message in exactly one envelope, unchanged, in its device's partition, in order per device
    expected = [(_as_received(m), m.payload) for m in incoming]
    got = []
    order: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    for partition, value, _ in bridge._producer.sent:
        _, msgs = unpack_raw(value)
        for topic, payload in msgs:
            assert partition == partition_of(kafka_key_for_mqtt_topic(topic).encode(), PARTITIONS)
            order[kafka_key_for_mqtt_topic(topic)].append((topic, payload))
        got += msgs
    assert Counter(got) == Counter(expected)
    for key, seq in order.items():
        assert seq == [tp for tp in expected if kafka_key_for_mqtt_topic(tp[0]) == key]
    assert sorted(bridge.acks) == sorted((m.mid, 1) for m in incoming if m.qos == 1)
    assert bridge._unacked == 0

    check_stage([value for _, value, _ in bridge._producer.sent])


def test_non_utf8_topic_does_not_kill_the_mqtt_loop(bridge):
    """paho raises UnicodeDecodeError from ``msg.topic`` inside ``on_message``; unhandled, it ends paho's loop
    thread and the bridge would sit connected and deaf. A broker should refuse such topics; if one passes, the
    message reaches the DLQ like any other bad topic."""
    bridge._producer.sent.clear()
    m = mqtt.MQTTMessage(mid=7, topic=b"sw/s1/crane/tc\xff01/load")
    m.payload, m.qos = b'{"ts":1790000000000,"value":1,"unit":"t"}', 1
    bridge._on_message(bridge._mqtt, None, m)
    bridge._flush()
    ((_, value, _),) = bridge._producer.sent
    assert unpack_raw(value)[1] == [("sw/s1/crane/tc\\xff01/load", m.payload)]
    assert check_stage([value]) == 0


def test_worst_case_envelope_fits_the_producer_limit(bridge):
    """The broker caps a message at ``message_size_limit`` (256 KiB as deployed); a record packs up to 512 KiB
    of payloads, and JSON escapes a control byte as six (``\\u0000``). Both at once still fit the bridge's
    ``max_request_size``, so no send can raise."""
    bridge._producer.sent.clear()
    for i in range(4):
        m = mqtt.MQTTMessage(mid=100 + i, topic=b"sw/s1/crane/tc-01/load/" + b"\x01" * 60_000)
        m.payload, m.qos = b"\x00" * MQTT_MESSAGE_LIMIT, 1
        bridge._on_message(bridge._mqtt, None, m)
    bridge._flush()
    sizes = [len(v) for _, v, _ in bridge._producer.sent]
    assert sum(len(unpack_raw(v)[1]) for _, v, _ in bridge._producer.sent) == 4
    assert max(sizes) <= bridge._producer.config["max_request_size"]
    for _, _, fut in bridge._producer.sent:
        fut.succeed()
