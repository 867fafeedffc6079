"""``bench detect`` and ``bench deadman``: the detector engine and the deadman index against baselines run on the
same data in the same process."""

from __future__ import annotations

import json
import statistics
import time

import click
import numpy as np

from sitewatch.contracts import FAMILIES



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


def periodic_batch(n: int, devices: int, seed: int = 1, jitter_ms: float = 500.0):
    """One minute of a fleet as it really reports: every device sends a frame of all its metrics at a fixed
    period (``devices`` × metrics × frames ≈ ``n``; the period divides the minute, so the next minute's batch
    continues the same schedule) with its own phase and a normal jitter on each frame's time; values are the
    simulator's per-metric levels (``ingest.simulator.SIGNALS``: well below the alarm lines) with their noise,
    and a rare excursion. Unlike ``synthetic_batch`` (random arrival times: most devices leave a gap of more
    than 3x their learned cadence every batch, i.e. an outage), devices here learn their cadence and stay
    covered: the steady state of a healthy fleet."""
    from detectors.model import ReadingBatch
    from ingest.simulator import SIGNALS

    rng = np.random.default_rng(seed)
    fams = list(FAMILIES)
    per_dev = np.array([len(FAMILIES[fams[i % len(fams)]]) for i in range(devices)])
    frames = max(1, round(n / per_dev.sum()))
    period = 60_000 // frames
    phase = rng.integers(0, period, devices)
    cols: dict[str, list] = {k: [] for k in ("site", "device", "family", "metric", "ts", "value")}
    for i in range(devices):
        fam = fams[i % len(fams)]
        ms = list(FAMILIES[fam])
        t = 1_790_000_000_000 + phase[i] + np.arange(frames) * period
        t = np.clip(t + np.rint(rng.normal(0, jitter_ms, frames)).astype(np.int64), t - period // 3,
                    t + period // 3)
        for m in ms:
            base, _, sd, _ = SIGNALS[fam][m]
            cols["value"].append(base + rng.normal(0, max(sd, 1e-3), frames))
            cols["ts"].append(t)
            cols["metric"] += [m] * frames
        cols["site"] += [f"s-{i // 100:03d}"] * (frames * len(ms))
        cols["device"] += [f"d-{i:05d}"] * (frames * len(ms))
        cols["family"] += [fam] * (frames * len(ms))
    ts = np.concatenate(cols["ts"])
    value = np.concatenate(cols["value"])
    value[rng.random(value.shape[0]) < 0.0005] *= 3.0  # a rare excursion so the alarm paths run too
    o = np.argsort(ts, kind="stable")  # arrival order: by time across the fleet
    return ReadingBatch.from_columns(np.array(cols["site"], dtype=object)[o], np.array(cols["device"], dtype=object)[o],
                                     np.array(cols["family"], dtype=object)[o], np.array(cols["metric"], dtype=object)[o],
                                     ts[o], value[o])


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


DETECT_RATE_GOAL = 1_000_000  # readings/s at 10k devices (issue 12)
DETECT_RATIO_GOAL = 10.0  # engine readings/s over the scalar reference's (issue 12)
STATE_GOAL_BYTES = 1024  # detector state per device (issue 12)


def _shifted(batch, k: int):
    """The same readings one minute later per ``k``: the next batch of a fleet that keeps reporting."""
    return type(batch)(batch.site, batch.device, batch.family, batch.metric, batch.ts + k * 60_000, batch.value)


def _detect_one(batch, repeat: int, ref_batches: int) -> dict[str, float]:
    """Engine (resident, as the worker runs it) and reference on the same batches, interleaved; wall and CPU time
    (the machine is shared: CPU time is the steadier of the two)."""
    from detectors import DetectorEngine, RuleSet
    from detectors.reference import PROVENANCE, ReferenceDetector

    n = len(batch)
    engine = DetectorEngine(RuleSet.default(), resident=True)
    ref = ReferenceDetector(RuleSet.default())
    states: dict[str, dict] = {}
    # warm-up (plans, first states) for both, then batches of the same readings a minute apart
    engine.process(batch, states)
    ref.process_batch(batch)
    t_engine, c_engine, t_ref, c_ref, same = [], [], [], [], True
    for i in range(max(repeat, ref_batches)):
        b = _shifted(batch, i + 1)
        t0, c0 = time.perf_counter(), time.process_time()
        got = engine.process(b, states)
        t_engine.append(time.perf_counter() - t0)
        c_engine.append(time.process_time() - c0)
        if i < ref_batches:
            t0, c0 = time.perf_counter(), time.process_time()
            want = ref.process_batch(b)
            t_ref.append(time.perf_counter() - t0)
            c_ref.append(time.process_time() - c0)

            def cmp(f):
                d = f.to_dict()
                d["evidence"] = {k: v for k, v in d["evidence"].items() if k not in PROVENANCE}
                return json.dumps(d, sort_keys=True)

            same = same and sorted(cmp(f) for f in got if f.category != "health") == sorted(map(cmp, want))
    eng, refr = n / statistics.median(t_engine), n / statistics.median(t_ref)
    eng_c, ref_c = n / statistics.median(c_engine), n / statistics.median(c_ref)
    return {"readings": n, "engine_rps": eng, "reference_rps": refr, "ratio": eng / refr, "engine_cpu_rps": eng_c,
            "reference_cpu_rps": ref_c, "ratio_cpu": eng_c / ref_c, "same_findings": same}


DATASETS = {
    "random": "random arrival times, fixed mean levels (most devices leave a >3x-cadence gap, i.e. an outage, "
              "every batch; ~4.7k findings per 100k readings: red formwork/leakage alarms re-asserting)",
    "periodic": "each device sends a frame of all its metrics every 30 s with 0.5 s jitter, simulator levels "
                "(a healthy fleet in steady state: cadence learned, no gaps, ~20 findings per batch)",
}


def bench_detect(n: int, devices: list[int] | int, repeat: int, echo=click.echo, ref_batches: int = 2,
                 memory_devices: int = 100_000) -> dict:
    """The numpy engine against the scalar reference detector (``detectors.reference``: the same rules and the
    same findings, one reading at a time in plain Python) on the same batches in the same run, per fleet size and
    for two kinds of data (``DATASETS``; ``sizes`` holds the random-arrival figures, ``periodic`` the others);
    then the detector state kept per device. A thresholds-only loop is printed for scale only: it does a
    fraction of the work (no faults, hold, rates, episodes) and is no baseline."""
    sizes = [devices] if isinstance(devices, int) else list(devices)
    out: dict = {"sizes": {}, "periodic": {}}
    echo(f"detect: batches of ~{n:,} readings (one minute of a fleet), one core; engine (resident, as in the "
         f"worker) median of {repeat} batches, reference median of {ref_batches}, state carried between batches")
    for kind, make, key in (("random", synthetic_batch, "sizes"), ("periodic", periodic_batch, "periodic")):
        echo(f"  data: {kind} — {DATASETS[kind]}")
        echo(f"  {'devices':>8} {'engine r/s':>12} {'reference r/s':>14} {'engine/ref':>11} "
             f"{'engine r/CPU-s':>15} {'ref r/CPU-s':>12} {'engine/ref CPU':>15} {'same findings':>14}")
        for d in sizes:
            r = _detect_one(make(n, d), repeat, ref_batches)
            out[key][d] = r
            echo(f"  {d:>8,} {r['engine_rps']:>12,.0f} {r['reference_rps']:>14,.0f} {r['ratio']:>10.1f}x "
                 f"{r['engine_cpu_rps']:>15,.0f} {r['reference_cpu_rps']:>12,.0f} {r['ratio_cpu']:>14.1f}x "
                 f"{'yes' if r['same_findings'] else 'NO':>14}")
    levels = {f"{f}.{m}": (base * 1.5, base * 2.0, base * 2.5) for f, base in
              {"crane": 5.0, "formwork": 2.0, "pit": 8.0, "electrical": 40.0, "battery": 30.0}.items()
              for m in FAMILIES[f]}
    batch = synthetic_batch(n, sizes[-1])
    t0 = time.perf_counter()
    python_loop_baseline(batch, levels)
    loop = n / (time.perf_counter() - t0)
    out["loop_rps"] = loop
    echo(f"  for scale only: a thresholds-only Python loop (no faults, hold, rates, episodes) {loop:,.0f} r/s")
    for kind, key in (("random", "sizes"), ("periodic", "periodic")):
        goal = out[key].get(10_000)
        if goal is None:
            echo(f"  goals ({kind}, at 10,000 devices): not measured — include 10000 in --devices")
            continue
        echo(f"  goal engine >= {DETECT_RATIO_GOAL:.0f}x the reference at 10,000 devices ({kind}): "
             f"{'met' if goal['ratio'] >= DETECT_RATIO_GOAL else 'NOT met'} ({goal['ratio']:.1f}x wall, "
             f"{goal['ratio_cpu']:.1f}x CPU)")
        echo(f"  goal engine >= {DETECT_RATE_GOAL:,} readings/s at 10,000 devices ({kind}): "
             f"{'met' if goal['engine_rps'] >= DETECT_RATE_GOAL else 'NOT met'} ({goal['engine_rps']:,.0f} wall, "
             f"{goal['engine_cpu_rps']:,.0f} per CPU-second)")
    if memory_devices:
        out["memory"] = bench_state_memory(memory_devices, echo=echo)
    return out


def bench_state_memory(devices: int, batches: int = 2, echo=click.echo) -> dict[str, float]:
    """What the worker keeps per device, measured: the JSON of each device's state (the Faust table's value, what
    the changelog and RocksDB hold) and the Python heap the states and the engine's per-device caches take in the
    worker process (tracemalloc: the growth from before the first batch to after the last; the resident engine's
    store included: series arrays and the pools of check states, gaps, covered time, kind states and outage
    records)."""
    import gc
    import tracemalloc

    from detectors import DetectorEngine, RuleSet

    engine = DetectorEngine(RuleSet.default(), resident=True)  # as the worker runs it
    states: dict[str, dict] = {}
    batch = synthetic_batch(devices * 3, devices, seed=2)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(batches):
        engine.process(_shifted(batch, i), states)
    gc.collect()
    heap = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    per_book = _bookkeeping_heap(states) / len(states)
    js = [len(json.dumps(engine.export_state(k, v), separators=(",", ":"), allow_nan=False))
          for k, v in states.items()]
    per_json = sum(js) / len(js)
    per_heap = heap / len(states)
    echo(f"state per device at {len(states):,} devices after {batches} batches of {devices * 3:,} readings: "
         f"JSON {per_json:,.0f} bytes (p99 {sorted(js)[int(0.99 * (len(js) - 1))]:,}), in-process heap "
         f"{per_heap:,.0f} bytes (states as Python objects + engine plans); goal <= {STATE_GOAL_BYTES} bytes: "
         f"JSON {'met' if per_json <= STATE_GOAL_BYTES else 'NOT met'}, heap "
         f"{'met' if per_heap <= STATE_GOAL_BYTES else 'NOT met'}")
    echo(f"  beside it, the detect stage's bookkeeping (deadline index, checkpoint clock): {per_book:,.0f} bytes "
         f"per device, not detector state and not in the goal's figure")
    return {"state_json_bytes": per_json, "state_heap_bytes": per_heap, "bookkeeping_heap_bytes": per_book,
            "devices": len(states)}


def _bookkeeping_heap(states: dict) -> int:
    """Heap of what ``streams.detect.Detection`` keeps per device beside the states: the deadman's
    ``DeadlineIndex`` (fed each state's ``next_due``, as ``_keep`` does) and the per-device checkpoint times."""
    import gc
    import tracemalloc

    from detectors import DetectorEngine
    from detectors.deadman import DeadlineIndex

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    due, saved_at, now = DeadlineIndex(), {}, time.monotonic()
    for k, v in states.items():
        due.update(k, DetectorEngine.next_due(v))
        saved_at[k] = now - (hash(k) & 1023) / 2048
    heap = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return heap


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
