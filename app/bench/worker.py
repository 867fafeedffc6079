"""``bench worker``: one worker process draining a preloaded ``sw.raw``, beside what Kafka consumption alone allows.

The pipeline benchmark mixes the bridge, mosquitto and the worker; this one isolates the worker. ``sw.raw`` is
filled directly with bridge envelopes (``pack_raw``, partitioned like the bridge does), then each consumer drains
the same records in turn:

- the kafka-python consume ceiling: one in-process consumer reading every partition, nothing else;
- the bare Faust ceiling: a minimal Faust app (same broker settings as the worker) whose only agent counts
  ``stream.take()`` batches of ``sw.raw`` — what any Faust worker pays before doing work;
- the worker: ``sitewatch worker`` (validate → detect → tickets → notify), done when its consumer group has
  no lag left on ``sw.raw`` *and* ``sw.readings``.

Both Faust processes are timed the same way — from the "ready" line (partitions assigned) to zero lag of their
consumer group — so the commit interval (1 s) biases both alike; the kafka-python figure is timed in-process.
Gateway frames and single-reading messages (one MQTT message per Kafka record: the worst case, where
per-record overhead is everything) are measured in separate rounds on the same stack.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import click

from app.bench.pipeline import GroupLag, stop_on_sigterm
from sitewatch.contracts import (FAMILIES, TOPIC_DLQ, TOPIC_HAZARDS, TOPIC_RAW, TOPIC_READINGS, gateway_topic,
                                 kafka_key_for_mqtt_topic, pack_raw, partition_of, reading_topic)

# Long silence: the preloaded devices stop at the end of the data, which the deadman rightly reports; that fault
# storm is not what this benchmark measures.
BENCH_RULES = "version: 1\nfaults:\n  silent_after_intervals: 1000000\n"
DEVICES_PER_FAMILY = 4  # per site: 50 sites x 5 families x 4 = 1,000 devices
METRICS_PER_DEVICE_SET = sum(len(m) for m in FAMILIES.values())  # one device of each family


def _series(site: str, per_family: int = DEVICES_PER_FAMILY):
    for fam, metrics in FAMILIES.items():
        for d in range(per_family):
            for metric, unit in metrics.items():
                yield fam, f"{fam[:2]}-{d:02d}", metric, unit


def _value(step: int, j: int) -> float:
    """A quiet signal that moves a little (a constant would be a stuck sensor to the flatline check)."""
    return round(0.5 + 0.002 * ((step * 7 + j) % 5), 4)


def gateway_envelopes(readings: int, sites: int, per_frame: int, frames_per_envelope: int,
                      partitions: int, per_family: int = DEVICES_PER_FAMILY) -> tuple[list[tuple[int, bytes]], int]:
    """Bridge envelopes of gateway frames: every site's series reports once a second through its gateway
    (``per_family`` devices of each family per site)."""
    steps = max(1, math.ceil(readings / (sites * per_family * METRICS_PER_DEVICE_SET)))
    t0 = int(time.time() * 1000) - steps * 1000 - 60_000
    series = {f"g-{s:03d}": list(_series(f"g-{s:03d}", per_family)) for s in range(sites)}
    frames: list[tuple[str, bytes]] = []
    n = 0
    for step in range(steps):
        for site, ser in series.items():
            items = []
            for j, (fam, dev, metric, unit) in enumerate(ser):
                if n == readings:
                    break
                items.append({"family": fam, "device": dev, "metric": metric, "ts": t0 + step * 1000,
                              "value": _value(step, j), "unit": unit})
                n += 1
            for i in range(0, len(items), per_frame):
                frames.append((gateway_topic(site, "gw-01"), json.dumps({"readings": items[i:i + per_frame]},
                                                                        separators=(",", ":")).encode()))
    return _envelopes(frames, frames_per_envelope, partitions), n


def single_envelopes(readings: int, sites: int, per_envelope: int,
                     partitions: int) -> tuple[list[tuple[int, bytes]], int]:
    """Bridge envelopes of one-reading MQTT messages (``per_envelope`` of them per Kafka record)."""
    steps = max(1, math.ceil(readings / (sites * DEVICES_PER_FAMILY * METRICS_PER_DEVICE_SET)))
    t0 = int(time.time() * 1000) - steps * 1000 - 60_000
    msgs: list[tuple[str, bytes]] = []
    for step in range(steps):
        for s in range(sites):
            site = f"s-{s:03d}"
            for j, (fam, dev, metric, unit) in enumerate(_series(site)):
                if len(msgs) == readings:
                    break
                msgs.append((reading_topic(site, fam, dev, metric),
                             json.dumps({"ts": t0 + step * 1000, "value": _value(step, j), "unit": unit},
                                        separators=(",", ":")).encode()))
    return _envelopes(msgs, per_envelope, partitions), len(msgs)


def _envelopes(msgs: list[tuple[str, bytes]], per_envelope: int, partitions: int) -> list[tuple[int, bytes]]:
    """What the bridge writes: messages grouped by the partition of their key, ``per_envelope`` per record."""
    rx = int(time.time() * 1000)
    pending: dict[int, list[tuple[str, bytes]]] = {}
    out: list[tuple[int, bytes]] = []
    for topic, payload in msgs:
        p = partition_of(kafka_key_for_mqtt_topic(topic).encode(), partitions)
        group = pending.setdefault(p, [])
        group.append((topic, payload))
        if len(group) == per_envelope:
            out.append((p, pack_raw(group, rx)))
            pending[p] = []
    out += [(p, pack_raw(g, rx)) for p, g in pending.items() if g]
    return out


# ---------------------------------------------------------------------------------------------- Kafka helpers
def _preload(bootstrap: str, records: list[tuple[int, bytes]]) -> float:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, batch_size=1 << 20,
                             max_request_size=4 * 1024 * 1024)
    t0 = time.perf_counter()
    for partition, value in records:
        producer.send(TOPIC_RAW, value=value, partition=partition)
    producer.flush(300)
    producer.close(10)
    return time.perf_counter() - t0


def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Log end offset per partition (``streams.offsets``: Tansu's ListOffsets alone falls short of the end)."""
    from streams.offsets import end_offsets

    return {tp.partition: end for tp, end in end_offsets(bootstrap, [topic]).items()}


def _start_group_at(bootstrap: str, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Commit ``offsets`` for a consumer group before its first member starts, so it reads from there and not from
    the beginning of the topic (``consumer_auto_offset_reset=earliest``)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    if not offsets:
        return
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        tps = {TopicPartition(t, p): off for (t, p), off in offsets.items()}
        c.assign(list(tps))
        c.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in tps.items()})
    finally:
        c.close()


def kafka_python_ceiling(bootstrap: str, start: dict[int, int], end: dict[int, int]) -> float:
    """Seconds for one kafka-python consumer to read ``sw.raw`` from ``start`` to ``end`` (first record → last)."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    try:
        tps = [TopicPartition(TOPIC_RAW, p) for p in end]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, start.get(tp.partition, 0))
        want, got = sum(end.values()) - sum(start.get(p, 0) for p in end), 0
        t0 = time.perf_counter()
        deadline = time.monotonic() + 300
        while got < want and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500, max_records=100_000).values():
                got += len(recs)
        if got < want:
            raise click.ClickException(f"kafka-python read {got} of {want} records")
        return time.perf_counter() - t0
    finally:
        c.close()


# ---------------------------------------------------------------------------------------------- bare Faust
def take_ceiling_main() -> None:  # pragma: no cover - runs in a child process
    """The bare Faust consumer: same broker settings as the worker, ``sw.raw`` in ``take()`` batches, counted."""
    import faust

    from sitewatch.settings import Settings
    from streams.pipeline import _low_latency_fetch

    s = Settings()
    _low_latency_fetch()
    app = faust.App(s.worker_id, broker=f"kafka://{s.kafka_bootstrap}", store="memory://", web_enabled=False,
                    topic_partitions=s.kafka_partitions, topic_replication_factor=1,
                    consumer_auto_offset_reset="earliest", broker_session_timeout=6.0,
                    broker_rebalance_timeout=3.0, broker_heartbeat_interval=1.0, broker_commit_interval=1.0,
                    datadir=str(s.data_dir / "faust-take"))
    raw = app.topic(TOPIC_RAW, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    seen = {"n": 0}

    @app.agent(raw, name="count")
    async def count(stream):
        async for batch in stream.take(s.batch_size, within=s.batch_within_s):
            seen["n"] += len(batch)

    @app.on_rebalance_complete.connect
    async def ready(sender, **kwargs):
        print("worker ready: bare take() consumer", flush=True)

    faust.Worker(app, quiet=True, override_logging=False, redirect_stdouts=False).execute_from_commandline()


# ---------------------------------------------------------------------------------------------- rounds
def _drain(name: str, argv: list[str], env: dict, logs: Path, bootstrap: str, topics: tuple[str, ...],
           profile: Path | None = None) -> tuple[float, float]:
    """Start a Faust process, wait for its ready line, time it to zero group lag on ``topics``, stop it.
    Returns wall seconds and the CPU seconds the process used meanwhile (the machine may be shared: CPU time
    per reading is the steadier figure).

    With ``profile``, py-spy samples the process while it drains (not while it starts), written as collapsed
    stacks to ``profile``; without py-spy the whole process runs under cProfile instead."""
    import shutil
    import signal
    import subprocess

    from app.localstack import ManagedProcess

    spy_bin = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if profile is not None and not spy_bin:
        argv = [sys.executable, "-m", "cProfile", "-o", str(profile.with_suffix(".prof")), *argv[1:]]
    lag = GroupLag(bootstrap, env["SW_WORKER_ID"], topics)
    proc = ManagedProcess(name, argv, logs / f"{name}.log", env).start()
    spy = None
    try:
        deadline = time.monotonic() + 120
        while "worker ready" not in proc.tail(200):
            if time.monotonic() > deadline or not proc.running:
                raise click.ClickException(f"{name} did not start:\n{proc.tail()}")
            time.sleep(0.05)
        if profile is not None and spy_bin:
            assert proc.proc is not None
            spy = subprocess.Popen([spy_bin, "record", "--pid", str(proc.proc.pid), "--format", "raw", "--rate", "200",
                                    "--nonblocking", "-o", str(profile)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        t0, c0 = time.perf_counter(), _cpu_s(proc.proc.pid)
        deadline = time.monotonic() + 900
        while lag() > 0:
            if time.monotonic() > deadline or not proc.running:
                raise click.ClickException(f"{name} did not drain its input:\n{proc.tail()}")
            time.sleep(0.1)
        return time.perf_counter() - t0, _cpu_s(proc.proc.pid) - c0
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            spy.wait(30)
        lag.close()
        proc.stop(60.0 if profile is not None else 15.0)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def collapsed_stacks(path: Path):
    """(frames, sample count) per line of a py-spy collapsed-stacks file (``--format raw``)."""
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            yield stack.split(";"), int(n)


def profile_summary(path: Path, top: int = 25) -> str:
    """Top functions of a py-spy collapsed-stacks file: share of samples inside (inclusive) and on top (self)."""
    incl: dict[str, int] = {}
    self_: dict[str, int] = {}
    total = 0
    for raw, count in collapsed_stacks(path):
        total += count
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 2)[-1] + ")"
                  if " (" in f else f for f in raw]
        for f in set(frames):
            incl[f] = incl.get(f, 0) + count
        self_[frames[-1]] = self_.get(frames[-1], 0) + count
    lines = [f"{total} samples; top inclusive (below the event loop's own trunk):"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in sorted(incl.items(), key=lambda x: -x[1])
              if c < 0.75 * total][:top]
    lines.append("top self:")
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in sorted(self_.items(), key=lambda x: -x[1])[:top]]
    return "\n".join(lines)


def _round(label: str, key: str, records: list[tuple[int, bytes]], readings: int, stack, tmp: Path, env: dict,
           profile: Path | None, echo, baseline_src: Path | None = None, repeat: int = 1) -> dict[str, float]:
    """Each consumer drains the same records ``repeat`` times, interleaved (take, worker, baseline, take …) so a
    machine shared with other jobs slows them alike; medians are reported, and the ratio is the median of each
    repeat's ratio. Every run has a consumer group and a data directory of its own: a worker started in the data
    directory of another restores its detector states from the snapshots there and finds every reading stale."""
    from app.localstack import sitewatch_argv

    start = _end_offsets(stack.bootstrap, TOPIC_RAW)
    before = {t: sum(_end_offsets(stack.bootstrap, t).values()) for t in (TOPIC_HAZARDS, TOPIC_DLQ)}
    load_s = _preload(stack.bootstrap, records)
    end = _end_offsets(stack.bootstrap, TOPIC_RAW)
    echo(f"{label}: {readings:,} readings in {len(records):,} sw.raw records (preloaded in {load_s:.1f} s)")
    kp_s = kafka_python_ceiling(stack.bootstrap, start, end)
    runs: dict[str, list[tuple[float, float]]] = {"take": [], "worker": [], "baseline": []}
    take_prof = Path(f"{profile}-take-{key}.txt") if profile is not None else None
    prof = Path(f"{profile}-{key}.txt") if profile is not None else None
    for r in range(repeat):
        sfx = f"-{r + 1}" if repeat > 1 else ""
        first = r == 0

        def run(what: str, argv: list[str], topics: tuple[str, ...], profile_to: Path | None,
                extra: dict | None = None) -> None:
            name = f"{what}-{key}{sfx}"
            data = tmp / f"data-{name}"
            data.mkdir(parents=True, exist_ok=True)
            run_env = {**env, "SW_WORKER_ID": f"bench-{name}", "SW_DATA_DIR": str(data), **(extra or {})}
            # this round's records only, and only the sw.readings records this run produces (not those of the
            # runs before it, nor the previous round's records, which a new group would read from the beginning)
            first_offsets = {(TOPIC_RAW, p): start.get(p, 0) for p in end}
            if TOPIC_READINGS in topics:
                first_offsets |= {(TOPIC_READINGS, p): o for p, o in _end_offsets(stack.bootstrap, TOPIC_READINGS).items()}
            _start_group_at(stack.bootstrap, f"bench-{name}", first_offsets)
            runs[what].append(_drain(name, argv, run_env, tmp / "logs", stack.bootstrap, topics,
                                     profile_to if first else None))

        run("take", [sys.executable, "-c", "from app.bench.worker import take_ceiling_main as m; m()"],
            (TOPIC_RAW,), take_prof)
        run("worker", sitewatch_argv("worker"), (TOPIC_RAW, TOPIC_READINGS), prof)
        if baseline_src is not None:  # the same worker command from another source tree (e.g. the previous commit)
            boot = (f"import sys, runpy; sys.path.insert(0, {str(baseline_src)!r}); "
                    "runpy.run_module('app', run_name='__main__')")
            run("baseline", [sys.executable, "-c", boot, "worker"], (TOPIC_RAW, TOPIC_READINGS), None,
                {"PYTHONPATH": str(baseline_src)})
    for what, path in (("bare take()", take_prof), ("worker", prof)):
        if path is not None and path.exists():
            echo(f"  {what} profile ({path}):\n" + profile_summary(path))
    after = {t: sum(_end_offsets(stack.bootstrap, t).values()) for t in (TOPIC_HAZARDS, TOPIC_DLQ)}
    take_s = median([w for w, _ in runs["take"]])
    take_cpu = median([c for _, c in runs["take"]])
    worker_s = median([w for w, _ in runs["worker"]])
    worker_cpu = median([c for _, c in runs["worker"]])
    vs_take = median([t[0] / w[0] for t, w in zip(runs["take"], runs["worker"])])
    vs_take_cpu = median([t[1] / w[1] for t, w in zip(runs["take"], runs["worker"])])
    out = {f"{key}_worker_rps": readings / worker_s, f"{key}_faust_take_rps": readings / take_s,
           f"{key}_kafka_python_rps": readings / kp_s, f"{key}_worker_vs_take": vs_take,
           f"{key}_worker_cpu_us_per_reading": 1e6 * worker_cpu / readings,
           f"{key}_take_cpu_us_per_reading": 1e6 * take_cpu / readings,
           f"{key}_worker_vs_take_cpu": vs_take_cpu,
           f"{key}_worker_vs_take_each": [t[0] / w[0] for t, w in zip(runs["take"], runs["worker"])],
           f"{key}_findings": (after[TOPIC_HAZARDS] - before[TOPIC_HAZARDS]) // repeat // (2 if baseline_src else 1),
           f"{key}_dlq": (after[TOPIC_DLQ] - before[TOPIC_DLQ]) // repeat // (2 if baseline_src else 1)}
    n = len(records)
    med = f"median of {repeat}, " if repeat > 1 else ""
    echo(f"  kafka-python consume ceiling   {readings / kp_s:10,.0f} readings/s  ({n / kp_s:9,.0f} records/s, "
         f"{kp_s:.2f} s)")
    echo(f"  bare Faust take() ceiling      {readings / take_s:10,.0f} readings/s  ({n / take_s:9,.0f} records/s, "
         f"{med}{take_s:.2f} s, {1e6 * take_cpu / readings:.1f} CPU-µs/reading)")
    echo(f"  sitewatch worker               {readings / worker_s:10,.0f} readings/s  ({n / worker_s:9,.0f} records/s, "
         f"{med}{worker_s:.2f} s, {1e6 * worker_cpu / readings:.1f} CPU-µs/reading) = {vs_take:.0%} of the "
         f"take() ceiling by wall time, {vs_take_cpu:.0%} by CPU time; "
         f"{out[f'{key}_findings']} findings, {out[f'{key}_dlq']} DLQ records (per run)")
    if repeat > 1:
        echo("  per repeat, worker / take by wall time: " +
             ", ".join(f"{x:.0%}" for x in out[f"{key}_worker_vs_take_each"]))
    if baseline_src is not None:
        base_s = median([w for w, _ in runs["baseline"]])
        base_cpu = median([c for _, c in runs["baseline"]])
        base_vs_take = median([t[0] / b[0] for t, b in zip(runs["take"], runs["baseline"])])
        out.update({f"{key}_baseline_rps": readings / base_s,
                    f"{key}_baseline_cpu_us_per_reading": 1e6 * base_cpu / readings,
                    f"{key}_baseline_vs_take": base_vs_take})
        echo(f"  baseline worker                {readings / base_s:10,.0f} readings/s  ({n / base_s:9,.0f} records/s, "
             f"{med}{base_s:.2f} s, {1e6 * base_cpu / readings:.1f} CPU-µs/reading) = {base_vs_take:.0%} of the "
             f"take() ceiling by wall time — {baseline_src}")
        if repeat > 1:
            echo("  per repeat, baseline / take by wall time: " +
                 ", ".join(f"{t[0] / b[0]:.0%}" for t, b in zip(runs["take"], runs["baseline"])))
    return out


def bench_worker(readings: int = 1_000_000, single_readings: int = 200_000, sites: int = 50, per_frame: int = 200,
                 frames_per_envelope: int = 10, singles_per_envelope: int = 1, profile: str | None = None,
                 baseline_src: str | None = None, repeat: int = 1, fleet_readings: int = 0, fleet_per_family: int = 100,
                 echo=click.echo) -> dict[str, float]:
    """``fleet_readings``: also a round of gateway frames from a large fleet (``fleet_per_family`` devices of each
    family per site: 25,000 devices at 100), run once — the other rounds' 1,000 devices see a few state
    checkpoints in a whole run, a city's worker share of devices about one per reading (docs/performance.md)."""
    from app.localstack import LocalStack, free_port

    stop_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="sitewatch-bench-worker-"))
    stack = LocalStack(tmp, free_port(), free_port()).start()
    rules = tmp / "bench-rules.yaml"
    rules.write_text(BENCH_RULES)
    env = {"SW_DATA_DIR": str(tmp), "SW_MQTT_PORT": str(stack.mqtt_port), "SW_KAFKA_BOOTSTRAP": stack.bootstrap,
           "SW_RULES_PATH": str(rules), "SW_KAFKA_PARTITIONS": str(stack.partitions)}
    prof = Path(profile).resolve() if profile else None
    base = Path(baseline_src).resolve() if baseline_src else None
    out: dict[str, float] = {}
    try:
        echo(f"worker: one `sitewatch worker` draining a preloaded sw.raw ({stack.partitions} partitions), "
             f"logs in {tmp}/logs")
        if readings:
            recs, n = gateway_envelopes(readings, sites, per_frame, frames_per_envelope, stack.partitions)
            out.update(_round(f"gateway frames ({per_frame} readings/frame, {frames_per_envelope} frames/record)",
                              "gateway", recs, n, stack, tmp, env, prof, echo, base, repeat))
        if single_readings:
            recs, n = single_envelopes(single_readings, sites, singles_per_envelope, stack.partitions)
            out.update(_round(f"single-reading messages ({singles_per_envelope} per sw.raw record)", "single",
                              recs, n, stack, tmp, env, prof, echo, base, repeat))
        if fleet_readings:
            devices = sites * fleet_per_family * len(FAMILIES)
            recs, n = gateway_envelopes(fleet_readings, sites, per_frame, frames_per_envelope, stack.partitions,
                                        fleet_per_family)
            out.update(_round(f"gateway frames of a large fleet ({devices:,} devices)", "fleet", recs, n, stack, tmp,
                              env, prof, echo, base, 1))
            out["fleet_devices"] = devices
    finally:
        stack.stop()
    return out
