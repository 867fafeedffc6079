"""MQTT → Kafka bridge, at-least-once.

Why it is built this way:

- **Persistent session + manual ack.** The bridge subscribes at QoS 1 with a fixed client id and
  ``clean_session=False``; paho's ``manual_ack`` lets us send the PUBACK only after Kafka has acknowledged the
  write. A bridge crash therefore leaves unacknowledged messages with the broker, which redelivers them when the
  bridge comes back. Nothing the broker acknowledged to a sensor is lost between MQTT and Kafka.
- **Packing.** Per-reading Kafka records cap a Faust worker near 17k readings/s (DESIGN §4), so the bridge packs
  the messages that arrive within ``linger`` into one ``sw.raw`` record per *partition*: each message's key
  (``site/device``, or ``site/gateway`` for gateway frames) picks the partition with Kafka's default
  partitioner, so a device's messages stay ordered in one partition exactly as if keyed one by one. The original
  bytes travel unchanged: validation happens downstream, and what it rejects reaches the DLQ byte for byte.
- **No validation here.** The bridge stays dumb and fast; the single validation point is the worker
  (``sitewatch.contracts.validate_message``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from kafka import KafkaProducer

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


@dataclass
class BridgeStats:
    received: int = 0
    produced_records: int = 0
    acked: int = 0
    kafka_errors: int = 0


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
    ):
        self.linger_s = linger_s
        self.stats = BridgeStats()
        self._pending: list[tuple[str, bytes, int, int]] = []  # topic, payload, mid, qos
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reconnect = threading.Event()
        self._n_partitions: int | None = None
        self._producer = KafkaProducer(
            bootstrap_servers=kafka_bootstrap,
            client_id=client_id,
            acks="all",
            linger_ms=5,
            retries=2_147_483_647,
            delivery_timeout_ms=120_000,
            max_request_size=4 * 1024 * 1024,
            **(kafka_options or {}),
        )
        self._mqtt = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            manual_ack=True,
        )
        if username:
            self._mqtt.username_pw_set(username, password)
        self._mqtt.on_connect = self._on_connect
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
        log.info("MQTT connected (session present=%s); subscribing %s", flags.session_present, MQTT_SUBSCRIPTION)
        client.subscribe(MQTT_SUBSCRIPTION, qos=1)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("MQTT disconnected (%s); paho reconnects, broker redelivers unacked messages", reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage):
        with self._lock:
            self._pending.append((msg.topic, msg.payload, msg.mid, msg.qos))
            self.stats.received += 1

    # --------------------------------------------------------------------------------------- Kafka side
    def _flush(self) -> int:
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return 0
        rx = now_ms()
        partitions = self._partitions()
        groups: dict[int, list[tuple[str, bytes, int, int]]] = defaultdict(list)
        for item in batch:
            groups[partition_of(kafka_key_for_mqtt_topic(item[0]).encode(), partitions)].append(item)
        for partition, items in groups.items():
            chunk: list[tuple[str, bytes, int, int]] = []
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

    def _send(self, partition: int, items: list[tuple[str, bytes, int, int]], rx: int) -> None:
        value = pack_raw(((t, p) for t, p, _, _ in items), rx)
        future = self._producer.send(TOPIC_RAW, value=value, partition=partition)
        mids = [(mid, qos) for _, _, mid, qos in items if qos > 0]
        future.add_callback(self._acked, mids)
        future.add_errback(self._failed, len(items))
        self.stats.produced_records += 1

    def _acked(self, mids: list[tuple[int, int]], _metadata) -> None:
        for mid, qos in mids:
            self._mqtt.ack(mid, qos)
        self.stats.acked += len(mids)

    def _failed(self, count: int, exc: Exception) -> None:
        # Not acknowledged to MQTT: force a reconnect so the broker redelivers them (at-least-once).
        self.stats.kafka_errors += 1
        log.error("Kafka write of %d messages failed (%s); reconnecting MQTT to get them redelivered", count, exc)
        self._reconnect.set()

    # --------------------------------------------------------------------------------------- lifecycle
    def run(self, stop: threading.Event | None = None, report_every_s: float = 10.0) -> None:
        stop = stop or self._stop
        host, port = self._mqtt_addr
        self._mqtt.connect_async(host, port, keepalive=30)
        self._mqtt.loop_start()
        last_report, last_received = time.monotonic(), 0
        try:
            while not stop.is_set():
                if self._flush() == 0:
                    time.sleep(self.linger_s)
                if self._reconnect.is_set():
                    self._reconnect.clear()
                    self._producer.flush(30)
                    self._mqtt.reconnect()
                if report_every_s and time.monotonic() - last_report >= report_every_s:
                    dt = time.monotonic() - last_report
                    log.info(
                        "bridge: %.0f msg/s, received %d, acked %d, kafka errors %d",
                        (self.stats.received - last_received) / dt,
                        self.stats.received,
                        self.stats.acked,
                        self.stats.kafka_errors,
                    )
                    last_report, last_received = time.monotonic(), self.stats.received
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Graceful stop: what was received gets written and acknowledged before we disconnect."""
        self._stop.set()
        self._flush()
        self._producer.flush(30)
        time.sleep(0.05)  # let paho's loop send the last PUBACKs
        self._mqtt.disconnect()
        self._mqtt.loop_stop()
        self._producer.close(10)
        log.info("bridge stopped: received %d, acked %d", self.stats.received, self.stats.acked)
