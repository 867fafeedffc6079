"""Field-stream generator (ingest.fieldstreams): deterministic by seed, and its manifest tells the truth about the
events — checked by decoding the events, never by trusting the generator's own bookkeeping."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from ingest.fieldstreams import (Arrival, FieldStream, Manifest, describe, generate, pit_rate_series,
                                 read_capture, scenario_names)
from ingest.fieldstreams.scenarios import demo_stream
from sitewatch.contracts import MAX_PAYLOAD_BYTES, validate_message

T0 = 1_714_953_600_000  # 2024-05-06T00:00:00Z, a Monday (08:00 in Shanghai)
H = 3_600_000
SH = ZoneInfo("Asia/Shanghai")


def frames(fs: FieldStream, gateway: str):
    """(arrival, items) of every readings frame of one gateway, in arrival order."""
    out = []
    for a, topic, payload in fs.events:
        if topic.endswith(f"/gateway/{gateway}/readings"):
            out.append((a, json.loads(payload)["readings"]))
    return out


def readings_of(fs: FieldStream):
    """(arrival, site, family, device, metric, ts, value) of every reading item, duplicates included."""
    out = []
    for a, topic, payload in fs.events:
        parts = topic.split("/")
        body = json.loads(payload)
        if parts[2] == "gateway" and parts[4] == "readings":
            out += [(a, parts[1], r["family"], r["device"], r["metric"], r["ts"], r["value"]) for r in body["readings"]]
        elif parts[4] != "status":
            out.append((a, parts[1], parts[2], parts[3], parts[4], body["ts"], body["value"]))
    return out


@pytest.fixture(scope="module")
def flush() -> FieldStream:
    return generate("buffered-flush", start_ms=T0, seed=11, crane_interval_s=10)


# ------------------------------------------------------------------------------------------------ general
@pytest.mark.parametrize("name", ["pit-cadence", "crane-nightly", "gateway-outage", "buffered-flush"])
def test_same_seed_same_bytes_other_seed_other_bytes(name):
    kw = {"crane-nightly": {"interval_s": 30, "duration_ms": 3 * 24 * H},
          "buffered-flush": {"crane_interval_s": 30},
          "gateway-outage": {"duration_ms": H, "crane_interval_s": 5}}.get(name, {})
    a = generate(name, start_ms=T0, seed=5, **kw)
    b = generate(name, start_ms=T0, seed=5, **kw)
    c = generate(name, start_ms=T0, seed=6, **kw)
    assert a.events == b.events and a.manifest.to_dict() == b.manifest.to_dict()
    assert a.events != c.events
    assert all(isinstance(e, Arrival) for e in a.events[:10])


def test_events_are_in_arrival_order_and_every_message_passes_the_contract(flush):
    arrivals = [e.arrival_ms for e in flush.events]
    assert arrivals == sorted(arrivals)
    rejected = Counter()
    for a, topic, payload in flush.events:
        v = validate_message(topic, payload, now=a)
        rejected.update(r.reason for r in v.rejected)
    assert not rejected
    assert max(len(p) for _, _, p in flush.events) <= MAX_PAYLOAD_BYTES == 64 * 1024
    assert flush.manifest.max_payload_bytes <= MAX_PAYLOAD_BYTES


def test_scenarios_are_listed_with_descriptions():
    assert scenario_names() == ["pit-cadence", "crane-nightly", "gateway-outage", "buffered-flush", "field-mix"]
    assert all(describe(n) for n in scenario_names())
    with pytest.raises(ValueError, match="unknown field scenario"):
        generate("nope", start_ms=T0)


# ------------------------------------------------------------------------------------------------ buffered flush
def test_overload_is_in_the_buffered_frames_with_the_stated_peak(flush):
    m = flush.manifest
    (ov,) = [h for h in m.hazards if h.kind == "crane.overload"]
    (out,) = m.outages
    assert ov.buffered and out.buffered and out.start_ms <= ov.start_ms < ov.end_ms < out.end_ms
    assert ov.end_ms - ov.start_ms >= 20_000 and ov.peak_value >= 11.5  # 115 % of 10 t for 30 s
    assert ov.levels_ms["red"] == ov.start_ms
    load = [(a, ts, v) for a, s, f, d, mt, ts, v in readings_of(flush) if d == ov.device and mt == "load"]
    window = [(a, ts, v) for a, ts, v in load if ov.start_ms <= ts <= ov.end_ms]
    assert window and all(a >= out.end_ms for a, _, _ in window), "only the flush after reconnect carries them"
    assert max(v for _, _, v in window) == pytest.approx(ov.peak_value, abs=1e-3)
    assert [ts for _, ts, v in window if v == pytest.approx(ov.peak_value, abs=1e-3)][0] == ov.peak_ts
    assert all(v >= 11.0 for _, ts, v in window)  # the whole window is above the red line
    assert ov.first_arrival_ms == out.flush_first_arrival_ms


def test_flush_is_reversed_disordered_inside_duplicated_and_interleaved_with_live_frames(flush):
    out = flush.manifest.outages[0]
    fr = frames(flush, out.gateway)
    after = [(a, items) for a, items in fr if a > out.end_ms]
    flush_frames = [(a, items) for a, items in after if a - min(r["ts"] for r in items) > 60_000]
    live = [(a, items) for a, items in after if a - min(r["ts"] for r in items) < 15_000]
    assert len(flush_frames) == out.flush_frames + out.duplicated_frames >= 3
    # reverse: each flush frame's newest reading is older than the previous frame's (the duplicate aside)
    firsts = [max(r["ts"] for r in items) for _, items in flush_frames]
    assert sum(b < a for a, b in zip(firsts, firsts[1:])) >= len(firsts) - 3
    # disorder inside frames
    assert sum(any(x["ts"] > y["ts"] for x, y in zip(items, items[1:])) for _, items in flush_frames) >= 2
    # one frame sent twice, byte for byte
    payloads = Counter(p for a, t, p in flush.events if t.endswith(f"{out.gateway}/readings") and a > out.end_ms)
    dups = [p for p, n in payloads.items() if n == 2]
    assert len(dups) == 1 and len(json.loads(dups[0])["readings"]) == out.duplicate_readings
    (ov,) = [h for h in flush.manifest.hazards if h.kind == "crane.overload"]
    assert any(r["ts"] == ov.peak_ts and r["metric"] == "load" for r in json.loads(dups[0])["readings"]), \
        "the duplicated frame is the one with the overload's peak"
    # live frames go on between the first and the last flush frame
    lo, hi = flush_frames[0][0], flush_frames[-1][0]
    assert any(lo < a < hi for a, _ in live)
    # nothing in the outage arrives before the reconnect, and statuses frame the outage
    inside = [a for a, items in fr if out.start_ms + 10_000 < a < out.end_ms]
    assert inside == []
    st = [(a, json.loads(p)) for a, t, p in flush.events if t.endswith(f"{out.gateway}/status")]
    assert [(a, s["online"]) for a, s in st] == [(out.will_arrival_ms, False), (out.online_arrival_ms, True)]
    assert st[0][1]["ts"] == out.will_ts <= out.start_ms


def test_pit_rate_breach_time_is_inside_the_outage_and_matches_the_readings(flush):
    m = flush.manifest
    (pr,) = [h for h in m.hazards if h.kind == "pit.rate"]
    out = m.outages[0]
    assert out.start_ms <= pr.levels_ms["yellow"] <= pr.levels_ms["red"] < out.end_ms
    rows = sorted({(ts, v) for a, s, f, d, mt, ts, v in readings_of(flush) if d == pr.device})
    ts = np.array([r[0] for r in rows], dtype=np.int64)
    v = np.array([r[1] for r in rows])
    rate = pit_rate_series(ts, v)
    first_red = int(ts[np.flatnonzero(rate >= 3.0)[0]])
    assert first_red == pr.levels_ms["red"]


def test_lateness_and_duplicate_counts_match_the_events(flush):
    m = flush.manifest
    items = readings_of(flush)
    assert m.delivered_readings == len(items)
    assert m.late_readings == sum(a - ts > m.late_after_ms for a, s, f, d, mt, ts, v in items)
    c = Counter((d, mt, ts) for a, s, f, d, mt, ts, v in items)
    assert m.duplicate_readings == sum(n - 1 for n in c.values()) > 0
    assert m.topology == {"fd-0001/gw-01": ["fd-0001/eb-01", "fd-0001/jc-01", "fd-0001/tc-01"]}
    assert m.gateway_of("fd-0001", "tc-01") == "gw-01" and m.silences == []


# ------------------------------------------------------------------------------------------------ other shapes
def test_gateway_outage_without_buffering_loses_the_readings_and_names_the_devices():
    fs = generate("gateway-outage", start_ms=T0, duration_ms=H, seed=2, crane_interval_s=5)
    m = fs.manifest
    (out,) = m.outages
    assert len(out.devices) == 30 == len(m.topology["fd-0001/gw-01"])
    assert {d.family for d in m.devices} == {"crane", "electrical", "battery", "formwork", "pit"}
    items = readings_of(fs)
    assert not [ts for a, s, f, d, mt, ts, v in items if out.start_ms + 5_000 < ts < out.end_ms - 5_000]
    assert out.lost_readings > 0 and m.readings == len(items) + out.lost_readings
    assert m.late_readings == 0 and m.silences == []
    status = [json.loads(p)["online"] for _, t, p in fs.events if t.endswith("/status")]
    assert status == [False, True]
    buffered = generate("gateway-outage", start_ms=T0, duration_ms=H, seed=2, crane_interval_s=5, buffered=True)
    assert buffered.manifest.outages[0].buffered_readings == out.lost_readings
    assert len(readings_of(buffered)) == m.readings


def test_crane_nightly_follows_the_calendar_and_announces_some_nights_only():
    fs = generate("crane-nightly", start_ms=T0, seed=4, interval_s=10)
    m = fs.manifest
    assert m.silences == []
    hours = Counter()
    for a, s, f, d, mt, ts, v in readings_of(fs):
        t = datetime.fromtimestamp(ts / 1000, SH)
        assert t.weekday() != 6, "Sunday is the rest day"
        hours[t.hour] += 1
    assert set(hours) <= set(range(7, 20)) and 8 in hours and 18 in hours
    ann = [w.announced for w in m.off_windows]
    assert True in ann and False in ann and len(ann) == 6  # Mon..Sat evenings (the 7th day is cut by the end)
    assert [w.reason for w in m.off_windows][-1] == "rest_day"
    offs = [(a, json.loads(p)) for a, t, p in fs.events if t == "sw/fd-0001/crane/tc-01/status"]
    off_msgs = [(a, b) for a, b in offs if not b["online"]]
    assert len(off_msgs) == sum(ann) and all(b["reason"] == "power_off" for _, b in off_msgs)
    assert [a for a, _ in off_msgs] == [w.status_arrival_ms for w in m.off_windows if w.announced]
    assert any(b["online"] for _, b in offs)
    for w in m.off_windows:  # the status comes after the last reading of the day
        if w.announced:
            assert w.status_arrival_ms > w.start_ms


def test_pit_cadence_densifies_near_the_alarm_value_and_relaxes_back():
    fs = generate("pit-cadence", start_ms=T0, seed=9, die_at_s=20 * 24 * 3600)
    m = fs.manifest
    rows = readings_of(fs)
    jc1 = np.array(sorted(ts for a, s, f, d, mt, ts, v in rows if d == "jc-01" and mt == "wall_top_horizontal"))
    gaps = np.diff(jc1) / 60_000
    changes = [c for c in m.cadence_changes if c.device == "jc-01"]
    assert [c.interval_s for c in changes] == [3600, 600, 3600]
    dense = (jc1[1:] > changes[1].at_ms + 60_000) & (jc1[1:] < changes[2].at_ms)
    assert np.median(gaps[dense]) == pytest.approx(10, abs=1) and np.median(gaps[~dense]) == pytest.approx(60, abs=1)
    vals = [v for a, s, f, d, mt, ts, v in rows if d == "jc-01" and mt == "wall_top_horizontal"]
    assert max(vals) < 0.7 * 30, "approaches the 30 mm alarm value but never reaches its yellow line"
    (died,) = m.silences
    assert died.device == "jc-04" and died.end_ms is None
    assert max(ts for a, s, f, d, mt, ts, v in rows if d == "jc-04") == died.start_ms
    cad = {d: np.diff(sorted({ts for a, s, f, dd, mt, ts, v in rows if dd == d})) for d in ("jc-02", "jc-05", "jc-06")}
    assert all(600_000 * 0.9 <= np.median(g) <= 2 * 3600_000 * 1.1 for g in cad.values())
    healthy = generate("pit-cadence", start_ms=T0, seed=9)
    assert healthy.manifest.silences == []


def test_field_mix_puts_everything_on_one_site(tmp_path):
    fs = generate("field-mix", start_ms=T0, seed=3, crane_interval_s=30, gw_crane_interval_s=30)
    m = fs.manifest
    assert m.sites == ["fd-0001"] and set(m.topology) == {"fd-0001/gw-01", "fd-0001/gw-02"}
    assert {h.kind for h in m.hazards} == {"crane.overload", "pit.rate"}
    assert [o.buffered for o in m.outages] == [False, True]
    assert m.off_windows and m.cadence_changes
    names = [d.device for d in m.devices]
    assert len(names) == len(set(names))
    path = tmp_path / "mix.jsonl"
    fs.write_capture(path)
    assert list(read_capture(path)) == fs.events
    back = json.loads((tmp_path / "mix.jsonl.manifest.json").read_text())
    assert back["hazards"][0]["kind"] == m.hazards[0].kind and isinstance(m, Manifest)


def test_demo_stream_shows_a_buffered_overload_and_a_gateway_outage_within_minutes():
    fs = demo_stream(T0)
    m = fs.manifest
    (ov,) = m.hazards
    gw1, gw2 = sorted(m.outages, key=lambda o: o.gateway)
    assert ov.buffered and gw2.flush_last_arrival_ms - T0 < 3 * 60_000
    assert not gw1.buffered and gw1.online_arrival_ms - T0 < 4 * 60_000 and len(gw1.devices) == 30
    assert gw2.flush_frames >= 3 and gw2.duplicated_frames == 1
    assert [c.arrival_ms for c in m.cues] == sorted(c.arrival_ms for c in m.cues) and len(m.cues) >= 4
