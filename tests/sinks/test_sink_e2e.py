"""The sink as an operator runs it (``sitewatch sink run`` in its own process) between a real Kafka-compatible
broker and a real InfluxDB: what was produced is exactly what is stored, and a database outage loses nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.localstack import ManagedProcess, sitewatch_argv

from .conftest import Influx, produce_block, stored_readings, wait_until

pytestmark = pytest.mark.integration


def start_sink(tmp_path: Path, kafka: str, influx: Influx, name: str = "sink") -> ManagedProcess:
    env = {"SW_KAFKA_BOOTSTRAP": kafka, "SW_INFLUX_URL": influx.url, "SW_DATA_DIR": str(tmp_path / "data"),
           "SW_SINK_LINGER_S": "0.2"}
    p = ManagedProcess(name, sitewatch_argv("sink", "run"), tmp_path / "logs" / f"{name}.log", env).start()
    return p


def test_produced_readings_arrive_exactly(tmp_path, kafka, influx, producer):
    t0 = (int(time.time()) - 3600) * 1000
    sink = start_sink(tmp_path, kafka, influx)
    try:
        expected = produce_block(producer, t0, ticks=200)  # 3 sites × 4 devices × 3 metrics × 200 s = 7,200
        producer.status("cz-0000", "gw-01", t0, True, battery=87.5, rssi=-71)
        producer.flush()
        wait_until(lambda: influx.count("reading", "raw") >= len(expected), 60,
                   f"{len(expected)} readings in InfluxDB (sink log:\n{sink.tail()})")
        time.sleep(1.0)  # anything beyond the expected would show up now
        got = stored_readings(influx)
        assert got == expected  # same keys, bit-identical float values, nothing extra
        health = influx.rows('SELECT * FROM "events"."device_health" GROUP BY *')
        assert [(h["site"], h["gateway"], h["online"], h["battery"], h["rssi"], h["time"]) for h in health] == [
            ("cz-0000", "gw-01", 1, 87.5, -71.0, t0)]
    finally:
        sink.stop()
    assert "sink stopped" in sink.tail(5), sink.tail()


def test_database_outage_loses_nothing(tmp_path, kafka, influx, producer):
    """Stop influxd mid-stream, keep producing, even kill the sink while the database is down (so nothing
    can survive in the sink's memory), then bring both back: every reading arrives."""
    t0 = (int(time.time()) - 3600) * 1000
    sink = start_sink(tmp_path, kafka, influx, "sink-1")
    expected = produce_block(producer, t0, ticks=100, seed=1)
    wait_until(lambda: influx.count("reading", "raw") >= len(expected), 60, f"first block\n{sink.tail()}")

    influx.proc.stop()  # the outage
    assert not influx.ping()
    first = len(expected)
    expected |= produce_block(producer, t0 + 100_000, ticks=100, seed=2)
    wait_until(lambda: "retry" in sink.tail(50), 30, f"the sink to notice the outage\n{sink.tail()}")
    expected |= produce_block(producer, t0 + 200_000, ticks=50, seed=3)
    time.sleep(1.0)
    sink.kill()  # crash while holding unwritten batches: they were never committed, so Kafka still has them
    sink2 = start_sink(tmp_path, kafka, influx, "sink-2")  # starts while the database is still down
    try:
        time.sleep(2.0)
        influx.start()  # same port, same data directory
        expected |= produce_block(producer, t0 + 250_000, ticks=50, seed=4)
        wait_until(lambda: influx.count("reading", "raw") >= len(expected), 90,
                   f"{len(expected)} readings after the outage\n{sink2.tail()}")
        time.sleep(1.0)
        assert stored_readings(influx) == expected
    finally:
        sink2.stop()
    # the restarted sink wrote exactly what had not been acknowledged and committed before: the first block
    # was committed after its write (not re-read), the rest had stayed uncommitted in Kafka
    assert f"sink stopped: {len(expected) - first:,} points written" in sink2.tail(5), sink2.tail()
