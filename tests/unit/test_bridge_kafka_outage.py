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
    def __init__(self, **config):
        self.down_for = 3  # flushes that time out before Kafka is back
        self.flushes = 0

    def partitions_for(self, topic):
        return {0, 1, 2, 3}

    def send(self, *args, **kwargs):
        raise KafkaTimeoutError("buffer full")  # the outage: nothing can be sent

    def flush(self, timeout=None):
        self.flushes += 1
        if self.flushes <= self.down_for:
            raise KafkaTimeoutError("Timeout after waiting for 30 secs")

    def close(self, timeout=None):
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
    assert bridge._producer.flushes > bridge._producer.down_for, "it kept trying through the outage"
    assert bridge._mqtt.reconnects == 1, "reconnected (redelivery) once Kafka answered again"
