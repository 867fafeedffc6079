"""A Kafka outage longer than the producer's delivery timeout: the bridge keeps running, holds its MQTT messages
unacknowledged (the broker redelivers them) and reconnects once Kafka answers again — it used to die on the
flush that timed out."""

from __future__ import annotations

import threading
import time

import pytest
from kafka.errors import KafkaTimeoutError

from ingest import bridge as bridge_mod


class _Producer:
    """Kafka away for the first ``down_for`` producers the bridge builds after the failure."""

    built = 0
    down_for = 3
    sent: list = []

    def __init__(self, **config):
        type(self).built += 1
        self.n = type(self).built
        self.closed = False

    def partitions_for(self, topic):
        if 1 < self.n <= 1 + self.down_for:
            raise KafkaTimeoutError("Failed to update metadata after 60.0 secs")
        return {0, 1, 2, 3}

    def send(self, *args, **kwargs):
        if self.n == 1:
            raise KafkaTimeoutError("buffer full")  # the outage: nothing can be sent
        type(self).sent.append(kwargs.get("value"))
        return _Future()

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        self.closed = True


class _Future:
    def add_callback(self, *a, **k):
        pass

    def add_errback(self, *a, **k):
        pass


class _Mqtt:
    def __init__(self):
        self.reconnects = 0

    def __getattr__(self, name):  # connect_async, loop_start, loop_stop, disconnect, unsubscribe …
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *a, **k: None

    def reconnect(self):
        self.reconnects += 1


@pytest.fixture
def bridge(monkeypatch, tmp_path):
    _Producer.built, _Producer.sent, _Producer.down_for = 0, [], 3
    monkeypatch.setattr(bridge_mod, "KafkaProducer", _Producer)
    real_sleep = time.sleep
    monkeypatch.setattr(bridge_mod.time, "sleep", lambda s: real_sleep(min(s, 0.01)))  # the 1 s back-off, fast
    b = bridge_mod.Bridge("localhost", 1883, "localhost:9092", client_id="outage-bridge")
    b._mqtt = _Mqtt()
    return b


def test_a_long_kafka_outage_does_not_kill_the_bridge(bridge):
    bridge._pending.append(("sw/s1/crane/tc-01/load", b'{"ts":1,"value":1,"unit":"t"}', 5, 1, bridge._connection))
    errors: list[BaseException] = []
    stop = threading.Event()

    def run():
        try:
            bridge.run(stop, report_every_s=0)
        except BaseException as e:  # noqa: BLE001 - the assertion below reports it
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while bridge._mqtt.reconnects == 0 and time.monotonic() < deadline and t.is_alive():
        time.sleep(0.01)
    stop.set()
    t.join(10)
    assert not errors, errors
    assert bridge.stats.kafka_errors >= 1 and bridge.stats.acked == 0, "nothing acknowledged while Kafka was away"
    assert _Producer.built == 2 + _Producer.down_for, "it kept trying through the outage, a fresh producer each time"
    assert bridge._mqtt.reconnects == 1, "reconnected (redelivery) once Kafka answered again"


class _Msg:
    def __init__(self, topic: str, mid: int):
        self.topic, self.payload, self.mid, self.qos = topic, b'{"ts":1,"value":1,"unit":"t"}', mid, 1


def test_after_a_failed_write_nothing_of_that_connection_is_written_or_acknowledged(bridge):
    """Order: a later message written before the failed one comes again would reach sw.raw before it, and a
    crane's overload arriving after its later readings was dropped as a duplicate. So after a failure the
    connection's messages — held, in flight and still arriving — are left to the broker's in-order redelivery."""
    _Producer.down_for = 0  # Kafka answers at the first try after the failure
    acks: list = []
    bridge._mqtt.ack = lambda mid, qos: acks.append(mid)
    conn = bridge._connection
    bridge._on_message(None, None, _Msg("sw/s1/crane/tc-01/load", 1))
    bridge._failed(1, KafkaTimeoutError("expired"))
    bridge._on_message(None, None, _Msg("sw/s1/crane/tc-01/load", 2))  # still arriving on the failed connection
    assert bridge._flush() == 0 and not bridge._pending and not _Producer.sent, "nothing of it written"
    bridge._acked([(3, 1, conn)], bridge._generation, None)  # a write that succeeded just before the failure
    assert acks == [], "nothing of it acknowledged: the broker sends it all again, oldest first"
    assert bridge.stats.acked == 0 and bridge.stats.left_to_redelivery == 1, "the report says so, too"
    bridge._failed(1, KafkaTimeoutError("aborted"), generation=bridge._generation - 1)
    assert bridge.stats.kafka_errors == 1, "a replaced producer dropping its buffer is not a new failure"

    assert bridge._recover() and bridge._mqtt.reconnects == 1
    bridge._on_connect(bridge._mqtt, None, type("F", (), {"session_present": True})(), _Ok(), None)
    bridge._on_message(None, None, _Msg("sw/s1/crane/tc-01/load", 1))  # the redelivery, on the new connection
    assert bridge._flush() == 1 and len(_Producer.sent) == 1


class _Ok:
    is_failure = False
