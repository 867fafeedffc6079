"""``bench scale``: readings/s of 1, 2 … N ``sitewatch worker`` processes in one consumer group, on the same input.

Each round gets a fresh local stack (so no round inherits another's ``sw.readings``), starts its workers, waits
until the group has settled (every worker's latest assignment, together, covers each partition once), then
preloads ``sw.raw`` with the same bridge envelopes (``app.bench.worker.gateway_envelopes``) and times until the
group has no lag left on ``sw.raw`` and ``sw.readings``. The CPU time the worker processes used in that window
(``/proc/<pid>/stat``) says how many cores they really had: on a small machine more workers cannot mean more
cores, and the per-core figure shows whether the work itself scales.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import click

from app.bench.latency import CpuWatch, cpu_s
from app.bench.pipeline import GroupLag, stop_on_sigterm
from sitewatch.contracts import TOPIC_RAW, TOPIC_READINGS

BENCH_RULES = "version: 1\nfaults:\n  silent_after_intervals: 1000000\n"
SHORT_ROUND_S = 5.0
READY = re.compile(r"worker ready: sw\.readings partitions \[([0-9, ]*)\]")


def _assigned(log: Path) -> set[int] | None:
    try:
        found = READY.findall(log.read_text(errors="replace"))
    except FileNotFoundError:
        return None
    return {int(p) for p in found[-1].split(",") if p.strip()} if found else None


def preload(bootstrap: str, records: list[tuple[int, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, batch_size=1 << 20,
                             max_request_size=4 * 1024 * 1024)
    for partition, value in records:
        producer.send(TOPIC_RAW, value=value, partition=partition)
    producer.flush(300)
    producer.close(10)


def _wait_ready(proc, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while "worker ready" not in proc.tail(200):
        if time.monotonic() > deadline or not proc.running:
            raise click.ClickException(f"worker did not start:\n{proc.tail()}")
        time.sleep(0.2)


def _round(k: int, records, readings: int, partitions: int, echo) -> dict[str, float]:
    from app.localstack import LocalStack, ManagedProcess, free_port, sitewatch_argv

    tmp = Path(tempfile.mkdtemp(prefix=f"sitewatch-bench-scale-{k}-"))
    stack = LocalStack(tmp, free_port(), free_port(), partitions=partitions).start()
    rules = tmp / "bench-rules.yaml"
    rules.write_text(BENCH_RULES)
    group = f"bench-scale-{k}"
    env = {"SW_MQTT_PORT": str(stack.mqtt_port), "SW_KAFKA_BOOTSTRAP": stack.bootstrap, "SW_WORKER_ID": group,
           "SW_RULES_PATH": str(rules), "SW_KAFKA_PARTITIONS": str(partitions), "SW_DB_URL": f"sqlite:///{tmp}/b.db"}
    procs = []
    try:
        for i in range(k):
            wdir = tmp / f"worker-{i + 1}"
            wdir.mkdir()
            log = tmp / "logs" / f"worker-{i + 1}.log"
            procs.append(ManagedProcess(f"worker-{i + 1}", sitewatch_argv("worker"), log,
                                        {**env, "SW_DATA_DIR": str(wdir)}).start())
            if i == 0:  # the first one migrates the backlog database; workers started together race on it
                _wait_ready(procs[0])
        deadline = time.monotonic() + 180
        while True:
            if not all(p.running for p in procs) or time.monotonic() > deadline:
                raise click.ClickException(f"{k} workers did not settle:\n" + "\n".join(p.tail(20) for p in procs))
            got = [_assigned(p.log_path) or set() for p in procs]
            if all("worker ready" in p.tail(400) for p in procs) and sorted(x for a in got for x in a) == list(
                    range(partitions)):
                break
            time.sleep(0.3)
        time.sleep(3)  # a last rebalance may still be under way; the ready lines are per generation
        lag = GroupLag(stack.bootstrap, group, (TOPIC_RAW, TOPIC_READINGS))
        cpu0 = sum(cpu_s(p.proc.pid) for p in procs)
        me = SimpleNamespace(name="bench (preload)", proc=SimpleNamespace(pid=os.getpid()))
        watch = CpuWatch([*stack.procs, me]).start()
        t0 = time.perf_counter()
        preload(stack.bootstrap, records)
        preload_s = time.perf_counter() - t0
        time.sleep(0.5)
        deadline = time.monotonic() + 900
        while lag() > 0:
            if time.monotonic() > deadline or not all(p.running for p in procs):
                raise click.ClickException(f"{k} workers did not drain the input:\n" + procs[0].tail(30))
            time.sleep(0.1)
        wall = time.perf_counter() - t0
        cpu = sum(cpu_s(p.proc.pid) for p in procs) - cpu0
        shares = watch.stop()
        lag.close()
        got = [sorted(_assigned(p.log_path) or ()) for p in procs]
    finally:
        for p in procs:
            p.stop()
        stack.stop()
    rps = readings / wall
    echo(f"  {k} worker(s) {str(got):24} {rps:10,.0f} readings/s   {wall:6.2f} s wall, {cpu:6.2f} s worker CPU = "
         f"{cpu / wall:4.2f} cores busy, {readings / max(cpu, 1e-9):9,.0f} readings per CPU-second")
    # The workers drain while the input is still being written: where the preload takes most of the window, the
    # round measures the producer and the broker, not the workers (see the worker bench for one worker alone).
    echo(f"    the preload took {preload_s:.2f} s of the {wall:.2f} s; {CpuWatch.describe(shares)}")
    if wall < SHORT_ROUND_S:  # the lag is read from committed offsets: each stage commits once a second
        echo(f"    warning: a {wall:.1f} s round is within a few offset commits (1 s each, two stages) of its end; "
             "the figure measures the commit clock as much as the workers — preload more readings")
    return {"rps": rps, "wall_s": wall, "cpu_s": cpu, "cores_used": cpu / wall, "per_cpu_s": readings / max(cpu, 1e-9),
            "preload_s": preload_s, "machine_busy_pct": shares["machine_busy_pct"], "cpu_pct": shares["cpu_pct"]}


def bench_scale(readings: int = 2_000_000, workers: tuple[int, ...] = (1, 2, 4), partitions: int | None = None,
                echo=click.echo) -> dict:
    from app.bench.worker import gateway_envelopes
    from sitewatch.settings import Settings

    stop_on_sigterm()
    parts = partitions or Settings().kafka_partitions
    records, n = gateway_envelopes(readings, sites=50, per_frame=200, frames_per_envelope=10, partitions=parts)
    cores = os.cpu_count() or 1
    echo(f"scale: {n:,} readings ({len(records):,} sw.raw records of gateway frames), {parts} partitions, "
         f"worker counts {list(workers)}; this machine has {cores} core(s), shared with Tansu and the benchmark")
    out: dict = {"readings": n, "partitions": parts, "cores": cores, "rounds": {}}
    for k in workers:
        out["rounds"][k] = _round(k, records, n, parts, echo)
    base = out["rounds"].get(workers[0])
    if base:
        for k in workers:
            r = out["rounds"][k]
            r["speedup"] = r["rps"] / base["rps"]
            r["efficiency_per_worker"] = r["speedup"] / (k / workers[0])
            r["per_core_vs_base"] = r["per_cpu_s"] / base["per_cpu_s"]
        echo(f"  vs {workers[0]} worker(s), the baseline of this run:")
        for k in workers:
            r = out["rounds"][k]
            echo(f"    {k} worker(s): speed-up {r['speedup']:4.2f}x ({r['efficiency_per_worker']:.0%} per worker), "
                 f"work per CPU-second {r['per_core_vs_base']:.0%} of the baseline's, {r['cores_used']:.2f} cores busy")
    if max(workers) >= cores:
        echo(f"  note: {max(workers)} workers on {cores} cores (plus Tansu and this process): "
             "the wall-clock speed-up is capped by the cores (see 'machine busy' above), not by the pipeline; the "
             "per-CPU-second figure is the one that says whether added workers waste work (rebalancing, smaller "
             "batches per worker, duplicate state recovery).")
    return out
