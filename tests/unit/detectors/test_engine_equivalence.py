"""The batched engine against itself fed one reading at a time, on random multi-family streams.

Per-reading calls are the reference: every vectorised shortcut (shared plans and parameter tables, columnar series
state, the live-(device, kind) filter, per-batch coding of devices and metrics) must give exactly the findings that
a call per reading gives, whatever the batch boundaries, with duplicate, non-finite and foreign readings, spikes,
flatlines, site and device overrides. (A reading older than one already seen *in an earlier batch* is dropped, so
out-of-order streams are only compared where the late readings cannot take effect: see the late-reading test.)
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from detectors import DetectorEngine, ReadingBatch, RuleSet
from detectors.engine import STATE_VERSION
from detectors.families.electrical import PHASES
from sitewatch.contracts import FAMILIES

from .helpers import key

RULES = """
site: s-01
family_overrides:
  crane: {rated_load_t: 8}
devices:
  d-07: {family: pit, metrics: {wall_top_horizontal: {alarm: 5, rate: 1}}}
  d-10: {family: crane, rated_load_t: 5, hold_count: 2}
---
site: s-00
family_overrides:
  pit:
    sensors:
      wall_top_horizontal: {spike_step: 4, range: [-40, 40], flatline_after: 20s}
      strut_force: {spike_step: 4, flatline_after: 30s, flatline_eps: 0.5}
  electrical:
    sensors: {current_a: {range: [0, 100], spike_step: 30}, leakage: {range: [0, 120], flatline_after: 60s}}
  battery:
    sensors: {pack_temp: {range: [-20, 90], flatline_after: 30s, flatline_eps: 1}}
"""
BASE = {"crane": 5.0, "formwork": 2.0, "pit": 8.0, "electrical": 40.0, "battery": 30.0}


def stream(seed: int, n: int, n_dev: int = 14, junk: bool = True) -> list[tuple]:
    rng = np.random.default_rng(seed)
    fams = list(FAMILIES)
    devs = [(f"s-0{i % 3}", f"d-{i:02d}", fams[i % len(fams)]) for i in range(n_dev)]
    devs.append(("s-02", "d-00", "electrical"))  # the same device name at another site is another device
    out: list[tuple] = []
    t = 1_700_000_000_000
    for i in range(n):
        s, d, f = devs[rng.integers(len(devs))]
        ms = list(FAMILIES[f])
        m = ms[rng.integers(len(ms))]
        # no two readings share a ts: a tie between slots of one kind is broken by slot, not by arrival
        t += int(rng.integers(1, 4000))
        v = BASE[f] * (1 + 0.4 * np.sin(i / 150)) + rng.normal(0, BASE[f] * 0.05)
        r = rng.random()
        if r < 0.03:
            v *= 4  # spikes, out of range
        elif not junk:
            pass
        elif r < 0.035:
            v = float("nan")
        elif r < 0.04:
            m = "bogus"
        elif r < 0.045:
            f = "nofamily"
        if rng.random() < 0.05 and v == v:
            v = round(v)  # repeated values: flatlines
        if junk and out and rng.random() < 0.08:
            out.append(out[-1])  # redelivery
            continue
        if f == "electrical" and m in PHASES and v == v:
            # a power monitor measures its three phases together (1 ms apart here: no two readings share a ts);
            # phase c sags now and then: three-phase imbalance
            sag = 1 - 0.7 * max(0.0, np.sin(i / 120))
            for k, (ph, factor) in enumerate(zip(PHASES, (1.0, 0.95, sag))):
                out.append((s, d, f, ph, t + k, float(v * factor)))
            t += 2
            continue
        out.append((s, d, f, m, t, float(v)))
    return out


def feed(eng: DetectorEngine, rs: list[tuple], chunks: list[int], states: dict | None = None,
         tick_every: int = 5) -> tuple[list, dict]:
    states = {} if states is None else states
    found: list = []
    i = k = 0
    while i < len(rs):
        part = rs[i:i + chunks[k % len(chunks)]]
        # device.health findings report the state at the end of each batch (ok / faulty / off / silent), so
        # their number follows the batch boundaries by design; detections must not
        found += [f for f in eng.process(ReadingBatch.from_columns(*zip(*part)), states) if f.category != "health"]
        states.update(json.loads(json.dumps(states, allow_nan=False)))
        if k % tick_every == tick_every - 1:
            found += [f for f in eng.tick(max(r[4] for r in part) + 45_000, states) if f.category != "health"]
        i += len(part)
        k += 1
    return found, states


# Where the reading that explains a finding comes from is not part of what is detected: a re-assert or a change
# explained by a slot with no reading in the current batch takes that slot's remembered quantity instead of the
# reading's own value, baseline and time. Fed per reading, that happens more often than fed in one batch.
_PROVENANCE = ("value", "reading_ts", "baseline", "window_ref", "phases_a")


def core(f) -> tuple:
    d = f.to_dict()
    d["evidence"] = {k: v for k, v in d["evidence"].items() if k not in _PROVENANCE}
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in d.items()))


def rules() -> RuleSet:
    return RuleSet.from_yaml_text(RULES, "test.yaml")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_findings_equal_per_reading_findings(seed):
    rs = stream(seed, 700)
    per_reading, _ = feed(DetectorEngine(rules()), rs, [1], tick_every=10 ** 9)
    one_batch, _ = feed(DetectorEngine(rules()), rs, [len(rs)], tick_every=10 ** 9)
    assert len(per_reading) > 20
    assert {f.kind.split(".")[0] for f in per_reading} >= {"crane", "pit", "formwork", "electrical"}
    assert [core(f) for f in one_batch] == [core(f) for f in per_reading]


@pytest.mark.parametrize("seed,chunks", [(3, [37]), (4, [5, 120, 1, 60]), (5, [250])])
def test_findings_do_not_depend_on_batch_boundaries(seed, chunks):
    rs = stream(seed, 2500)
    whole, _ = feed(DetectorEngine(rules()), rs, [len(rs)], tick_every=10 ** 9)
    split, _ = feed(DetectorEngine(rules()), rs, chunks, tick_every=10 ** 9)
    assert {"fault.out_of_range", "fault.spike", "fault.flatline", "electrical.imbalance"} <= {
        f.kind for f in whole}
    assert [core(f) for f in split] == [core(f) for f in whole]


def test_late_readings_never_change_what_the_live_readings_decide():
    rng = np.random.default_rng(9)
    late = [(s, d, f, m, t - int(rng.integers(0, 900_000)) if rng.random() < 0.1 else t, v)
            for s, d, f, m, t, v in stream(9, 800, junk=False)]
    newest: dict[tuple, int] = {}
    in_time = []  # the live lane, written out: a reading not newer than the newest one of its series is set aside
    for r in late:
        k = (r[0], r[1], r[3])
        if r[4] > newest.get(k, -1):
            newest[k] = r[4]
            in_time.append(r)
    assert len(in_time) < len(late) - 20
    ref, _ = feed(DetectorEngine(rules()), in_time, [1], tick_every=10 ** 9)
    got, _ = feed(DetectorEngine(rules()), late, [1], tick_every=10 ** 9)
    live = [f for f in got if not f.evidence.get("late")]
    assert len(ref) > 20 and [key(f) for f in live] == [key(f) for f in ref]
    # what was set aside is judged on the late lane: back-dated findings, each marked with its arrival delay
    assert all(f.evidence["arrival_delay_s"] >= 0 and "outage" in f.evidence for f in got if f.evidence.get("late"))


def test_clock_ticks_between_batches_find_silent_devices_and_they_come_back():
    rs = stream(10, 2500)
    found, _ = feed(DetectorEngine(rules()), rs, [40], tick_every=3)
    silent = [f for f in found if f.kind == "fault.silent"]
    assert any(f.level for f in silent) and any(not f.level for f in silent)


def _to_v1(st: dict) -> dict:
    """The previous layout of a device state: ``m = {metric: [t, p1, p2, p1_ts, ..., baseline]}``."""
    if st.get("gw"):
        return dict(st, v=1)
    ints, flts = st["m"]
    m = {}
    for i, metric in enumerate(FAMILIES[st["fam"]]):
        si, sf = ints[10 * i:10 * i + 10], flts[3 * i:3 * i + 3]
        if si[0] != np.iinfo(np.int64).min:
            m[metric] = [si[0], sf[0], sf[1], *si[1:], sf[2]]
    return dict(st, v=1, m=m)


def test_version_1_state_is_read_and_upgraded():
    rs = stream(6, 2000)
    half = len(rs) // 2
    _, st = feed(DetectorEngine(rules()), rs[:half], [100])
    cont, st_new = feed(DetectorEngine(rules()), rs[half:], [100], copy.deepcopy(st))
    upgraded, st_up = feed(DetectorEngine(rules()), rs[half:], [100], {k: _to_v1(v) for k, v in st.items()})
    assert [key(f) for f in upgraded] == [key(f) for f in cont]
    assert st_up == st_new
    assert {v["v"] for v in st_up.values()} == {STATE_VERSION}


def test_process_and_tick_never_mutate_a_stored_state_and_tick_replaces_what_it_changes():
    rs = stream(7, 600)
    eng = DetectorEngine(rules())
    _, states = feed(eng, rs, [100], tick_every=10 ** 9)
    frozen = copy.deepcopy(states)
    before = dict(states)
    last = max(r[4] for r in rs)
    eng.process(ReadingBatch.from_columns(*zip(*stream(8, 300))), dict(states))
    assert states == frozen and all(states[k] is before[k] for k in states)
    found = eng.tick(last + 10_000, states)  # some devices are silent by now, others not
    changed = {k for k in states if states[k] is not before[k]}
    assert found and changed == {f.key for f in found}
    assert all(before[k] == frozen[k] for k in before)


def test_devices_sharing_rules_share_a_plan_row_but_keep_their_names():
    eng = DetectorEngine(rules())
    rs = [("s-01", d, "crane", "load", 1_700_000_000_000 + 1000 * i, 7.9) for i in range(2) for d in ("a", "b", "d-10")]
    found = eng.process(ReadingBatch.from_columns(*zip(*rs)), {})
    # rated 8 t at the site: 7.9 t is above 90 %, yellow; d-10 is rated 5 t with a hold of two readings: red
    assert [(f.device, f.level.name) for f in found] == [("a", "YELLOW"), ("b", "YELLOW"), ("d-10", "RED")]
    (pa, ra), (pb, rb), (pc, rc) = (eng._plan("s-01", d, "crane") for d in ("a", "b", "d-10"))
    assert ra == rb != rc and (pa.device, pb.device) == ("a", "b")
