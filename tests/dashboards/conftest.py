"""A real InfluxDB (Debian's 1.x) filled the way the sink fills it — the sink's own LineBuilder, writer and
schema, rollups computed by the same statements as the continuous queries — for running every panel query."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sitewatch.contracts import FAMILIES
from app.localstack import free_port, start_influxdb
from streams.sinks.lineproto import LineBuilder
from streams.sinks.schema import backfill_statements, init_database
from streams.sinks.writers import EVENTS, READINGS, InfluxV1Writer

NOW = int(time.time()) * 1000
SITES = {"cz-0001": "zhongjian-3", "cz-0002": "cscec-8"}
DEVICES = {"crane": "tc-01", "pit": "pt-01", "battery": "bt-01", "electrical": "el-01", "formwork": "fw-01"}
STEP_MS = 120_000
SPAN_MS = 2 * 86_400_000


@dataclass
class Filled:
    url: str

    def query(self, q: str) -> dict:
        r = httpx.post(f"{self.url}/query", data={"q": q, "db": "sitewatch", "epoch": "ms"}, timeout=30)
        r.raise_for_status()
        return r.json()


def _signal(family: str, metric: str, i: int, site_no: int) -> float:
    base = {"moment": 60.0, "load": 6.0, "wind": 8.0, "pack_temp": 38.0, "cell_temp": 36.0, "leakage": 8.0,
            "wall_top_horizontal": 12.0}.get(metric, 20.0)
    return base + 0.001 * i * (site_no + 1) + 3 * math.sin(i / 40.0 + site_no)


def _finding(site, device, family, kind, level, ts, value, threshold, metric, major=False, category="hazard"):
    return {"v": 1, "site": site, "device": device, "family": family, "kind": kind, "category": category,
            "level": level, "ts": ts, "metric": metric, "value": value, "threshold": threshold,
            "rule": f"{metric} >= {threshold}", "source": "test", "major": major, "evidence": {}}


def fill(w: InfluxV1Writer) -> None:
    b = LineBuilder(SITES)
    t0 = NOW - SPAN_MS
    n = SPAN_MS // STEP_MS + 1
    records = []
    for s_no, site in enumerate(SITES):
        for family, device in DEVICES.items():
            metrics = list(FAMILIES[family])
            ts = [t0 + k * STEP_MS for k in range(n)]
            records.append({"site": site, "device": device, "family": family, "m": [m for _ in ts for m in metrics],
                            "ts": [t for t in ts for _ in metrics],
                            "val": [_signal(family, m, k, s_no) for k in range(n) for m in metrics]})
    w.write(b.readings(records).readings, READINGS)
    h = [
        # cz-0001: crane overload escalating to a major hazard, open for 30 h and re-asserted since
        _finding("cz-0001", "tc-01", "crane", "crane.overload", 1, NOW - 30 * 3600_000, 9.1, 9.0, "load"),
        _finding("cz-0001", "tc-01", "crane", "crane.overload", 3, NOW - 29 * 3600_000, 11.2, 11.0, "load", True),
        _finding("cz-0001", "tc-01", "crane", "crane.overload", 3, NOW - 600_000, 11.3, 11.0, "load", True),
        # pit wall-top displacement at orange, 2 h old
        _finding("cz-0001", "pt-01", "pit", "pit.cumulative", 2, NOW - 2 * 3600_000, 26.0, 25.5, "wall_top_horizontal"),
        _finding("cz-0001", "pt-01", "pit", "pit.cumulative", 2, NOW - 300_000, 26.4, 25.5, "wall_top_horizontal"),
        # a silent electrical sensor (fault, not hazard)
        _finding("cz-0001", "el-01", "electrical", "fault.silent", 2, NOW - 900_000, 0.0, 300.0, "leakage",
                 category="fault"),
        # battery over-temperature that opened and cleared
        _finding("cz-0001", "bt-01", "battery", "battery.temp", 1, NOW - 3 * 3600_000, 46.0, 45.0, "pack_temp"),
        _finding("cz-0001", "bt-01", "battery", "battery.temp", 0, NOW - 2 * 3600_000, 40.0, 45.0, "pack_temp"),
        # cz-0002: one yellow leakage hazard
        _finding("cz-0002", "el-01", "electrical", "electrical.leakage", 1, NOW - 1800_000, 16.0, 15.0, "leakage"),
    ]
    status = [{"type": "status", "site": site, "gateway": "gw-01", "ts": NOW - k * 600_000, "online": not (site == "cz-0002" and k == 3),
               "detail": {"battery": 80.0}} for site in SITES for k in range(12)]
    batch = b.build(status, h)
    assert not batch.skipped
    w.write(batch.events, EVENTS)
    for q in backfill_statements("sitewatch", t0 - 3600_000, NOW + 60_000):
        w.query(q, post=True)


@pytest.fixture(scope="package")
def filled(tmp_path_factory) -> Filled:
    port = free_port()
    proc = start_influxdb(port, Path(tmp_path_factory.mktemp("influx")))
    w = InfluxV1Writer(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    while not w.ping():
        assert time.monotonic() < deadline, proc.tail()
        time.sleep(0.1)
    init_database(w, "sitewatch")
    fill(w)
    yield Filled(w.url)
    w.close()
    proc.stop()


# ------------------------------------------------------------------------------------------ Grafana's macros
def interval(span_ms: int, max_points: int = 1000, min_ms: int = 1000) -> str:
    """Like Grafana's $__interval: span / max data points, rounded to a friendly step, floored at the
    datasource's timeInterval (1 s, see the provisioning file)."""
    raw = max(span_ms / max_points, min_ms)
    for step in (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 21600, 43200, 86400):
        if step * 1000 >= raw:
            return f"{step}s"
    return "1d"


_REL = re.compile(r"^now-(\d+)([smhd])$")
_UNIT = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def span_of(rel: str) -> int:
    m = _REL.match(rel) or re.match(r"^(\d+)([smhd])$", rel)
    assert m, rel
    return int(m.group(1)) * _UNIT[m.group(2)]


def render(query: str, dashboard: dict, panel: dict, variables: dict[str, str]) -> str:
    """Substitute what Grafana's InfluxDB datasource substitutes before sending an InfluxQL query."""
    span = span_of(panel.get("timeFrom") or dashboard["time"]["from"])
    t_from, t_to = NOW - span, NOW + 60_000
    out = query.replace("$timeFilter", f"time >= {t_from}ms and time <= {t_to}ms")
    out = out.replace("$__interval", interval(span)).replace("${__to}", str(t_to)).replace("${__from}", str(t_from))
    for name in sorted(variables, key=len, reverse=True):
        out = out.replace(f"${{{name}}}", variables[name]).replace(f"${name}", variables[name])
    assert not re.search(r"\$(\{|[A-Za-z_])", out), f"unsubstituted variable in {out}"
    return out
