"""``bench detect`` and ``bench deadman``: the detector engine and the deadman index against baselines run on the
same data in the same process."""

from __future__ import annotations

import json
import statistics
import time

import click
import numpy as np

from sitewatch.contracts import FAMILIES

DETECT_TARGET = 200_000  # readings/s on one core (issue 4)


# ---------------------------------------------------------------------------------------------- detect
def synthetic_batch(n: int, devices: int, seed: int = 1):
    """``n`` readings spread over ``devices`` devices of all five families, values mostly below alarm lines."""
    from detectors.model import ReadingBatch

    rng = np.random.default_rng(seed)
    fams = list(FAMILIES)
    dev_family = np.array([fams[i % len(fams)] for i in range(devices)], dtype=object)
    dev_names = np.array([f"d-{i:05d}" for i in range(devices)], dtype=object)
    dev_sites = np.array([f"s-{i // 100:03d}" for i in range(devices)], dtype=object)
    dev_idx = rng.integers(0, devices, n)
    metric = np.empty(n, dtype=object)
    base = {"crane": 5.0, "formwork": 2.0, "pit": 8.0, "electrical": 40.0, "battery": 30.0}
    value = np.empty(n)
    for fam in fams:
        rows = np.flatnonzero(dev_family[dev_idx] == fam)
        names = np.array(list(FAMILIES[fam]), dtype=object)
        metric[rows] = names[rng.integers(0, len(names), len(rows))]
        value[rows] = base[fam] + rng.normal(0, base[fam] * 0.05, len(rows))
    value[rng.random(n) < 0.001] *= 3.0  # a few excursions so the alarm paths run too
    ts = 1_790_000_000_000 + np.sort(rng.integers(0, 60_000, n))
    return ReadingBatch.from_columns(dev_sites[dev_idx], dev_names[dev_idx], dev_family[dev_idx], metric, ts, value)


def python_loop_baseline(batch, rules_levels: dict[str, tuple[float, float, float]]) -> int:
    """The obvious implementation: one Python call per reading, a dict of state per device/metric.

    Same job as the engine's threshold path (look up the rule, grade the value, compare with the previous
    level, emit on change); it is what the numpy engine has to beat."""
    state: dict[tuple[str, str, str], int] = {}
    emitted = 0
    for site, device, family, metric, ts, value in zip(
        batch.site.tolist(), batch.device.tolist(), batch.family.tolist(), batch.metric.tolist(),
        batch.ts.tolist(), batch.value.tolist(),
    ):
        y, o, r = rules_levels.get(f"{family}.{metric}", (float("inf"),) * 3)
        level = 3 if value >= r else 2 if value >= o else 1 if value >= y else 0
        key = (site, device, metric)
        if state.get(key, 0) != level:
            state[key] = level
            emitted += 1
    return emitted


def _rows(batch, start: int, stop: int):
    return type(batch)(batch.site[start:stop], batch.device[start:stop], batch.family[start:stop],
                       batch.metric[start:stop], batch.ts[start:stop], batch.value[start:stop])


def bench_detect(n: int, devices: int, repeat: int, echo=click.echo) -> dict[str, float]:
    """Batches vs the same engine called once per reading (same rules, same findings), plus, for scale, a
    thresholds-only Python loop that does far less work than either."""
    from detectors import DetectorEngine, RuleSet

    batch = synthetic_batch(n, devices)
    engine = DetectorEngine(RuleSet.default())
    levels = {f"{f}.{m}": (base * 1.5, base * 2.0, base * 2.5) for f, base in
              {"crane": 5.0, "formwork": 2.0, "pit": 8.0, "electrical": 40.0, "battery": 30.0}.items()
              for m in FAMILIES[f]}
    # Warm up, and keep state across runs the way a worker does.
    states: dict[str, dict] = {}
    engine.process(batch, states)
    t_engine = []
    for i in range(repeat):
        shifted = type(batch)(batch.site, batch.device, batch.family, batch.metric,
                              batch.ts + (i + 1) * 60_000, batch.value)
        t0 = time.perf_counter()
        engine.process(shifted, states)
        t_engine.append(time.perf_counter() - t0)
    eng = n / statistics.median(t_engine)

    # Same engine, same readings, one call per reading (a sample: it is slow), and the same findings.
    k = min(n, 3_000)
    sample = _rows(batch, 0, k)
    per_states: dict[str, dict] = {}
    t0 = time.perf_counter()
    per_found = sum(len(engine.process(_rows(sample, i, i + 1), per_states)) for i in range(k))
    per_reading = k / (time.perf_counter() - t0)
    batch_found = len(DetectorEngine(RuleSet.default()).process(sample, {}))

    t_loop = []
    for _ in range(max(1, repeat // 2)):
        t0 = time.perf_counter()
        python_loop_baseline(batch, levels)
        t_loop.append(time.perf_counter() - t0)
    loop = n / statistics.median(t_loop)
    echo(f"detect: {n:,} readings over {devices:,} devices, one core, median of {repeat} batches")
    echo(f"  numpy engine, batches (all rules, faults, hysteresis)  {eng:12,.0f} readings/s")
    echo(f"  same engine, one reading per call (baseline)           {per_reading:12,.0f} readings/s   "
         f"(findings on {k:,} readings: {per_found} per-reading vs {batch_found} batched)")
    echo(f"  thresholds-only Python loop (does far less; for scale) {loop:12,.0f} readings/s")
    echo(f"  batching speed-up ×{eng / per_reading:.0f}; target ≥ {DETECT_TARGET:,}/s: "
         f"{'met' if eng >= DETECT_TARGET else 'NOT met'}")
    return {"engine_rps": eng, "per_reading_rps": per_reading, "loop_rps": loop}


# ---------------------------------------------------------------------------------------------- deadman
def bench_deadman(devices: int, silent: int, repeat: int, echo=click.echo) -> dict[str, float]:
    """Cost of one deadman tick over a fleet: the deadline index (what the worker does) against walking every
    device's state (what it did before), on the same states, with ``silent`` devices due at the tick."""
    from detectors import DetectorEngine, RuleSet
    from detectors.deadman import DeadlineIndex

    engine = DetectorEngine(RuleSet.default())
    t0 = 1_800_000_000_000
    n_rows = devices * 2
    dev = np.repeat(np.arange(devices), 2)
    batch = type(synthetic_batch(1, 1))(
        np.full(n_rows, "b-0001", dtype=object), np.array([f"pt-{d:06d}" for d in dev], dtype=object),
        np.full(n_rows, "pit", dtype=object), np.full(n_rows, "wall_top_horizontal", dtype=object),
        t0 + np.tile([0, 600_000], devices) - np.where(dev < silent, 30 * 3_600_000, 0), 5.0 + 0.01 * (dev % 7))
    base: dict[str, dict] = {}
    engine.process(batch, base)
    now = t0 + 601_000
    per_state = len(json.dumps(base, separators=(",", ":"))) / devices
    walk, indexed, found = [], [], (0, 0)
    for _ in range(repeat):
        states = dict(base)
        t = time.perf_counter()
        a = engine.tick(now, states)
        walk.append(time.perf_counter() - t)
        states = dict(base)
        idx = DeadlineIndex()
        for k, v in states.items():
            idx.update(k, DetectorEngine.next_due(v))
        t = time.perf_counter()
        keys = idx.pop_due(now)
        b = engine.tick(now, states, keys=keys)
        indexed.append(time.perf_counter() - t)
        found = (sum(f.kind == "fault.silent" for f in a), sum(f.kind == "fault.silent" for f in b))
    w, i = statistics.median(walk), statistics.median(indexed)
    echo(f"deadman tick: {devices:,} devices, {silent:,} of them silent at the tick, median of {repeat}")
    echo(f"  deadline index (the worker)          {i * 1000:10.2f} ms per tick   ({found[1]} silent faults)")
    echo(f"  walk over every device (baseline)    {w * 1000:10.2f} ms per tick   ({found[0]} silent faults)")
    echo(f"  index ×{w / i:.0f} cheaper; device state ≈ {per_state:.0f} bytes of JSON per device")
    return {"index_ms": i * 1000, "walk_ms": w * 1000, "state_bytes": per_state}
