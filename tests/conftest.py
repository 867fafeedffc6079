"""Fixtures that start REAL services: mosquitto (or amqtt), Tansu (Kafka-compatible), the bridge and the Faust
worker as child processes, and a real HTTP webhook receiver. A service that cannot start fails the test."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import paho.mqtt.client as mqtt
import pytest

from app.localstack import LocalStack, ManagedProcess, free_port, sitewatch_argv, start_kafka
from app.webhook_receiver import WebhookReceiver


def schema_drift(db, metadata, version_table: str) -> list:
    """How a room's models (``metadata``) differ from the schema its migrations made (Alembic autogenerate's
    diff, ``[]`` when they match), looking at the room's own tables only: other rooms share the database."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from sitewatch.db import make_engine

    engine = make_engine(db) if isinstance(db, str) else db
    own = set(metadata.tables)
    try:
        with engine.connect() as c:
            ctx = MigrationContext.configure(c, opts={
                "version_table": version_table,
                "include_name": lambda name, type_, parents: type_ != "table" or name in own})
            return compare_metadata(ctx, metadata)
    finally:
        if engine is not db:
            engine.dispose()


def down_and_up_again(engine, migrations, metadata) -> None:
    """A room's migrations down to nothing (its tables gone) and up again (its tables back)."""
    from sqlalchemy import inspect

    own = set(metadata.tables)
    migrations.downgrade(engine, "base")
    assert not (own & set(inspect(engine).get_table_names()))
    migrations.upgrade(engine)
    assert own <= set(inspect(engine).get_table_names())


def wait_until(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def stack(tmp_path: Path):
    s = LocalStack(tmp_path / "stack", free_port(), free_port(), partitions=4).start()
    yield s
    s.stop()


@dataclass
class Pipeline:
    stack: LocalStack
    data_dir: Path
    receiver: WebhookReceiver
    db_url: str
    procs: dict[str, ManagedProcess] = field(default_factory=dict)
    worker_starts: int = 0
    rules_path: Path | None = None  # SW_RULES_PATH for the bridge and worker (``@pytest.mark.rules(yaml)``)
    extra_env: dict[str, str] = field(default_factory=dict)  # more settings for the processes a test starts

    @property
    def env(self) -> dict[str, str]:
        return {
            "SW_DATA_DIR": str(self.data_dir),
            "SW_MQTT_PORT": str(self.stack.mqtt_port),
            "SW_KAFKA_BOOTSTRAP": self.stack.bootstrap,
            "SW_DB_URL": self.db_url,
            "SW_WEBHOOK_URL": self.receiver.url,
            "SW_WEBHOOK_SECRET": "test-secret",
            "SW_KAFKA_PARTITIONS": "4",
            **({"SW_RULES_PATH": str(self.rules_path)} if self.rules_path else {}),
            **self.extra_env,
        }

    def start_bridge(self) -> None:
        p = ManagedProcess("bridge", sitewatch_argv("bridge"), self.data_dir / "logs" / "bridge.log", self.env)
        before = p.tail(100_000).count("MQTT connected")  # a restart appends to the same log: wait for a new line
        self.procs["bridge"] = p.start()
        wait_until(lambda: p.tail(100_000).count("MQTT connected") > before, 20, "bridge to connect")

    def start_worker(self, wait_ready: bool = True) -> None:
        self.worker_starts += 1
        log_path = self.data_dir / "logs" / f"worker-{self.worker_starts}.log"
        p = ManagedProcess("worker", sitewatch_argv("worker"), log_path, self.env)
        self.procs["worker"] = p.start()
        if wait_ready:
            wait_until(lambda: "worker ready" in p.tail(200) or not p.running, 90, "worker to be assigned partitions")
            assert p.running, f"worker died:\n{p.tail(60)}"

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{p.tail(40)}" for n, p in self.procs.items())

    def stop(self) -> None:
        for p in reversed(list(self.procs.values())):
            p.stop()


@pytest.fixture
def pipeline(stack: LocalStack, tmp_path: Path, request):
    receiver = WebhookReceiver(secret="test-secret").start()
    pipe = Pipeline(stack, tmp_path / "data", receiver, f"sqlite:///{tmp_path / 'backlog.db'}")
    marker = request.node.get_closest_marker("rules")
    if marker is not None:  # a rules directory for this test: one YAML stream (defaults and/or site documents)
        pipe.rules_path = tmp_path / "rules.yaml"
        pipe.rules_path.write_text(marker.args[0])
    try:
        pipe.start_bridge()
        pipe.start_worker()
        yield pipe
    finally:
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            print(pipe.logs())
        pipe.stop()
        receiver.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


class Publisher:
    """A site sensor: paho-mqtt, QoS 1, waits for the broker's PUBACK."""

    def __init__(self, port: int):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sensor-{os.getpid()}-{time.time_ns()}")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload: dict | bytes, qos: int = 1) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.client.publish(topic, data, qos=qos).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def sensor(stack: LocalStack):
    p = Publisher(stack.mqtt_port)
    yield p
    p.close()


def read_topic(bootstrap: str, topic: str, min_records: int = 0, timeout: float = 20.0) -> list:
    """All records of a topic from the beginning (a fresh group-less consumer), waiting for ``min_records``."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                             enable_auto_commit=False)
    out = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300).values():
                out.extend(records)
            if min_records and len(out) >= min_records:
                while time.monotonic() < deadline:  # drain: everything already in the topic, not one poll of it
                    more = consumer.poll(timeout_ms=1000)
                    if not more:
                        break
                    for records in more.values():
                        out.extend(records)
                break
    finally:
        consumer.close()
    return out


def wait_for_readings(bootstrap: str, site: str, device: str, n: int, timeout: float = 90.0) -> set[int]:
    """Timestamps of ``site/device`` readings that reached ``sw.readings``, once there are at least ``n`` of
    them (duplicates from at-least-once redelivery collapse in the set)."""
    from sitewatch.contracts import TOPIC_READINGS, unpack_readings

    def seen():
        got = set()
        for r in read_topic(bootstrap, TOPIC_READINGS, min_records=1, timeout=10):
            got.update(x.ts for x in unpack_readings(json.loads(r.value)) if (x.site, x.device) == (site, device))
        return got if len(got) >= n else None

    return wait_until(seen, timeout, f"{n} readings of {site}/{device} in sw.readings", interval=1.0)


@pytest.fixture
def tansu(tmp_path):
    """A bare Tansu broker (no MQTT, no topics) for tests of Kafka client behaviour; its bootstrap address."""
    port = free_port()
    proc = start_kafka(port, tmp_path)
    yield f"127.0.0.1:{port}"
    proc.stop()
