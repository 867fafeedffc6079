"""``bench pipeline --load R``: alarm latency while the pipeline carries R background readings/s.

The full path — MQTT (mosquitto) → bridge → Tansu → worker(s) → backlog → outbox → ``sw.alerts`` → webhook
receiver — under a steady flood of quiet gateway frames, while crane overloads are injected on fresh devices at
known wall-clock times (each one a new ticket). Two figures per alarm:

- publish → ticket: the alert's outbox row is written in the ticket's own transaction, so its ``created_ms``
  is the moment the ticket existed;
- publish → webhook: when the receiver got the signed POST.

The same alarms are first measured on the idle pipeline (the baseline of this run), then under load. The
overload reading carries the publish time as its timestamp, so nothing here depends on event-time lag.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

from app.bench.pipeline import GroupLag, stop_on_sigterm
from sitewatch.contracts import (
    TOPIC_ALERTS,
    TOPIC_HAZARDS,
    TOPIC_RAW,
    TOPIC_READINGS,
    gateway_topic,
    reading_topic,
)

BENCH_RULES = "version: 1\nfaults:\n  silent_after_intervals: 1000000\n"  # the flood stops at the end: no deadman
CRANES_PER_SITE = 25
CRANE = (("load", "t", 2.0), ("moment", "%", 20.0), ("wind", "m/s", 3.0), ("tilt", "deg", 0.1))
READINGS_PER_FRAME = CRANES_PER_SITE * len(CRANE)
TICKS_PER_S = 10
GOAL_P99_MS = 1000.0
SPY_RATE = 100


def percentiles(xs: list[float]) -> dict[str, float]:
    """p50 / p95 / p99 / max by the nearest-rank method (no interpolation between two alarms)."""
    s = sorted(xs)
    if not s:
        return {}

    def rank(p: float) -> float:
        return s[max(0, math.ceil(p / 100 * len(s)) - 1)]

    return {"p50": rank(50), "p95": rank(95), "p99": rank(99), "max": s[-1]}


def _client(port: int, name: str):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{name}-{time.time_ns()}")
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


class Flood(threading.Thread):
    """Quiet gateway frames at ``rate`` readings/s: every site's 25 cranes (4 metrics each) once a second,
    the sites spread over ten ticks a second so the load is smooth rather than one burst per second."""

    def __init__(self, port: int, rate: int):
        super().__init__(daemon=True, name="flood")
        self.port = port
        self.sites = [f"ld-{s:04d}" for s in range(max(1, math.ceil(rate / READINGS_PER_FRAME)))]
        self.stop = threading.Event()
        self.published = 0
        self.behind_ticks = 0
        self.started = self.ended = 0.0

    def frame(self, site: str, ts: int, step: int) -> bytes:
        items = [{"family": "crane", "device": f"tc-{c:02d}", "metric": m, "ts": ts, "unit": u,
                  "value": round(base + 0.01 * ((step + c) % 7), 3)}
                 for c in range(CRANES_PER_SITE) for m, u, base in CRANE]
        return json.dumps({"readings": items}, separators=(",", ":")).encode()

    def run(self) -> None:
        client = _client(self.port, "flood")
        groups = [self.sites[i::TICKS_PER_S] for i in range(TICKS_PER_S)]
        self.started = time.monotonic()
        tick = 0
        try:
            while not self.stop.is_set():
                due = self.started + tick / TICKS_PER_S
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                elif now - due > 1.0 / TICKS_PER_S:
                    self.behind_ticks += 1
                ts = int(time.time() * 1000)
                for site in groups[tick % TICKS_PER_S]:
                    client.publish(gateway_topic(site, "gw-01"), self.frame(site, ts, tick // TICKS_PER_S), qos=1)
                    self.published += READINGS_PER_FRAME
                tick += 1
        finally:
            self.ended = time.monotonic()
            client.loop_stop()
            client.disconnect()

    @property
    def achieved_rps(self) -> float:
        return self.published / max((self.ended or time.monotonic()) - self.started, 1e-9)


def _inject(port: int, prefix: str, n: int, per_s: float) -> dict[str, int]:
    """``n`` crane overloads on fresh sites, ``per_s`` a second; returns site -> publish time (epoch ms)."""
    client = _client(port, "alarms")
    sent: dict[str, int] = {}
    t0 = time.monotonic()
    try:
        for i in range(n):
            due = t0 + i / per_s
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
            site = f"{prefix}-{i:04d}"
            ts = int(time.time() * 1000)
            client.publish(reading_topic(site, "crane", "tc-01", "load"),
                           json.dumps({"ts": ts, "value": 11.5, "unit": "t"}).encode(), qos=1)
            sent[site] = ts
    finally:
        client.loop_stop()
        client.disconnect()
    return sent


def _outbox_times(db: Path, prefix: str) -> dict[str, int]:
    """site -> when its ticket's "opened" alert was written (the ticket's transaction)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute("SELECT dedup_key, created_ms FROM alert_outbox WHERE alert_id LIKE '%-opened-%' "
                           "AND dedup_key LIKE ?", (f"{prefix}-%",)).fetchall()
    except sqlite3.OperationalError:  # no table yet
        return {}
    finally:
        con.close()
    return {k.split("/")[0]: int(ms) for k, ms in rows}


def _webhook_times(receiver, prefix: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in list(receiver.received):
        site = (a.body.get("ticket") or {}).get("site", "")
        if site.startswith(prefix + "-") and a.body.get("action") == "opened":
            out.setdefault(site, a.at_ms)
    return out


HOP_TOPICS = (TOPIC_RAW, TOPIC_READINGS, TOPIC_HAZARDS, TOPIC_ALERTS)
_RX = re.compile(rb'"rx":(\d+)')


def scan_topics(bootstrap: str, prefixes: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """topic -> site -> timestamp (epoch ms) of the first record that names an alarm site; and ``bridge_rx`` ->
    site -> the bridge's receive time written in that ``sw.raw`` envelope.

    Read after the run, so the scan costs the measured pipeline nothing. The record timestamp is the producer's
    (CreateTime: taken when the stage called ``send``), so each hop is "previous stage produced → this stage
    produced" and includes the broker, the fetch, the batch window and the stage's own work. The sites are found
    as bytes (every stage writes them verbatim), so no contract decoder is needed."""
    from kafka import KafkaConsumer, TopicPartition

    from streams.offsets import end_offsets

    pat = re.compile(rb"\b(?:" + b"|".join(re.escape(p.encode()) for p in prefixes) + rb")-\d{4}\b")
    out: dict[str, dict[str, int]] = {t: {} for t in (*HOP_TOPICS, "bridge_rx")}
    ends = end_offsets(bootstrap, list(HOP_TOPICS))
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, check_crcs=False,
                      max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    try:
        tps = [TopicPartition(tp.topic, tp.partition) for tp, end in ends.items() if end > 0]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        want = {tp: ends[tp] for tp in ends if ends[tp] > 0}
        deadline = time.monotonic() + 300
        while want and time.monotonic() < deadline:
            for tp, recs in c.poll(timeout_ms=500, max_records=50_000).items():
                seen = out[tp.topic]
                for r in recs:
                    sites = {m.decode() for m in pat.findall(r.value or b"")}
                    for site in sites:
                        if site not in seen or r.timestamp < seen[site]:
                            seen[site] = r.timestamp
                            if tp.topic == TOPIC_RAW:
                                m = _RX.search(r.value)
                                if m:
                                    out["bridge_rx"][site] = int(m.group(1))
                key = next((k for k in want if k.topic == tp.topic and k.partition == tp.partition), None)
                if key is not None and recs and recs[-1].offset + 1 >= want[key]:
                    del want[key]
    finally:
        c.close()
    return out


HOPS = (("MQTT → bridge", "publish", "bridge_rx"), ("bridge → sw.raw", "bridge_rx", TOPIC_RAW),
        ("validate → sw.readings", TOPIC_RAW, TOPIC_READINGS), ("detect → sw.hazards", TOPIC_READINGS, TOPIC_HAZARDS),
        ("tickets: ledger row", TOPIC_HAZARDS, "ticket"), ("outbox → sw.alerts", "ticket", TOPIC_ALERTS),
        ("notify → webhook", TOPIC_ALERTS, "webhook"))


def hop_table(sent: dict[str, int], marks: dict[str, dict[str, int]], echo, label: str) -> dict:
    """Per hop: p50 / p99 / max of (this mark − previous mark) over the alarms that have both marks."""
    out: dict = {}
    echo(f"    per hop ({label}), ms:         p50      p95      p99      max   alarms")
    for name, a, b in HOPS:
        ma = sent if a == "publish" else marks.get(a, {})
        mb = marks.get(b, {})
        xs = [mb[s] - ma[s] for s in sent if s in ma and s in mb]
        p = percentiles(xs)
        out[name] = {**p, "n": len(xs)}
        if p:
            echo(f"      {name:24} {p['p50']:8.0f} {p['p95']:8.0f} {p['p99']:8.0f} {p['max']:8.0f}   {len(xs)}")
        else:
            echo(f"      {name:24} (no marks)")
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU jiffies of the whole machine, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return float(sum(f) - idle), float(sum(f))


class CpuWatch:
    """CPU used by the pipeline's processes and by the whole machine between ``start`` and ``stop``, and the
    load average: on a shared 2-core machine the latency figures mean nothing without them."""

    def __init__(self, procs):
        self.procs = procs

    def start(self) -> "CpuWatch":
        self.t0 = time.monotonic()
        self.cpu0 = {p.name: cpu_s(p.proc.pid) for p in self.procs}
        self.m0 = machine_busy()
        self.load0 = os.getloadavg()
        return self

    def stop(self) -> dict:
        wall = max(time.monotonic() - self.t0, 1e-9)
        m1 = machine_busy()
        busy = (m1[0] - self.m0[0]) / max(m1[1] - self.m0[1], 1.0)
        return {"wall_s": wall, "load_avg": [self.load0[0], os.getloadavg()[0]],
                "machine_busy_pct": 100.0 * busy,
                "cpu_pct": {p.name: 100.0 * (cpu_s(p.proc.pid) - self.cpu0[p.name]) / wall for p in self.procs}}

    @staticmethod
    def describe(c: dict) -> str:
        procs = ", ".join(f"{k} {v:.0f} %" for k, v in c["cpu_pct"].items())
        return (f"load average {c['load_avg'][0]:.1f} → {c['load_avg'][1]:.1f}, machine busy "
                f"{c['machine_busy_pct']:.0f} % of 2 cores; CPU of one core: {procs}")


def _measure(label: str, port: int, db: Path, receiver, prefix: str, n: int, per_s: float, echo,
             cpu: CpuWatch) -> tuple[dict, dict]:
    cpu.start()
    sent = _inject(port, prefix, n, per_s)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        tickets, hooks = _outbox_times(db, prefix), _webhook_times(receiver, prefix)
        if len(tickets) >= n and len(hooks) >= n:
            break
        time.sleep(0.5)
    used = cpu.stop()
    tickets, hooks = _outbox_times(db, prefix), _webhook_times(receiver, prefix)
    to_ticket = [tickets[s] - ts for s, ts in sent.items() if s in tickets]
    to_hook = [hooks[s] - ts for s, ts in sent.items() if s in hooks]
    out = {"alarms": n, "tickets": len(to_ticket), "webhooks": len(to_hook), "cpu": used}
    echo(f"  {label}: {n} overloads at {per_s:g}/s → {len(to_ticket)} tickets, {len(to_hook)} webhooks")
    echo(f"    {CpuWatch.describe(used)}")
    for name, xs in (("ticket", to_ticket), ("webhook", to_hook)):
        p = percentiles(xs)
        out.update({f"{name}_{k}_ms": v for k, v in p.items()})
        if p:
            echo(f"    publish → {name:7}  p50 {p['p50']:6.0f} ms   p95 {p['p95']:6.0f} ms   p99 {p['p99']:6.0f} ms"
                 f"   max {p['max']:6.0f} ms")
    if len(to_ticket) < n or len(to_hook) < n:
        echo(f"    MISSING: {n - len(to_ticket)} tickets and {n - len(to_hook)} webhooks did not arrive within "
             "120 s of the last alarm")
    return out, {"publish": sent, "ticket": tickets, "webhook": hooks}


def _spy(pid: int, path: Path):
    """py-spy on the worker while the alarms run under load (active samples only, per thread)."""
    import shutil
    import subprocess
    import sys

    spy_bin = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not spy_bin:
        return None
    spy = subprocess.Popen([spy_bin, "record", "--pid", str(pid), "--format", "raw", "--rate", str(SPY_RATE),
                            "--threads", "--nonblocking", "-o", str(path)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    spy.started = time.monotonic()  # type: ignore[attr-defined]
    return spy


def _spy_summary(spy, path: Path) -> str:
    """How busy the worker's event loop thread was (its share of wall-clock samples) and on what."""
    import signal

    from app.bench.worker import profile_summary

    wall = time.monotonic() - spy.started
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    spy.wait(30)
    if not path.exists():
        return "  (no profile written)"
    main = path.with_suffix(".main.txt")
    lines = [ln for ln in path.read_text().splitlines()  # a sample caught between frames has no ";"
             if ";" in ln and "MainThread" in ln.split(";", 1)[0]]
    main.write_text("\n".join(ln.split(";", 1)[1] for ln in lines))
    busy = sum(int(ln.rpartition(" ")[2]) for ln in lines) / max(SPY_RATE * wall, 1.0)
    return (f"  worker event-loop thread busy {100 * busy:.0f} % of {wall:.0f} s (py-spy active samples; {main}):\n"
            + profile_summary(main))


def bench_latency(load: int = 10_000, alarms: int = 200, alarms_per_s: float = 5.0, baseline_alarms: int = 50,
                  workers: int = 1, warmup_s: float = 5.0, profile: str | None = None, baseline_src: str | None = None,
                  echo=click.echo) -> dict:
    """With ``baseline_src`` (another source tree, e.g. ``git archive <commit>`` unpacked), the same scenario runs
    first with the worker of that tree, then with this one: a before/after on the same machine minutes apart."""
    from app.localstack import sitewatch_argv

    stop_on_sigterm()
    args = dict(load=load, alarms=alarms, alarms_per_s=alarms_per_s, baseline_alarms=baseline_alarms,
                workers=workers, warmup_s=warmup_s, echo=echo)
    if baseline_src is None:
        return _run(worker_argv=sitewatch_argv("worker"), profile=profile, **args)
    src = str(Path(baseline_src).resolve())
    boot = f"import sys, runpy; sys.path.insert(0, {src!r}); runpy.run_module('app', run_name='__main__')"
    echo(f"== baseline: the worker of {src}")
    before = _run(worker_argv=[sys.executable, "-c", boot, "worker"], profile=None, extra_env={"PYTHONPATH": src},
                  **args)
    echo("== this tree")
    out = _run(worker_argv=sitewatch_argv("worker"), profile=profile, **args)
    out["baseline"] = before
    echo("  same run, before → after:")
    for phase in ("idle", "load"):
        for what in ("ticket", "webhook"):
            b, a = before[phase], out[phase]
            echo(f"    {phase:4} publish → {what:7} p50 {b.get(f'{what}_p50_ms', float('nan')):6.0f} → "
                 f"{a.get(f'{what}_p50_ms', float('nan')):5.0f} ms   p99 {b.get(f'{what}_p99_ms', float('nan')):6.0f} → "
                 f"{a.get(f'{what}_p99_ms', float('nan')):5.0f} ms")
    return out


def _run(load: int, alarms: int, alarms_per_s: float, baseline_alarms: int, workers: int, warmup_s: float,
         worker_argv: list[str], profile: str | None, echo, extra_env: dict | None = None) -> dict:
    from app.localstack import LocalStack, ManagedProcess, free_port, sitewatch_argv
    from app.webhook_receiver import WebhookReceiver

    tmp = Path(tempfile.mkdtemp(prefix="sitewatch-bench-latency-"))
    stack = LocalStack(tmp, free_port(), free_port()).start()
    receiver = WebhookReceiver().start()
    rules = tmp / "bench-rules.yaml"
    rules.write_text(BENCH_RULES)
    db = tmp / "backlog.db"
    group = "sitewatch-bench-latency"
    env = {"SW_DATA_DIR": str(tmp), "SW_MQTT_PORT": str(stack.mqtt_port), "SW_KAFKA_BOOTSTRAP": stack.bootstrap,
           "SW_WEBHOOK_URL": receiver.url, "SW_WORKER_ID": group, "SW_RULES_PATH": str(rules),
           "SW_DB_URL": f"sqlite:///{db}", "SW_KAFKA_PARTITIONS": str(stack.partitions)}
    procs = [ManagedProcess("bridge", sitewatch_argv("bridge"), tmp / "logs" / "bridge.log", env).start()]
    for i in range(workers):
        wdir = tmp / f"worker-{i + 1}"
        wdir.mkdir()
        procs.append(ManagedProcess(f"worker-{i + 1}", worker_argv, tmp / "logs" / f"worker-{i + 1}.log",
                                    {**env, **(extra_env or {}), "SW_DATA_DIR": str(wdir)}).start())
        while i == 0 and "worker ready" not in procs[-1].tail(200) and procs[-1].running:
            time.sleep(0.2)  # the first worker migrates the backlog database; workers started together race on it
    flood: Flood | None = None
    out: dict = {"load_target_rps": load, "workers": workers, "partitions": stack.partitions}
    try:
        deadline = time.monotonic() + 120
        while not all("worker ready" in p.tail(200) for p in procs[1:]):
            if time.monotonic() > deadline or not all(p.running for p in procs):
                raise click.ClickException("worker did not start:\n" + "\n".join(p.tail() for p in procs))
            time.sleep(0.2)
        time.sleep(8 if workers > 1 else 1)  # let a multi-worker group finish its rebalances before timing
        echo(f"latency: publish → ticket / webhook of crane overloads, {workers} worker(s), {stack.partitions} "
             f"partitions, logs in {tmp}/logs")
        from types import SimpleNamespace

        me = SimpleNamespace(name="bench (flood + alarms)", proc=SimpleNamespace(pid=os.getpid()))
        cpu = CpuWatch([*stack.procs, *procs, me])
        out["idle"], idle_marks = _measure("idle pipeline (baseline)", stack.mqtt_port, db, receiver, "idle",
                                           baseline_alarms, alarms_per_s, echo, cpu)
        flood = Flood(stack.mqtt_port, load)
        flood.start()
        time.sleep(warmup_s)
        lag = GroupLag(stack.bootstrap, group, (TOPIC_RAW, TOPIC_READINGS))
        lag_before = lag()
        spy = _spy(procs[1].proc.pid, Path(profile)) if profile else None
        out["load"], load_marks = _measure(f"under {load:,} readings/s", stack.mqtt_port, db, receiver, "lat",
                                           alarms, alarms_per_s, echo, cpu)
        lag_after = lag()
        if spy is not None:
            echo(_spy_summary(spy, Path(profile)))
        flood.stop.set()
        flood.join(10)
        lag.close()
        out["load_achieved_rps"] = flood.achieved_rps
        out["group_lag_records"] = [lag_before, lag_after]
        echo(f"  background load published: {flood.achieved_rps:,.0f} readings/s ({flood.behind_ticks} ticks late); "
             f"consumer-group lag on sw.raw + sw.readings {lag_before} → {lag_after} records during the alarms")
        marks = scan_topics(stack.bootstrap, ("idle", "lat"))
        for key, label, m in (("idle", "idle", idle_marks), ("load", f"{load:,} readings/s", load_marks)):
            out[key]["hops"] = hop_table(m["publish"], {**marks, **m}, echo, label)
        p99 = out["load"].get("webhook_p99_ms")
        complete = out["load"]["webhooks"] == alarms and out["load"]["tickets"] == alarms
        met = bool(p99 is not None and p99 < GOAL_P99_MS and complete
                   and flood.achieved_rps >= 0.95 * load)
        out["goal_p99_under_1s_met"] = met
        echo(f"  goal: publish → webhook p99 < {GOAL_P99_MS:.0f} ms at {load:,} readings/s: "
             + ("met" if met else "NOT met") + (f" (p99 {p99:.0f} ms)" if p99 is not None else ""))
    finally:
        if flood is not None:
            flood.stop.set()
        for p in reversed(procs):
            p.stop()
        stack.stop()
        receiver.stop()
    return out
