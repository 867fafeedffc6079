"""``sitewatch bench``: throughput and latency, measured against a baseline taken in the same run.

- ``bench detect``: the numpy detector engine vs a plain per-reading Python loop over the same readings.
- ``bench pipeline``: the real pipeline (mosquitto → bridge → Tansu → Faust worker) fed gateway frames vs
  one MQTT message per reading, then publish → webhook latency of crane overloads.

Numbers are printed, not asserted: speed targets live here, not in timed unit tests.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from sitewatch.contracts import FAMILIES, TOPIC_RAW, TOPIC_READINGS, gateway_topic, reading_topic

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


# ---------------------------------------------------------------------------------------------- pipeline
class GroupLag:
    """Unprocessed records of a consumer group: end offsets minus committed offsets, summed."""

    def __init__(self, bootstrap: str, group: str, topics: tuple[str, ...]):
        from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

        self.group = group
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        self.tps = [TopicPartition(t, p) for t in topics for p in (self.consumer.partitions_for_topic(t) or ())]

    def __call__(self) -> int:
        committed = self.admin.list_group_offsets(self.group).get(self.group, {})
        ends = self.consumer.end_offsets(self.tps)
        lag = 0
        for tp in self.tps:
            c = committed.get(tp)
            lag += ends[tp] - (c.offset if c is not None and c.offset >= 0 else 0)
        return lag

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()


def _publish_flood(port: int, frames: list[tuple[str, bytes]]) -> float:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{time.time_ns()}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    t0 = time.perf_counter()
    info = None
    for topic, payload in frames:
        info = client.publish(topic, payload, qos=1)
    if info is not None:
        info.wait_for_publish(300)
    dt = time.perf_counter() - t0
    client.loop_stop()
    client.disconnect()
    return dt


# The flood's devices stop publishing when the flood ends, which the deadman rightly reports as thousands of
# silent sensors; that fault storm is not what this benchmark measures, so its worker runs with it off.
BENCH_RULES = "version: 1\nfaults:\n  silent_after_intervals: 1000000\n"


def _frames(readings: int, per_frame: int, sites: int, single: bool) -> list[tuple[str, bytes]]:
    now = int(time.time() * 1000) - readings  # 1 ms apart, ending now: never "in the future" (that is a DLQ case)
    fams = list(FAMILIES)
    frames: list[tuple[str, bytes]] = []
    items = []
    for i in range(readings):
        fam = fams[i % len(fams)]
        metric = list(FAMILIES[fam])[0]
        site = f"b-{(i // per_frame) % sites:03d}"
        dev = f"{fam[:2]}-{i % 97:02d}"
        item = {"family": fam, "device": dev, "metric": metric, "ts": now + i, "value": 1.0,
                "unit": FAMILIES[fam][metric]}
        if single:
            frames.append((reading_topic(site, fam, dev, metric),
                           json.dumps({"ts": item["ts"], "value": 1.0, "unit": item["unit"]}).encode()))
        else:
            items.append(item)
            if len(items) == per_frame:
                frames.append((gateway_topic(site, "gw-01"), json.dumps({"readings": items}).encode()))
                items = []
    if items:
        frames.append((gateway_topic(f"b-{sites - 1:03d}", "gw-01"), json.dumps({"readings": items}).encode()))
    return frames


def _through_pipeline(stack, group: str, frames, readings: int, label: str, echo) -> float:
    lag = GroupLag(stack.bootstrap, group, (TOPIC_RAW, TOPIC_READINGS))
    t0 = time.perf_counter()
    pub_s = _publish_flood(stack.mqtt_port, frames)
    deadline = time.monotonic() + 600
    last_echo = time.monotonic()
    while (remaining := lag()) > 0:
        if time.monotonic() > deadline:
            raise click.ClickException(f"pipeline still {remaining} records behind after 600 s")
        if time.monotonic() - last_echo > 5:
            echo(f"    … {remaining} records still to process")
            last_echo = time.monotonic()
        time.sleep(0.25)
    total = time.perf_counter() - t0
    lag.close()
    rps = readings / total
    echo(f"  {label:38} {rps:10,.0f} readings/s  ({readings:,} readings in {len(frames):,} MQTT messages, "
         f"published in {pub_s:.1f} s, fully processed in {total:.1f} s)")
    return rps


def bench_pipeline(readings: int, echo=click.echo) -> dict[str, float]:
    from sitewatch.localstack import LocalStack, ManagedProcess, free_port, sitewatch_argv
    from sitewatch.webhook_receiver import WebhookReceiver

    import signal

    def _interrupt(signum, frame):  # SIGTERM too must run the finally below: the children live in own sessions
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="sitewatch-bench-"))
    stack = LocalStack(tmp, free_port(), free_port()).start()
    receiver = WebhookReceiver().start()
    group = "sitewatch-bench-worker"
    rules = tmp / "bench-rules.yaml"
    rules.write_text(BENCH_RULES)
    env = {"SW_DATA_DIR": str(tmp), "SW_MQTT_PORT": str(stack.mqtt_port), "SW_KAFKA_BOOTSTRAP": stack.bootstrap,
           "SW_WEBHOOK_URL": receiver.url, "SW_WORKER_ID": group, "SW_RULES_PATH": str(rules)}
    procs = [ManagedProcess("bridge", sitewatch_argv("bridge"), tmp / "logs" / "bridge.log", env).start(),
             ManagedProcess("worker", sitewatch_argv("worker"), tmp / "logs" / "worker.log", env).start()]
    out: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 120
        while "worker ready" not in procs[1].tail(100):
            if time.monotonic() > deadline or not procs[1].running:
                raise click.ClickException(f"worker did not start:\n{procs[1].tail()}")
            time.sleep(0.2)
        echo(f"pipeline: mosquitto → bridge → Tansu → Faust worker (validate + detect), logs in {tmp}/logs")
        out["gateway_rps"] = _through_pipeline(stack, group, _frames(readings, 200, 20, False), readings,
                                               "gateway frames (200 readings/message)", echo)
        single_n = max(2_000, readings // 10)
        out["single_rps"] = _through_pipeline(stack, group, _frames(single_n, 1, 20, True), single_n,
                                              "one MQTT message per reading (baseline)", echo)
        # Latency: an overload published on an idle pipeline, timed to the webhook.
        lat = []
        for i in range(5):
            n0 = len(receiver.received)
            ts = int(time.time() * 1000)
            _publish_flood(stack.mqtt_port, [(reading_topic(f"lat-{i}", "crane", "tc-01", "load"),
                                              json.dumps({"ts": ts, "value": 11.5, "unit": "t"}).encode())])
            deadline = time.monotonic() + 30
            while len(receiver.received) == n0 and time.monotonic() < deadline:
                time.sleep(0.01)
            if len(receiver.received) > n0:
                lat.append(receiver.received[-1].at_ms - ts)
            time.sleep(0.5)
        if lat:
            out["latency_median_ms"] = statistics.median(lat)
            echo(f"  MQTT publish → webhook (crane overload)  median {statistics.median(lat):.0f} ms, "
                 f"max {max(lat):.0f} ms over {len(lat)} alerts")
        else:
            echo("  MQTT publish → webhook: no alert arrived within 30 s (see worker log)")
    finally:
        for p in reversed(procs):
            p.stop()
        stack.stop()
        receiver.stop()
    return out


@click.group()
def bench():
    """Measure throughput and latency (each against a baseline measured in the same run)."""


@bench.command("detect")
@click.option("--readings", default=100_000, show_default=True, help="readings per batch")
@click.option("--devices", default=2_000, show_default=True)
@click.option("--repeat", default=7, show_default=True, help="batches to time (median reported)")
def detect_cmd(readings, devices, repeat):
    """Detector engine (numpy batches) vs a per-reading Python loop, single core."""
    bench_detect(readings, devices, repeat)


@bench.command("deadman")
@click.option("--devices", default=100_000, show_default=True, help="devices in the fleet")
@click.option("--silent", default=100, show_default=True, help="devices falling silent at the tick")
@click.option("--repeat", default=5, show_default=True)
def deadman_cmd(devices, silent, repeat):
    """Deadman tick cost at fleet size: the deadline index vs a walk over every device."""
    bench_deadman(devices, silent, repeat)


@bench.command("pipeline")
@click.option("--readings", default=200_000, show_default=True, help="readings to push through")
def pipeline_cmd(readings):
    """End to end on the local stack: gateway frames vs one message per reading, and alert latency."""
    bench_pipeline(readings)


__all__ = ["bench", "bench_detect", "bench_pipeline"]
