"""Backtest sees what live sees: the deadman clock runs to ``--to``, and field streams replay in ARRIVAL order
(late flushes, duplicates, statuses) — checked on what the engine is actually handed, not on engine behaviour
(the engine's own tests judge late data)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import tuning.backtest as bt
from ingest.fieldstreams import generate
from sitewatch.rules import RuleSet
from tuning.backtest import backtest, load_capture, load_csv, load_events, replay

T0 = 1_714_953_600_000  # 2024-05-06T00:00:00Z
H = 3_600_000


def crane_deadman_s() -> int:
    from detectors.engine import DetectorEngine

    return DetectorEngine(RuleSet.default()).plan("s-01", "tc-01", "crane").silent_ms // 1000


def rules_dir(root: Path, name: str = "rules") -> Path:
    d = root / name
    (d / "sites").mkdir(parents=True)
    return d


@pytest.fixture(scope="module")
def small_flush():
    """buffered-flush squeezed into 6 h: a 2 h outage from 2 h with the overload inside, crane every 10 s."""
    return generate("buffered-flush", start_ms=T0, duration_ms=6 * H, seed=3, crane_interval_s=10,
                    fast_interval_s=30, outage_at_s=2 * 3600, outage_s=2 * 3600, pit_rate=False, max_items=100)


class Recorder:
    """Wraps the real engine and keeps every batch it is handed and every status call."""

    batches: list = []
    device_statuses: list = []

    @classmethod
    def install(cls, monkeypatch):
        real = bt.DetectorEngine
        cls.batches, cls.device_statuses = [], []

        class Engine(real):
            def process(self, batch, states):
                cls.batches.append(batch)
                return super().process(batch, states)

            def on_device_status(self, ds, states):
                cls.device_statuses.append(ds)
                parent = getattr(super(), "on_device_status", None)
                return parent(ds, states) if parent else []

        monkeypatch.setattr(bt, "DetectorEngine", Engine)
        return cls


# ------------------------------------------------------------------------------------------------ --to
def test_to_runs_the_deadman_clock_past_the_last_reading(tmp_path):
    """Both cranes stop at 60 s; the recording ends there. Only with --to is their silence reported."""
    dm = crane_deadman_s()
    path = tmp_path / "stop.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["site", "device", "family", "metric", "ts", "value", "unit"])
        for t in range(60):
            for dev in ("tc-01", "tc-02"):
                w.writerow(["s-01", dev, "crane", "load", T0 + t * 1000, 4.0 + (t % 3) * 0.1, "t"])
    rec = load_csv(path)
    rules = {"b": RuleSet.default()}
    assert [t for t in replay(rec, rules, tick_step_s=5).books["b"].tickets if t.kind == "fault.silent"] == []
    until = T0 + (60 + dm + 120) * 1000
    r = replay(rec, rules, tick_step_s=5, until_ms=until)
    silent = sorted((t.device, t.opened_ms) for t in r.books["b"].tickets if t.kind == "fault.silent")
    first = T0 + ((59 + dm) // 5 * 5 + 5) * 1000
    assert silent == [("tc-01", first), ("tc-02", first)] and r.end_ms == until
    # same through the command: --to is exclusive for readings and is where the clock stops
    res = CliRunner().invoke(backtest, ["--csv", str(path), "--rules", str(rules_dir(tmp_path)), "--baseline",
                                        str(rules_dir(tmp_path, "b")), "--to", str(until), "--tick-step", "5",
                                        "--json"], catch_exceptions=False)
    rep = json.loads(res.stdout)
    assert rep["configs"]["candidate"]["by_category"]["fault"] == {"fault.silent": 2}
    assert rep["replay"]["end_ms"] == until and rep["settings"]["clock_until_ms"] == until


# ------------------------------------------------------------------------------------------------ arrival order
def test_arrival_order_hands_the_engine_late_batches_and_the_duplicates(small_flush, monkeypatch):
    fs = small_flush
    out = fs.manifest.outages[0]
    rec = load_events(fs.events, "flush")
    assert rec.rejected == {} and rec.has_arrivals and len(rec) == fs.manifest.delivered_readings
    rec_ = Recorder.install(monkeypatch)
    r = replay(rec, {"b": RuleSet.default()}, tick_step_s=60, arrival_order=True)
    batches = rec_.batches
    ts = np.concatenate([b.ts for b in batches])
    assert ts.shape[0] == len(rec)
    assert not np.all(np.diff(ts) >= 0), "arrival order is not measurement order"
    # a batch whose readings are all older than something the engine already had: the flush
    seen_max = np.maximum.accumulate([int(b.ts.max()) for b in batches])
    late = [i for i, b in enumerate(batches) if i and int(b.ts.max()) < seen_max[i - 1]]
    assert len(late) >= out.flush_frames - 1
    assert all(int(batches[i].ts.min()) < out.end_ms for i in late)
    # the duplicated frame's readings reach the engine twice
    c = Counter((d, m, t) for b in batches for d, m, t in zip(b.device, b.metric, b.ts.tolist()))
    assert sum(n - 1 for n in c.values()) == out.duplicate_readings == fs.manifest.duplicate_readings > 0
    (ov,) = fs.manifest.hazards
    assert c[(ov.device, "load", ov.peak_ts)] == 2
    # the report counts them
    d = r.delivery
    assert d["order"] == "arrival" and d["duplicate_readings"] == out.duplicate_readings
    assert d["late_readings"] >= fs.manifest.late_readings and d["gateway_statuses"] == 2
    assert d["engine_batches"] == len(batches)


def test_measurement_order_of_the_same_stream_is_sorted(small_flush, monkeypatch):
    rec = load_events(small_flush.events, "flush")
    rec_ = Recorder.install(monkeypatch)
    r = replay(rec, {"b": RuleSet.default()}, tick_step_s=60)
    ts = np.concatenate([b.ts for b in rec_.batches])
    assert np.all(np.diff(ts) >= 0) and r.delivery["order"] == "measurement time"


def test_arrival_order_runs_the_clock_in_arrival_time(small_flush):
    """During the outage nothing of gw-01 arrives: in arrival order its cranes are silent then (what live sees),
    while in measurement order the buffered readings fill the gap."""
    rec = load_events(small_flush.events, "flush")
    out = small_flush.manifest.outages[0]
    rules = {"b": RuleSet.default()}
    arr = replay(rec, rules, tick_step_s=60, arrival_order=True).books["b"].tickets
    ts_ = replay(rec, rules, tick_step_s=60).books["b"].tickets
    in_outage = lambda ts: [t for t in ts if t.kind == "fault.silent" and out.start_ms <= t.opened_ms < out.end_ms]  # noqa: E731
    assert in_outage(arr) and not in_outage(ts_)


def test_device_statuses_go_to_the_engine_in_arrival_order(monkeypatch):
    fs = generate("crane-nightly", start_ms=T0, duration_ms=3 * 24 * H, seed=2, interval_s=60)
    rec = load_events(fs.events, "crane")
    assert len(rec.device_statuses) == sum(1 for _, t, _ in fs.events if t.endswith("/status"))
    rec_ = Recorder.install(monkeypatch)
    r = replay(rec, {"b": RuleSet.default()}, tick_step_s=300, arrival_order=True)
    assert [s.ts for s in rec_.device_statuses] == sorted(s.ts for s in rec.device_statuses)
    offs = [s for s in rec_.device_statuses if not s.online]
    assert len(offs) == sum(w.announced for w in fs.manifest.off_windows) and offs[0].reason == "power_off"
    assert r.delivery["device_statuses"] == len(rec.device_statuses) and r.delivery["device_statuses_replayed"]


def test_csv_with_arrival_column_replays_in_arrival_order(tmp_path, monkeypatch):
    path = tmp_path / "arr.csv"
    rows = [(T0 + i * 1000, T0 + i * 1000 + 200) for i in range(10)] + [(T0 + 2000, T0 + 20_000)]  # one late row
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["site", "device", "family", "metric", "ts", "value", "unit", "arrival_ms"])
        for ts, rx in rows:
            w.writerow(["s-01", "tc-01", "crane", "load", ts, 4.0, "t", rx])
    rec = load_csv(path)
    rec_ = Recorder.install(monkeypatch)
    r = replay(rec, {"b": RuleSet.default()}, tick_step_s=0, arrival_order=True)
    assert rec_.batches[-1].ts.tolist() == [T0 + 2000] and r.delivery["out_of_order_readings"] == 1
    with pytest.raises(ValueError, match="arrival"):
        replay(load_csv(_plain(tmp_path)), {"b": RuleSet.default()}, arrival_order=True)


def _plain(tmp_path: Path) -> Path:
    p = tmp_path / "plain.csv"
    p.write_text(f"site,device,family,metric,ts,value\ns-01,tc-01,crane,load,{T0},4.0\n")
    return p


# ------------------------------------------------------------------------------------------------ command
def test_scenario_command_reports_delivery_and_ground_truth(tmp_path):
    res = CliRunner().invoke(backtest, [
        "--scenario", "buffered-flush", "--span", "6h", "--seed", "3", "--param", "crane_interval_s=10",
        "--param", "fast_interval_s=30", "--param", "outage_at_s=7200", "--param", "outage_s=7200",
        "--param", "pit_rate=false", "--rules", str(rules_dir(tmp_path)), "--baseline", str(rules_dir(tmp_path, "b")),
        "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["settings"]["arrival_order"] is True and rep["delivery"]["order"] == "arrival"
    assert rep["delivery"]["late_readings"] > 0 and rep["delivery"]["duplicate_readings"] > 0
    assert rep["scenario"]["name"] == "buffered-flush" and rep["scenario"]["hazards"][0]["kind"] == "crane.overload"
    c = rep["configs"]["candidate"]
    assert {"late_findings", "late_tickets", "by_category"} <= set(c)
    text = CliRunner().invoke(backtest, [
        "--scenario", "gateway-outage", "--span", "1h", "--param", "crane_interval_s=5",
        "--rules", str(rules_dir(tmp_path, "c2"))], catch_exceptions=False)
    assert text.exit_code == 0, text.output
    assert "delivery  order arrival" in text.stdout and "statuses 2 gateway" in text.stdout
    assert "late findings" in text.stdout


def test_capture_file_round_trip(tmp_path, small_flush):
    path = tmp_path / "cap.jsonl"
    small_flush.write_capture(path)
    rec = load_capture(path)
    assert len(rec) == small_flush.manifest.delivered_readings and rec.messages == len(small_flush.events)
    res = CliRunner().invoke(backtest, ["--capture", str(path), "--rules", str(rules_dir(tmp_path)), "--json",
                                       "--ts-order"], catch_exceptions=False)
    rep = json.loads(res.stdout)
    assert rep["delivery"]["order"] == "measurement time" and rep["delivery"]["duplicate_readings"] > 0


def test_bad_scenario_and_arrival_without_arrival_times_are_usage_errors(tmp_path):
    r = CliRunner().invoke(backtest, ["--scenario", "pit-creep", "--rules", str(rules_dir(tmp_path))])
    assert r.exit_code == 2 and "not a field scenario" in r.output
    r = CliRunner().invoke(backtest, ["--csv", str(_plain(tmp_path)), "--rules", str(rules_dir(tmp_path, "x")),
                                      "--arrival-order"])
    assert r.exit_code == 2 and "no arrival times" in r.output
