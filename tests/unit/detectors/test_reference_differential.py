"""The batched engine against the scalar reference (``detectors.reference``), on random multi-family streams.

The reference is plain Python, one reading at a time, written from the rules' documented semantics; the engine is
numpy over batches. On any stream, cut into any batches, they must find the same hazards and faults. Compared:
every field of every finding and its evidence except ``reference.PROVENANCE`` (where an explaining quantity came
from), and except ``device.health`` (reported at batch ends, so batch-granular by design). Streams are built
around the alarm lines (ties on the lines, the hysteresis band, jumps that look like spikes, repeated values that
become flatlines) so that the rules actually fire.
"""

from __future__ import annotations

import json
import math
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors import DetectorEngine, ReadingBatch, RuleSet
from detectors.plan import CHECKS, build_plan
from detectors.reference import PROVENANCE, ReferenceDetector
from sitewatch.contracts import FAMILIES

T0 = 1_700_000_000_000  # 22:13:20 UTC: the charging window below closes two minutes in

RULES = """
reassert: 20s
faults: {clear_after_good: 3}
families: {}
---
site: s-a
calendar: {timezone: UTC, charging_hours: ["22:00-22:15"]}
charging_points: [b-1]
family_overrides:
  crane:
    rated_load_t: 8
    sensors: {load: {range: [-1, 30], spike_step: 6, flatline_after: 8s}}
  pit:
    rate_window: 40s
    rate_per: min
    rate_consecutive: 2
    sensors:
      wall_top_horizontal: {range: [-80, 80], spike_step: 25, flatline_after: 10s}
      groundwater_level: {range: [-5, 5], spike_step: 1.5, flatline_after: 10s, flatline_eps: 0.05}
  formwork: {rate_window: 20s, rate: {hold_count: 2}}
  electrical:
    overcurrent: {hold: 2s}
    leakage: {hold: 3s}
    imbalance: {hold: 4s}
    terminal_temp: {hold_count: 2}
  battery: {temp_rise: {window: 20s, hold_count: 2}, temp: {hold_count: 1}}
devices:
  c-2: {family: crane, rated_load_t: 5, hold_count: 2, hold: 2s}
  p-2: {family: pit, metrics: {wall_top_horizontal: {alarm: 10, rate: 6, direction: increase, baseline: first}}}
---
site: s-b
family_overrides:
  electrical: {breaker_rating_a: 50}
  battery: {sensors: {pack_temp: {range: [-20, 120], flatline_after: 5s, flatline_eps: 0.5}}}
"""
DEVICES = [("s-a", "c-1", "crane"), ("s-a", "c-2", "crane"), ("s-a", "p-1", "pit"), ("s-a", "p-2", "pit"),
           ("s-a", "f-1", "formwork"), ("s-a", "e-1", "electrical"), ("s-a", "b-1", "battery"),
           ("s-a", "b-2", "battery"), ("s-b", "e-1", "electrical"), ("s-b", "b-3", "battery"),
           ("s-b", "f-2", "formwork")]
# multiples of a metric's highest line: on, just below and above the lines and their clear lines, far off
FRACS = [0.0, 0.1, 0.5, 0.66, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.99, 1.0, 1.02, 1.1, 1.25, 2.0, 4.0, -0.7]
GAPS_MS = [1, 1, 7, 400, 1000, 1000, 2500, 6000, 10_000, 20_000, 70_000]


def rules() -> RuleSet:
    return RuleSet.from_yaml_text(RULES, "differential.yaml")


def _scales() -> dict[tuple[str, str, str], float]:
    """Per device and metric: the highest finite line of its level / change checks (the rated value)."""
    rs = rules()
    out = {}
    for site, device, fam in DEVICES:
        plan = build_plan(rs, site, device, fam)
        for m in FAMILIES[fam]:
            lines = [x for ci, p in plan.checks.items() if CHECKS[ci].metric == m and CHECKS[ci].mode != "rate"
                     for x in p.lines if not math.isnan(x)]
            out[(site, device, m)] = max(lines) if lines else 10.0
    out[("s-a", "b-1", "charge_current")] = out[("s-a", "b-2", "charge_current")] = 1.0
    out[("s-b", "b-3", "charge_current")] = 1.0
    return out


SCALES = _scales()

# one event: device, metric (index, wrapped to the family), time step, value (a multiple of the line), and what
# happens on the way: 0..5 plain, 6 the same value as last time (flatline), 7 redelivered right after, 8 the same
# key again with another value
event = st.tuples(st.integers(0, len(DEVICES) - 1), st.integers(0, 5), st.sampled_from(GAPS_MS),
                  st.sampled_from(FRACS), st.integers(0, 8))
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def build(events: list[tuple]) -> list[tuple]:
    """An in-order stream: per device, measurement times only move forward (phase currents close together)."""
    clock = {d: T0 for d in range(len(DEVICES))}
    last_v: dict = {}
    out: list[tuple] = []
    for d, mi, gap, frac, what in events:
        site, device, fam = DEVICES[d]
        ms = list(FAMILIES[fam])
        m = ms[mi % len(ms)]
        clock[d] += gap
        v = round(SCALES[(site, device, m)] * frac, 3)
        if what == 6 and (d, m) in last_v:
            v = last_v[(d, m)]
        last_v[(d, m)] = v
        r = (site, device, fam, m, clock[d], v)
        out.append(r)
        if what == 7:
            out.append(r)
        elif what == 8:
            out.append((site, device, fam, m, clock[d], v + 1.0))
    return out


def batches(rs: list[tuple], cuts: list[int]) -> list[list[tuple]]:
    out, i, k = [], 0, 0
    while i < len(rs):
        out.append(rs[i:i + cuts[k % len(cuts)]])
        i += cuts[k % len(cuts)]
        k += 1
    return out


def compared(f) -> str:
    d = f.to_dict()
    d["evidence"] = {k: v for k, v in d["evidence"].items() if k not in PROVENANCE}
    return json.dumps(d, sort_keys=True)


def run_engine(parts: list[list[tuple]]) -> tuple[list, DetectorEngine]:
    eng = DetectorEngine(rules())
    states: dict = {}
    out = []
    for part in parts:
        out += [f for f in eng.process(ReadingBatch.from_columns(*zip(*part)), states) if f.category != "health"]
        states.update(json.loads(json.dumps(states, allow_nan=False)))  # the Faust table keeps JSON
    return out, eng


@SETTINGS
@given(events=st.lists(event, min_size=1, max_size=400), cuts=st.lists(st.integers(1, 120), min_size=1, max_size=5))
def test_engine_batches_find_what_the_reference_finds_one_reading_at_a_time(events, cuts):
    rs = build(events)
    got, _ = run_engine(batches(rs, cuts))
    ref = ReferenceDetector(rules())
    want = [f for r in rs for f in ref.feed(*r)]
    assert sorted(map(compared, got)) == sorted(map(compared, want))


@SETTINGS
@given(events=st.lists(event, min_size=1, max_size=400), cuts=st.lists(st.integers(1, 120), min_size=1, max_size=5),
       delays=st.lists(st.integers(0, 60), min_size=1, max_size=30), seed=st.integers(0, 2**16))
def test_out_of_order_and_late_readings(events, cuts, delays, seed):
    """Readings held up on the way (arriving up to 60 readings later) and batches in any order inside: the live
    findings are the reference's on the same batches, where what is older than its series' newest is set aside;
    whatever the engine's late lane makes of the set-aside readings is marked late and dated at one of them."""
    rs = build(events)
    rng = random.Random(seed)
    arrival = sorted(range(len(rs)), key=lambda i: i + (delays[i % len(delays)] if rng.random() < 0.2 else 0))
    parts = batches([rs[i] for i in arrival], cuts)
    for p in parts:
        rng.shuffle(p)
    got, eng = run_engine(parts)
    ref = ReferenceDetector(rules())
    want = [f for p in parts for f in ref.process(p)]
    live = [f for f in got if not f.evidence.get("late")]
    assert sorted(map(compared, live)) == sorted(map(compared, want))
    set_aside = {(s, d, t) for s, d, _, _, t, _ in ref.late}
    assert all((f.site, f.device, f.ts) in set_aside or f.evidence["cleared_by"].get("by")
               for f in got if f.evidence.get("late"))
