"""Real services for the sink tests: Tansu (Kafka-compatible) and Debian's InfluxDB 1.x, started per test.

Both start in well under a second, so every test gets its own broker and database: no shared state, and an
outage test can stop its database without disturbing anything else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sitewatch.contracts import TOPIC_HAZARDS, TOPIC_READINGS, device_key
from app.localstack import ManagedProcess, create_topics, free_port, start_influxdb, start_kafka
from tests.conftest import wait_until  # noqa: F401 (re-exported for the sink tests)


@dataclass
class Influx:
    port: int
    data_dir: Path
    proc: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """(Re)start on the same port and data directory: what an operator's restart does."""
        self.proc = start_influxdb(self.port, self.data_dir)
        wait_until(self.ping, 30, "influxd /ping")

    def ping(self) -> bool:
        try:
            return httpx.get(f"{self.url}/ping", timeout=1).status_code == 204
        except httpx.HTTPError:
            return False

    def query(self, q: str, db: str = "sitewatch") -> list[dict]:
        """InfluxQL → list of series dicts (name, tags, columns, values); raises on a query error."""
        r = httpx.get(f"{self.url}/query", params={"q": q, "db": db, "epoch": "ms"}, timeout=30)
        r.raise_for_status()
        res = r.json()["results"][0]
        if "error" in res:
            raise AssertionError(f"{q}: {res['error']}")
        return res.get("series", [])

    def rows(self, q: str, db: str = "sitewatch") -> list[dict]:
        out = []
        for s in self.query(q, db):
            for v in s["values"]:
                row = dict(zip(s["columns"], v))
                row.update(s.get("tags", {}))
                out.append(row)
        return out

    def count(self, measurement: str, rp: str = "") -> int:
        src = f'"{rp}"."{measurement}"' if rp else f'"{measurement}"'
        try:
            s = self.query(f'SELECT count("value") FROM {src}')
        except (AssertionError, httpx.HTTPError):
            return 0
        return int(s[0]["values"][0][1]) if s else 0


@pytest.fixture
def influx(tmp_path: Path):
    port = free_port()
    db = Influx(port, tmp_path / "influx", None)  # type: ignore[arg-type]
    db.start()
    yield db
    db.proc.stop()


@pytest.fixture
def kafka(tmp_path: Path):
    port = free_port()
    proc = start_kafka(port, tmp_path / "kafka")
    bootstrap = f"127.0.0.1:{port}"
    create_topics(bootstrap, partitions=4)
    yield bootstrap
    proc.stop()


class Producer:
    """Produces ``sw.readings`` / ``sw.hazards`` records exactly as the worker does (key ``site/device``)."""

    def __init__(self, bootstrap: str):
        from kafka import KafkaProducer

        self.p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")

    def readings(self, site: str, family: str, device: str, metrics: list[str], ts: list[int],
                 vals: list[float]) -> None:
        rec = {"v": 1, "type": "readings", "site": site, "device": device, "family": family, "rx": ts[-1],
               "m": metrics, "ts": ts, "val": vals}
        self.p.send(TOPIC_READINGS, json.dumps(rec).encode(), key=device_key(site, device).encode())

    def status(self, site: str, gateway: str, ts: int, online: bool, **detail) -> None:
        rec = {"v": 1, "type": "status", "site": site, "gateway": gateway, "ts": ts, "online": online,
               "detail": detail}
        self.p.send(TOPIC_READINGS, json.dumps(rec).encode(), key=device_key(site, gateway).encode())

    def hazard(self, **finding) -> None:
        rec = {"v": 1, "category": "hazard", "source": "test", "major": False, "evidence": {}, **finding}
        self.p.send(TOPIC_HAZARDS, json.dumps(rec).encode(), key=device_key(rec["site"], rec["device"]).encode())

    def flush(self) -> None:
        self.p.flush(30)

    def close(self) -> None:
        self.p.close()


@pytest.fixture
def producer(kafka: str):
    p = Producer(kafka)
    yield p
    p.close()


def produce_block(producer: Producer, t0: int, ticks: int, sites: int = 3, devices: int = 4, seed: int = 0,
                  per_record: int = 10) -> dict[tuple[str, str, str, int], float]:
    """Pit and crane readings for ``sites × devices``, ``ticks`` seconds from ``t0``, packed ``per_record``
    ticks per Kafka record (as the bridge packs a device's readings). Returns what InfluxDB must hold:
    (site, device, metric, ts) → value. Values use full float64 precision so formatting is tested exactly."""
    import random

    from sitewatch.contracts import FAMILIES

    rnd = random.Random(seed)
    expected: dict[tuple[str, str, str, int], float] = {}
    for s in range(sites):
        site = f"cz-{s:04d}"
        for d in range(devices):
            family = "pit" if d % 2 == 0 else "crane"
            device = f"{family[:2]}-{d:02d}"
            metrics = list(FAMILIES[family])[:3]
            for start in range(0, ticks, per_record):
                m, ts, val = [], [], []
                for k in range(start, min(ticks, start + per_record)):
                    for metric in metrics:
                        v = rnd.uniform(-50, 150)
                        t = t0 + k * 1000
                        m.append(metric)
                        ts.append(t)
                        val.append(v)
                        expected[(site, device, metric, t)] = v
                producer.readings(site, family, device, m, ts, val)
    producer.flush()
    return expected


def stored_readings(influx: Influx, where: str = "") -> dict[tuple[str, str, str, int], float]:
    rows = influx.rows(f'SELECT "value" FROM "raw"."reading" {where} GROUP BY *')
    return {(r["site"], r["device"], r["metric"], r["time"]): r["value"] for r in rows}
