"""Two bridges in one MQTT v5 share group split one broker's load, and a bridge killed with SIGKILL loses no QoS 1
message: mosquitto keeps its persistent session (and its share of the stream) until it comes back.

Also pins down the broker behaviour the bridge's design rests on (ingest/bridge.py, docs/bridge.md): the messages
in flight to a member that dies are redelivered to that member's session when it reconnects, never to another
member, and the dead member's share keeps queuing in its session meanwhile.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter, defaultdict

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from app.localstack import ManagedProcess, sitewatch_argv
from ingest.bridge import BRIDGE_HEADER
from ingest.simulator import connect_publisher
from sitewatch.contracts import TOPIC_RAW, gateway_topic, reading_topic, unpack_raw
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

N_SITES, DEVICES_PER_SITE, GATEWAYS_PER_SITE = 8, 25, 2
N_MESSAGES = 30_000
FRAME_EVERY = 10  # every 10th message is a gateway frame of 20 readings
IN_FLIGHT = 1000  # publisher window: messages counted as published may still be on their way to the broker


def _messages(start_ms: int) -> list[tuple[str, bytes]]:
    """Unique (topic, payload) pairs over 200 device topics and 16 gateway topics."""
    devices = [reading_topic(f"so-{s:02d}", "pit", f"jc-{d:02d}", "wall_top_horizontal")
               for s in range(N_SITES) for d in range(DEVICES_PER_SITE)]
    gateways = [gateway_topic(f"so-{s:02d}", f"gw-{g}") for s in range(N_SITES) for g in range(GATEWAYS_PER_SITE)]
    out = []
    for i in range(N_MESSAGES):
        if i % FRAME_EVERY == 0:
            topic = gateways[(i // FRAME_EVERY) % len(gateways)]
            frame = [{"family": "pit", "device": f"jc-{k:02d}", "metric": "wall_top_horizontal",
                      "ts": start_ms + i, "value": 5.0 + k * 0.01, "unit": "mm"} for k in range(20)]
            out.append((topic, json.dumps({"seq": i, "readings": frame}).encode()))
        else:
            out.append((devices[i % len(devices)],
                        json.dumps({"ts": start_ms + i, "value": 5.0 + i * 1e-6, "unit": "mm"}).encode()))
    return out


def _client_id(proc: ManagedProcess) -> str:
    found = re.findall(r"MQTT connected as (\S+) \(session present=(\w+)\)", proc.tail(200))
    assert found, f"bridge did not connect:\n{proc.tail(40)}"
    return found[-1][0]


def _read_raw(bootstrap: str, expected: set[tuple[str, bytes]], timeout: float = 180.0):
    """Every copy of every message in ``sw.raw`` with the instance that wrote it, once all expected ones are in."""
    from kafka import KafkaConsumer

    copies: dict[tuple[str, bytes], list[str]] = defaultdict(list)
    consumer = KafkaConsumer(TOPIC_RAW, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                             enable_auto_commit=False)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    writer = dict(r.headers or []).get(BRIDGE_HEADER, b"?").decode()
                    for msg in unpack_raw(r.value)[1]:
                        copies[msg].append(writer)
            if not batch and expected <= copies.keys():
                break  # everything is in and the topic is drained (late duplicates included)
    finally:
        consumer.close()
    return copies


def test_two_bridges_split_the_load_and_a_killed_one_loses_nothing(stack, tmp_path):
    env = {"SW_DATA_DIR": str(tmp_path / "data"), "SW_MQTT_PORT": str(stack.mqtt_port),
           "SW_KAFKA_BOOTSTRAP": stack.bootstrap, "SW_KAFKA_PARTITIONS": "4"}
    logs = tmp_path / "data" / "logs"
    procs: dict[str, ManagedProcess] = {}

    def start(name: str, log_name: str) -> ManagedProcess:
        p = ManagedProcess(name, sitewatch_argv("bridge"), logs / log_name, env).start()
        procs[name] = p
        wait_until(lambda: "MQTT connected" in p.tail(200) or not p.running, 30, f"bridge {name} to connect")
        assert p.running, p.tail(40)
        return p

    publisher = None
    try:
        a, b = start("a", "bridge-a.log"), start("b", "bridge-b.log")
        id_a, id_b = _client_id(a), _client_id(b)
        assert id_a != id_b, "two bridges on one host took different instance ids (sessions) by default"

        messages = _messages(int(time.time() * 1000) - 3_600_000)
        publisher = connect_publisher("127.0.0.1", stack.mqtt_port, "test-scaleout-publisher")
        published = 0
        infos = []

        def publish_all():
            nonlocal published
            for i, (topic, payload) in enumerate(messages):
                infos.append(publisher.publish(topic, payload, qos=1))
                published = i + 1
                if published % 200 == 0:
                    time.sleep(0.02)

        pub = threading.Thread(target=publish_all)
        pub.start()
        wait_until(lambda: published >= N_MESSAGES // 4, 120, "a quarter of the stream published")
        a.kill()  # SIGKILL mid-stream: no unsubscribe, no final flush, no PUBACK for what it held
        killed_at = published
        wait_until(lambda: published >= 3 * N_MESSAGES // 4 or not pub.is_alive(), 120, "the stream to go on")
        time.sleep(1.0)
        restarted_at = published
        a2 = start("a2", "bridge-a2.log")
        pub.join(180)
        for info in infos:
            info.wait_for_publish(30)  # the broker took every message (PUBACK to the sensor)

        assert _client_id(a2) == id_a, "the restarted bridge took back the killed one's instance id"
        assert f"MQTT connected as {id_a} (session present=True)" in a2.tail(200), "and resumed its session"

        expected = set(messages)
        assert len(expected) == N_MESSAGES
        copies = _read_raw(stack.bootstrap, expected)

        # 0 lost: every message, per topic
        lost = expected - copies.keys()
        assert not lost, f"{len(lost)} messages never reached sw.raw, e.g. {[(t, p[:40]) for t, p in sorted(lost)[:3]]}"
        assert not copies.keys() - expected, "sw.raw holds only what was published"
        assert Counter(t for t, _ in copies) == Counter(t for t, _ in messages)

        # at-least-once: a duplicate can only be a message the killed instance wrote to Kafka but had not
        # acknowledged; the broker gives it back to the same session, never to the other bridge
        dups = {m: w for m, w in copies.items() if len(w) > 1}
        assert all(set(w) == {id_a} for w in dups.values()), "duplicates come only from the killed instance's session"

        # the split is real: each instance carried a share, also while the killed one was down (its share
        # queued in its session instead of failing over to the survivor)
        first_writer = {m: w[0] for m, w in copies.items()}
        share = Counter(first_writer.values())
        assert set(share) == {id_a, id_b}
        assert min(share.values()) >= N_MESSAGES // 4, share
        down = [messages[i] for i in range(killed_at + IN_FLIGHT, restarted_at)]
        assert len(down) >= N_MESSAGES // 4
        down_share = Counter(first_writer[m] for m in down)
        assert down_share[id_a] >= len(down) // 4, down_share
        assert "session present=True" in a2.tail(200)
        print(f"\nscale-out: {N_MESSAGES} messages, share {dict(share)}, while down {dict(down_share)}, "
              f"duplicates {len(dups)} ({sum(len(w) - 1 for w in dups.values())} extra copies), lost 0")
    finally:
        if publisher is not None:
            publisher.loop_stop()
            publisher.disconnect()
        for p in reversed(list(procs.values())):
            p.stop()


def _publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    client = connect_publisher("127.0.0.1", port, f"test-publisher-{time.time_ns()}")
    try:
        for info in [client.publish(t, p, qos=1) for t, p in messages]:
            info.wait_for_publish(30)
    finally:
        client.loop_stop()
        client.disconnect()


def test_a_stopped_bridge_leaves_the_group_and_drain_empties_a_dead_instances_session(stack, tmp_path):
    env = {"SW_DATA_DIR": str(tmp_path / "data"), "SW_MQTT_PORT": str(stack.mqtt_port),
           "SW_KAFKA_BOOTSTRAP": stack.bootstrap, "SW_KAFKA_PARTITIONS": "4"}
    logs = tmp_path / "data" / "logs"
    procs: list[ManagedProcess] = []

    def start(name: str, *args: str) -> ManagedProcess:
        p = ManagedProcess(name, sitewatch_argv("bridge", *args), logs / f"{name}.log", env).start()
        procs.append(p)
        wait_until(lambda: "MQTT connected" in p.tail(200) or not p.running, 30, f"bridge {name} to connect")
        return p

    try:
        a, b = start("a"), start("b")
        id_a, id_b = _client_id(a), _client_id(b)
        a.stop()  # SIGTERM: unsubscribes, writes what it holds, disconnects; its session stays
        assert not a.running and "stopped" in a.tail(5)

        batch1 = [(reading_topic("dr-01", "pit", f"jc-{i % 7}", "wall_top_horizontal"),
                   json.dumps({"ts": 1_700_000_000_000 + i, "value": 1.0, "unit": "mm"}).encode()) for i in range(2000)]
        _publish(stack.mqtt_port, batch1)
        copies = _read_raw(stack.bootstrap, set(batch1), timeout=60)
        assert set(batch1) <= copies.keys(), "while a is stopped, b carries everything: nothing queues for a"
        assert {w[0] for m, w in copies.items() if m in set(batch1)} == {id_b}

        b.kill()  # b's session keeps the group subscription: the broker queues the whole stream for it
        batch2 = [(t, p.replace(b'"value": 1.0', b'"value": 2.0')) for t, p in batch1]
        _publish(stack.mqtt_port, batch2)
        drain = ManagedProcess("drain", sitewatch_argv("bridge", "--instance", id_b, "--drain"), logs / "drain.log",
                               env).start()
        procs.append(drain)
        wait_until(lambda: not drain.running, 90, "the drain to finish and exit")
        assert "session present=True" in drain.tail(50)
        copies = _read_raw(stack.bootstrap, set(batch1) | set(batch2), timeout=60)
        assert set(batch2) <= copies.keys(), "the drain wrote everything queued in the dead instance's session"

        probe = _Member(stack.mqtt_port, id_b, "probe", auto_ack=True)
        try:
            assert probe.session_present is False, "a drained session is gone from the broker"
        finally:
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0
            probe.client.disconnect(properties=props)
            probe.client.loop_stop()
        assert id_a != id_b
    finally:
        for p in reversed(procs):
            p.stop()


class _Member:
    """A share-group member with a persistent session that acknowledges only when told to."""

    def __init__(self, port: int, client_id: str, group: str, auto_ack: bool):
        self.received: list[tuple[bytes, bool]] = []  # payload, dup flag
        self.session_present: bool | None = None
        self.auto_ack = auto_ack
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                                  manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.group = group
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 300
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        wait_until(self.subscribed.is_set, 10, f"{client_id} to subscribe")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.session_present = flags.session_present
        client.subscribe(f"$share/{self.group}/probe/#", options=SubscribeOptions(qos=1))

    def _on_message(self, client, userdata, msg):
        self.received.append((msg.payload, bool(msg.dup)))
        if self.auto_ack:
            client.ack(msg.mid, msg.qos)

    def crash(self) -> None:
        """Die like a SIGKILLed process: the socket closes, no DISCONNECT, no PUBACK."""
        self.client.loop_stop()
        self.client.socket().close()


def test_mosquitto_gives_a_dead_members_inflight_messages_back_to_its_own_session(stack):
    group = "probe"
    sender = connect_publisher("127.0.0.1", stack.mqtt_port, "test-probe-publisher")
    a = _Member(stack.mqtt_port, "probe-a", group, auto_ack=False)  # holds its messages unacknowledged
    b = _Member(stack.mqtt_port, "probe-b", group, auto_ack=True)
    a2 = None
    try:
        first = [f"m{i}".encode() for i in range(10)]
        for p in first:
            sender.publish("probe/x", p, qos=1).wait_for_publish(10)
        wait_until(lambda: len(a.received) + len(b.received) == 10, 10, "the first ten to be dealt")
        in_flight_a = {p for p, _ in a.received}
        assert in_flight_a and {p for p, _ in b.received}, "both members got a share"
        a.crash()

        second = [f"n{i}".encode() for i in range(10)]
        for p in second:
            sender.publish("probe/x", p, qos=1).wait_for_publish(10)
        wait_until(lambda: len(b.received) >= 10, 10, "b to get its share of the second ten")
        time.sleep(1.0)  # settle: anything the broker would hand b (a's in-flight, a's share) arrives by now
        got_b = {p for p, _ in b.received}
        assert not got_b & in_flight_a, "a's unacknowledged messages were not handed to b"
        assert len(got_b - set(first)) < len(second), "a's share of the second ten queued in its session"

        a2 = _Member(stack.mqtt_port, "probe-a", group, auto_ack=True)  # a restarted under the same id
        wait_until(lambda: {p for p, _ in a2.received} | got_b >= set(first) | set(second), 10,
                   "every message to reach a member")
        assert a2.session_present is True
        redelivered = {p for p, dup in a2.received if p in in_flight_a}
        assert redelivered == in_flight_a, "a's in-flight messages came back to its own session"
        assert all(dup for p, dup in a2.received if p in in_flight_a), "flagged as redeliveries (DUP)"
    finally:
        for m in (b, a2):
            if m is not None:
                m.client.loop_stop()
                m.client.disconnect()
        sender.loop_stop()
        sender.disconnect()
