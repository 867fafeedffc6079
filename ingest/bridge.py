"""MQTT → Kafka bridge, at-least-once, scaled out with MQTT v5 shared subscriptions.

Why it is built this way:

- **Persistent session + manual ack.** Each bridge instance connects with MQTT v5, a stable client id,
  ``clean_start=False`` and a session expiry interval, subscribes at QoS 1, and sends the PUBACK only after Kafka
  has acknowledged the write (paho ``manual_ack``). A crash therefore leaves unacknowledged messages with the
  broker, which redelivers them when the instance comes back. Nothing the broker acknowledged to a sensor is
  lost between MQTT and Kafka; what was written but not yet acknowledged comes twice (at-least-once).
- **Shared subscription** ``$share/<group>/sw/#``: every bridge in the group gets a share of the messages, so
  several bridges split one broker's load. What mosquitto 2.0 does with it (read in its ``subs.c`` and checked by
  ``tests/integration/test_bridge_scaleout.py``):

  * it deals messages round-robin, one by one, to every *session* subscribed in the group — connected or not;
  * the QoS 1 messages in flight to a member that dies stay in that member's session and are redelivered to the
    same session when it reconnects; they are never handed to another member;
  * while a member is down, its share keeps queuing in its session (up to ``max_queued_messages`` /
    ``max_queued_bytes``, beyond which mosquitto drops them) and is lost if the session expires.

  So the group splits load but does not fail over: a dead instance must come back under the same client id (or
  be drained, ``--drain``) before its session queue fills or expires. A graceful stop therefore unsubscribes
  first, so the broker routes everything to the other members while this one is away.
- **Per-device order across bridges.** Two bridges may carry consecutive messages of one device; both write
  to the device's partition, so two messages published within one flush interval (~20 ms) of each other can
  swap places in ``sw.raw``. The measurement time in the payload is the truth downstream (late lane), and real
  devices publish far less often than that.
- **Instance id.** ``--instance`` / ``SW_BRIDGE_ID`` names the session. By default an instance takes the first
  free ``sitewatch-bridge-<host>-<n>`` whose lock file in the data directory no other process holds: two
  bridges on one host never share a session (the broker would make them kick each other off forever), and a
  restarted bridge takes back the id (and the session) its killed predecessor left free.
- **Packing.** Per-reading Kafka records cap a Faust worker near 17k readings/s, so the bridge packs the
  messages that arrive within ``linger`` into one ``sw.raw`` record per *partition*: each message's key
  (``site/device``, or ``site/gateway`` for gateway frames) picks the partition with Kafka's default
  partitioner, so a device's messages land in one partition exactly as if keyed one by one. The original bytes
  travel unchanged: validation happens downstream, and what it rejects reaches the DLQ byte for byte. Each record
  carries a ``sw-bridge`` header naming the instance that wrote it (operations, and the scale-out test).
- **No validation here.** The bridge stays dumb and fast; the single validation point is the worker
  (``sitewatch.contracts.validate_message``).
"""

from __future__ import annotations

import fcntl
import logging
import re
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import paho.mqtt.client as mqtt
from kafka import KafkaProducer
from kafka.errors import KafkaError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from sitewatch.contracts import (
    MQTT_SUBSCRIPTION,
    TOPIC_RAW,
    kafka_key_for_mqtt_topic,
    now_ms,
    pack_raw,
    partition_of,
)

log = logging.getLogger("sitewatch.bridge")

MAX_RECORD_BYTES = 512 * 1024
DEFAULT_GROUP = "sitewatch-bridges"
DEFAULT_SESSION_EXPIRY_S = 7 * 24 * 3600
BRIDGE_HEADER = "sw-bridge"
_MAX_SLOTS = 64


_Item = tuple[str, bytes, int, int, int]  # topic, payload, packet id, qos, connection it arrived on


@dataclass
class BridgeStats:
    received: int = 0
    produced_records: int = 0
    acked: int = 0  # PUBACKs sent (written to Kafka, acknowledged on the connection they came on)
    left_to_redelivery: int = 0  # written, but their connection is gone or failed: the broker sends them again
    kafka_errors: int = 0


def shared_subscription(group: str | None) -> str:
    """``$share/<group>/sw/#``, or plain ``sw/#`` without a group (one bridge gets everything)."""
    if not group:
        return MQTT_SUBSCRIPTION
    if any(c in group for c in "/+#"):
        raise ValueError(f"share group name {group!r} may not contain '/', '+' or '#'")
    return f"$share/{group}/{MQTT_SUBSCRIPTION}"


class InstanceTaken(RuntimeError):
    pass


def _try_lock(path: Path) -> IO[bytes] | None:
    f = open(path, "ab")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def claim_instance(data_dir: Path, instance: str | None = None) -> tuple[str, IO[bytes]]:
    """The client id this process runs as, and the open lock file that reserves it for its lifetime.

    The kernel drops the lock when the process dies however it dies, so a bridge restarted after SIGKILL gets
    the same id back and resumes its session; a second bridge on the host takes the next free id.
    """
    lock_dir = Path(data_dir) / "bridge"
    lock_dir.mkdir(parents=True, exist_ok=True)
    if instance:
        f = _try_lock(lock_dir / f"{_file_safe(instance)}.lock")
        if f is None:
            raise InstanceTaken(f"bridge instance {instance!r} is already running on this host")
        return instance, f
    host = _file_safe(socket.gethostname()) or "host"
    for n in range(_MAX_SLOTS):
        candidate = f"sitewatch-bridge-{host}-{n}"
        f = _try_lock(lock_dir / f"{candidate}.lock")
        if f is not None:
            return candidate, f
    raise InstanceTaken(f"{_MAX_SLOTS} bridge instances already run from {lock_dir}")


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


class Bridge:
    def __init__(
        self,
        mqtt_host: str,
        mqtt_port: int,
        kafka_bootstrap: str,
        client_id: str = "sitewatch-bridge",
        username: str | None = None,
        password: str | None = None,
        linger_s: float = 0.02,
        kafka_options: dict | None = None,
        group: str | None = DEFAULT_GROUP,
        session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S,
        drain: bool = False,
        delivery_timeout_s: float = 120.0,
    ):
        self.client_id = client_id
        self.subscription = shared_subscription(group)
        self.session_expiry_s = session_expiry_s
        self.drain = drain
        self.linger_s = linger_s
        self.stats = BridgeStats()
        self._pending: list[_Item] = []
        self._connection = 0  # bumped on every disconnect: a packet id is acknowledged only on its own connection
        self._unacked = 0  # QoS 1 messages received and not yet acknowledged to the broker
        self._last_rx = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reconnect = threading.Event()
        self._leaving = threading.Event()  # no (re)subscribe any more: graceful stop or drain
        self._unsubscribed = threading.Event()
        self._n_partitions: int | None = None
        self._header = [(BRIDGE_HEADER, client_id.encode())]
        self._poisoned: int | None = None  # the MQTT connection whose messages are left to the broker's redelivery
        self._generation = 0  # of the producer: a failure reported by a replaced producer is old news
        self._producer_config = dict(
            bootstrap_servers=kafka_bootstrap,
            client_id=client_id,
            acks="all",
            linger_ms=5,
            retries=2_147_483_647,
            delivery_timeout_ms=int(delivery_timeout_s * 1000),
            request_timeout_ms=min(30_000, int(delivery_timeout_s * 500)),
            # Not idempotent: kafka-python 3.0's idempotent producer never sends again once a batch has expired
            # (delivery timeout) while the broker was unreachable — it waits forever for a producer-epoch bump
            # (tests/faults/test_outages.py froze Tansu past the timeout: the bridge stayed up and wrote nothing
            # more). Idempotence would only spare duplicates from the producer's own retries; the bridge is
            # at-least-once anyway (MQTT redelivers what it did not acknowledge) and everything downstream
            # tolerates a reading twice. One request in flight keeps a device's readings in order through
            # retries, as the idempotent producer did.
            enable_idempotence=False,
            max_in_flight_requests_per_connection=1,
            max_request_size=4 * 1024 * 1024,
            **(kafka_options or {}),
        )
        self._producer: KafkaProducer | None = KafkaProducer(**self._producer_config)
        self._mqtt = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if username:
            self._mqtt.username_pw_set(username, password)
        self._mqtt.on_connect = self._on_connect
        self._mqtt.on_subscribe = self._on_subscribe
        self._mqtt.on_unsubscribe = self._on_unsubscribe
        self._mqtt.on_message = self._on_message
        self._mqtt.on_disconnect = self._on_disconnect
        self._mqtt.reconnect_delay_set(0.5, 10)
        self._mqtt_addr = (mqtt_host, mqtt_port)
        self.connected = threading.Event()

    # --------------------------------------------------------------------------------------- MQTT side
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("MQTT connect refused: %s", reason_code)
            return
        with self._lock:
            self._poisoned = None  # a new connection: the broker sends everything unacknowledged again, in order
        if self.drain or self._leaving.is_set():
            # the plain filter too: a session left by a pre-v5 bridge (client id sitewatch-bridge) holds sw/#
            filters = sorted({self.subscription, MQTT_SUBSCRIPTION})
            log.info("MQTT connected as %s (session present=%s); draining the session, unsubscribing %s",
                     self.client_id, flags.session_present, " ".join(filters))
            self._leaving.set()
            self._unsubscribed.clear()
            client.unsubscribe(filters)
        else:
            log.info("MQTT connected as %s (session present=%s); subscribing %s",
                     self.client_id, flags.session_present, self.subscription)
            client.subscribe(self.subscription, options=SubscribeOptions(qos=1))
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        for rc in reason_codes:
            if rc.is_failure:  # e.g. a broker without shared subscriptions: say so rather than sit idle
                log.error("MQTT subscription %s refused: %s", self.subscription, rc)

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        self._unsubscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._connection += 1
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("MQTT disconnected (%s); paho reconnects, broker redelivers unacked messages", reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage):
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # paho raises on a non-UTF-8 topic; its loop thread would die with it
            topic = msg._topic.decode("utf-8", "backslashreplace")  # kept readable, rejected downstream
        with self._lock:
            if self._poisoned is not None:
                return  # not acknowledged: comes again, in order, on the next connection (see _failed)
            self._pending.append((topic, msg.payload, msg.mid, msg.qos, self._connection))
            self.stats.received += 1
            if msg.qos > 0:
                self._unacked += 1
            self._last_rx = time.monotonic()

    # --------------------------------------------------------------------------------------- Kafka side
    def _flush(self) -> int:
        with self._lock:
            batch, self._pending = self._pending, []
            # Messages of a failed or closed connection are not written: the broker sends them again, oldest
            # first, on the next one (writing them now could put a newer reading before an older one)
            current = self._connection if self._poisoned is None else None
            if any(item[4] != current for item in batch):
                self._unacked -= sum(1 for item in batch if item[4] != current and item[3] > 0)
                batch = [item for item in batch if item[4] == current]
        if not batch or self._producer is None:
            with self._lock:
                self._pending[:0] = batch  # no producer while Kafka is away: kept for the next turn
            return 0
        rx = now_ms()
        partitions = self._partitions()
        groups: dict[int, list[_Item]] = defaultdict(list)
        for item in batch:
            groups[partition_of(kafka_key_for_mqtt_topic(item[0]).encode(), partitions)].append(item)
        for partition, items in groups.items():
            chunk: list[_Item] = []
            size = 0
            for item in items:
                if chunk and size + len(item[1]) > MAX_RECORD_BYTES:
                    self._send(partition, chunk, rx)
                    chunk, size = [], 0
                chunk.append(item)
                size += len(item[1]) + len(item[0]) + 16
            self._send(partition, chunk, rx)
        return len(batch)

    def _partitions(self) -> int:
        if self._n_partitions is None:
            found = self._producer.partitions_for(TOPIC_RAW)
            self._n_partitions = len(found)
        return self._n_partitions

    def _send(self, partition: int, items: list[_Item], rx: int) -> None:
        value = pack_raw(((item[0], item[1]) for item in items), rx)
        generation = self._generation
        try:
            future = self._producer.send(TOPIC_RAW, value=value, partition=partition, headers=self._header)
        except KafkaError as e:  # buffer full or no metadata during a long Kafka outage: not acked, redelivered
            self._failed(len(items), e, generation=generation)
            return
        mids = [(mid, qos, conn) for _, _, mid, qos, conn in items if qos > 0]
        future.add_callback(self._acked, mids, generation)
        future.add_errback(lambda exc, n=len(items): self._failed(n, exc, generation=generation))
        self.stats.produced_records += 1

    def _acked(self, mids: list[tuple[int, int, int]], generation: int, _metadata) -> None:
        # After a reconnect the broker resends what was in flight under the same packet ids and may reuse an id
        # once it is acknowledged: a late PUBACK from the old connection could then acknowledge a different,
        # not yet written message. Old ones are left to their redelivered copies instead (a duplicate, not a loss).
        current, poisoned = self._connection, self._poisoned
        sent = 0
        for mid, qos, conn in mids:
            if conn == current and conn != poisoned:
                self._mqtt.ack(mid, qos)
                sent += 1
        with self._lock:
            if generation == self._generation:  # a replaced producer's messages are counted again on redelivery
                self._unacked -= len(mids)
        self.stats.acked += sent
        self.stats.left_to_redelivery += len(mids) - sent

    def _failed(self, count: int, exc: Exception, generation: int | None = None) -> None:
        """A write Kafka did not take. From then on nothing of this MQTT connection is written or acknowledged:
        a later message written before the failed one is redelivered would put a device's readings out of order
        in ``sw.raw`` (a crane's overload arriving after its later readings was taken for a duplicate and
        dropped). The run loop replaces the producer (dropping what it still buffers), waits for Kafka and
        reconnects MQTT; the broker then sends every unacknowledged message again, oldest first."""
        if generation is not None and generation != self._generation:
            return  # the replaced producer dropping its buffer: expected
        self.stats.kafka_errors += 1
        with self._lock:
            if self._poisoned is None:
                self._poisoned = self._connection
                log.error("Kafka write of %d messages failed (%s); this MQTT session's messages stay "
                          "unacknowledged and come again, in order, once Kafka is back", count, exc)
        self._reconnect.set()

    def _recover(self) -> bool:
        """After a failed write: a fresh producer once Kafka answers (the old one's buffer is dropped: all of it
        comes again from MQTT), then an MQTT reconnect. False while Kafka is still away."""
        if self._producer is not None:
            old, self._producer = self._producer, None
            self._generation += 1
            try:
                old.close(timeout=0)
            except Exception as e:  # noqa: BLE001 - it is being thrown away
                log.debug("closing the failed producer: %s", e)
        producer = None
        try:
            producer = KafkaProducer(**self._producer_config)
            producer.partitions_for(TOPIC_RAW)
        except KafkaError as e:
            if producer is not None:
                producer.close(timeout=0)
            log.warning("Kafka still unreachable (%s); MQTT messages stay unacknowledged, retrying", e)
            return False
        self._producer = producer
        with self._lock:
            self._unacked = 0  # everything unacknowledged comes again on the new connection and is counted then
            self._connection += 1  # paho's reconnect() does not call on_disconnect; _on_connect lifts the poison
        self._mqtt.reconnect()
        return True

    # --------------------------------------------------------------------------------------- lifecycle
    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        return props

    def _idle_for(self, quiet_s: float) -> bool:
        """Nothing waiting, nothing unacknowledged, and nothing received for ``quiet_s``."""
        with self._lock:
            return not self._pending and self._unacked <= 0 and time.monotonic() - self._last_rx >= quiet_s

    def run(self, stop: threading.Event | None = None, report_every_s: float = 10.0) -> None:
        stop = stop or self._stop
        host, port = self._mqtt_addr
        self._mqtt.connect_async(host, port, keepalive=30, clean_start=False, properties=self._connect_properties())
        self._mqtt.loop_start()
        last_report, last_received = time.monotonic(), 0
        try:
            while not stop.is_set():
                if self._flush() == 0:
                    time.sleep(self.linger_s)
                if self._reconnect.is_set():
                    if not self._recover():
                        time.sleep(1.0)  # Kafka still away: hold the MQTT messages unacknowledged, try again
                        continue
                    self._reconnect.clear()
                if self.drain and self._unsubscribed.is_set() and self._idle_for(2.0):
                    log.info("drained session %s: %d messages written to Kafka", self.client_id, self.stats.acked)
                    break
                if report_every_s and time.monotonic() - last_report >= report_every_s:
                    dt = time.monotonic() - last_report
                    log.info(
                        "bridge: %.0f msg/s, received %d, acked %d, left to redelivery %d, kafka errors %d",
                        (self.stats.received - last_received) / dt,
                        self.stats.received,
                        self.stats.acked,
                        self.stats.left_to_redelivery,
                        self.stats.kafka_errors,
                    )
                    last_report, last_received = time.monotonic(), self.stats.received
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def _flushed(self, timeout_s: float) -> bool:
        """Wait for Kafka to acknowledge what was sent; False (logged) while Kafka stays unreachable — the bridge
        keeps running and its unacknowledged MQTT messages wait in the broker's session (an outage longer than the
        producer's delivery timeout used to kill the bridge here)."""
        if self._producer is None:
            return False
        try:
            self._producer.flush(timeout_s)
            return True
        except KafkaError as e:
            log.warning("Kafka still unreachable (%s); MQTT messages stay unacknowledged, retrying", e)
            return False

    def close(self, drain_timeout_s: float = 30.0) -> None:
        """Graceful stop: leave the share group first so the broker routes everything to the other members, then
        write and acknowledge what this instance already holds before disconnecting. What is still queued in the
        session when ``drain_timeout_s`` runs out stays there for the next start under this id."""
        self._stop.set()
        if self.connected.is_set() and not self._leaving.is_set():
            self._leaving.set()
            self._unsubscribed.clear()
            self._mqtt.unsubscribe(self.subscription)
            self._unsubscribed.wait(5)
        deadline = time.monotonic() + drain_timeout_s
        while time.monotonic() < deadline and self.connected.is_set():
            self._flush()
            if not self._flushed(30):
                break
            if self._idle_for(0.3):
                break
            time.sleep(self.linger_s)
        self._flush()
        self._flushed(30)  # what Kafka did not take stays unacknowledged in the session for the next start
        time.sleep(0.05)  # let paho's loop send the last PUBACKs
        props = None
        if self.drain and self._idle_for(0):
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0  # drained: the broker forgets the session
        self._mqtt.disconnect(properties=props)
        self._mqtt.loop_stop()
        if self._producer is not None:
            self._producer.close(10)
        log.info("bridge %s stopped: received %d, acked %d", self.client_id, self.stats.received, self.stats.acked)
