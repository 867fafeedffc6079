"""Measurement/tag/field layout, hazard episodes, retention policies and rollups, on a real InfluxDB fed
through a real broker by the in-process sink."""

from __future__ import annotations

import threading
import time

import pytest

from streams.sinks.influx import Sink, SinkOptions
from streams.sinks.lineproto import LineBuilder
from streams.sinks.schema import ROLLUPS, backfill_statements, init_database
from streams.sinks.writers import InfluxV1Writer

from .conftest import produce_block, wait_until

pytestmark = pytest.mark.integration


class Running:
    """The sink in a thread of the test process (for the layout and throughput checks)."""

    def __init__(self, kafka: str, url: str, companies: dict | None = None, **opts):
        self.writer = InfluxV1Writer(url)
        init_database(self.writer, "sitewatch")
        self.sink = Sink(self.writer, SinkOptions(bootstrap=kafka, linger_s=0.2, progress_every_s=1.0, **opts),
                         LineBuilder(companies), echo=lambda m: None)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sink.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        self.writer.close()


def test_hazards_health_and_company_tags(kafka, influx, producer):
    t0 = (int(time.time()) - 600) * 1000
    run = Running(kafka, influx.url, companies={"cz-0412": "zhongjian-3"})
    try:
        f = dict(site="cz-0412", device="tc-01", family="crane", kind="crane.overload", metric="load",
                 threshold=10.0, rule="load >= 100% of rated 10.0 t")
        producer.hazard(**f, level=1, ts=t0, value=9.2)
        producer.hazard(**f, level=2, ts=t0 + 5000, value=10.4, major=False)
        producer.hazard(**f, level=3, ts=t0 + 9000, value=11.3, major=True)
        producer.hazard(**f, level=0, ts=t0 + 60_000, value=7.0)
        producer.hazard(site="cz-0412", device="pt-02", family="pit", kind="fault.silent", category="fault",
                        level=2, ts=t0 + 1000, metric="wall_top_horizontal", value=0.0, threshold=300.0,
                        rule="no reading for 300 s")
        producer.status("cz-0412", "gw-01", t0, False, battery=12.5, faults=["E12", "E40"], door_open=True)
        producer.readings("cz-0412", "crane", "tc-01", ["load", "moment"], [t0, t0], [9.2, 88.0])
        producer.flush()
        wait_until(lambda: len(influx.rows('SELECT * FROM "events"."hazard"')) == 5, 30, "5 hazard points")
        wait_until(lambda: influx.count("reading", "raw") == 2, 30, "2 readings")
        wait_until(lambda: influx.rows('SELECT * FROM "events"."device_health"'), 30, "device health")
    finally:
        run.close()

    rows = influx.rows('SELECT * FROM "events"."hazard" WHERE "kind" = \'crane.overload\' GROUP BY *')
    assert [(r["level"], r["value"], r["major"], r["opened_ms"]) for r in rows] == [
        (1, 9.2, False, t0), (2, 10.4, False, t0), (3, 11.3, True, t0), (0, 7.0, False, t0)]
    assert {(r["company"], r["site"], r["family"], r["device"], r["category"], r["metric"], r["threshold"],
             r["rule"]) for r in rows} == {("zhongjian-3", "cz-0412", "crane", "tc-01", "hazard", "load", 10.0,
                                            "load >= 100% of rated 10.0 t")}
    fault = influx.rows('SELECT * FROM "events"."hazard" WHERE "category" = \'fault\' GROUP BY *')
    assert [(r["kind"], r["level"], r["device"]) for r in fault] == [("fault.silent", 2, "pt-02")]
    health = influx.rows('SELECT * FROM "events"."device_health" GROUP BY *')[0]
    assert (health["online"], health["battery"], health["faults"], health["door_open"], health["company"]) == (
        0, 12.5, "E12,E40", True, "zhongjian-3")
    # tags are exactly the bounded set the layout promises: no value-like tag can sneak in
    tag_keys = {s["values"][i][0] for s in influx.query('SHOW TAG KEYS FROM "reading"') for i in range(len(s["values"]))}
    assert tag_keys == {"company", "device", "family", "metric", "site"}
    hz_keys = {v[0] for s in influx.query('SHOW TAG KEYS FROM "hazard"') for v in s["values"]}
    assert hz_keys == {"category", "company", "device", "family", "kind", "site"}


def test_open_episode_age_survives_a_sink_restart(kafka, influx, producer):
    t0 = (int(time.time()) - 600) * 1000
    f = dict(site="cz-1", device="bt-01", family="battery", kind="battery.temp", metric="pack_temp", threshold=55.0,
             rule="pack_temp >= 55")
    run = Running(kafka, influx.url)
    producer.hazard(**f, level=2, ts=t0, value=56.0)
    producer.flush()
    wait_until(lambda: influx.rows('SELECT * FROM "events"."hazard"'), 30, "first finding")
    run.close()
    run = Running(kafka, influx.url)  # a new process would know nothing: it reads the open episode back
    try:
        producer.hazard(**f, level=3, ts=t0 + 30_000, value=66.0)
        producer.flush()
        wait_until(lambda: len(influx.rows('SELECT * FROM "events"."hazard"')) == 2, 30, "second finding")
    finally:
        run.close()
    assert [r["opened_ms"] for r in influx.rows('SELECT * FROM "events"."hazard"')] == [t0, t0]


def test_init_retention_and_rollups(influx):
    w = InfluxV1Writer(influx.url)
    init_database(w, "sitewatch", raw="7d", rollup_1m="90d")
    rps = {r["name"]: r for r in influx.rows('SHOW RETENTION POLICIES ON "sitewatch"')}
    assert rps["raw"]["duration"] == "168h0m0s" and rps["raw"]["default"] is True
    assert rps["rollup_1m"]["duration"] == "2160h0m0s"
    assert rps["rollup_1h"]["duration"] == rps["events"]["duration"] == "0s"  # forever
    cqs = {r["name"] for r in influx.rows("SHOW CONTINUOUS QUERIES")}
    assert {r.name for r in ROLLUPS} <= cqs
    assert init_database(w, "sitewatch", raw="7d", rollup_1m="90d")[-1].startswith("ALTER")  # idempotent

    # two hours of 1 Hz readings → rollups computed by the very statements the CQs run
    t0 = (int(time.time()) // 3600 - 3) * 3600 * 1000
    vals = [float(i % 97) for i in range(7200)]
    lines = [f"reading,device=pt-01,family=pit,metric=wall_top_horizontal,site=cz-1 value={v!r} {t0 + i * 1000}"
             for i, v in enumerate(vals)]
    assert w.write(lines, "readings").points == 7200
    for q in backfill_statements("sitewatch", t0, t0 + 7_200_000):
        w.query(q, post=True)
    m1 = influx.rows('SELECT * FROM "rollup_1m"."reading_1m" GROUP BY *')
    assert len(m1) == 120
    first = vals[:60]
    assert (m1[0]["value"], m1[0]["min"], m1[0]["max"], m1[0]["n"]) == (sum(first) / 60, min(first), max(first), 60)
    h1 = influx.rows('SELECT * FROM "rollup_1h"."reading_1h" GROUP BY *')
    assert [(r["n"], r["site"], r["metric"]) for r in h1] == [(3600, "cz-1", "wall_top_horizontal")] * 2
    assert h1[1]["value"] == pytest.approx(sum(vals[3600:]) / 3600, rel=1e-12)
    w.close()


def test_throughput(kafka, influx, producer, capsys):
    """Measured, not asserted tightly: prints points/s of the sink on this machine (report it)."""
    t0 = (int(time.time()) - 7200) * 1000
    expected = produce_block(producer, t0, ticks=1000, sites=10, devices=6, per_record=20)  # 180,000 points
    start = time.monotonic()
    run = Running(kafka, influx.url)
    try:
        wait_until(lambda: run.sink.stats.readings >= len(expected), 120, "all points written", interval=0.05)
        took = time.monotonic() - start
    finally:
        run.close()
    assert influx.count("reading", "raw") == len(expected)
    with capsys.disabled():
        print(f"\nsink throughput: {len(expected):,} points in {took:.2f} s = {len(expected) / took:,.0f} points/s "
              f"(incl. consumer group join)")


def test_progress_reports_the_lag_to_the_true_log_end(kafka, influx, producer):
    """The progress line's lag comes from streams.offsets (high watermark), not ListOffsets — which Tansu answers
    short by up to a batch: a lag that cannot be read shows as '?' (None) and would fail here; caught up, it is 0."""
    t0 = (int(time.time()) - 3600) * 1000
    expected = produce_block(producer, t0, ticks=200, sites=2, devices=5, per_record=20)
    run = Running(kafka, influx.url)
    try:
        wait_until(lambda: run.sink.stats.readings >= len(expected), 120, "all points written", interval=0.05)
        wait_until(lambda: run.sink.stats.lag == 0, 30, "a progress line with lag 0", interval=0.1)
    finally:
        run.close()
    assert run.sink._end_offsets is not None and run.sink._end_offsets.consumer is not None
