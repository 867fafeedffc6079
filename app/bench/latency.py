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
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import click

from app.bench.pipeline import GroupLag, stop_on_sigterm
from sitewatch.contracts import TOPIC_RAW, TOPIC_READINGS, gateway_topic, reading_topic

BENCH_RULES = "version: 1\nfaults:\n  silent_after_intervals: 1000000\n"  # the flood stops at the end: no deadman
CRANES_PER_SITE = 25
CRANE = (("load", "t", 2.0), ("moment", "%", 20.0), ("wind", "m/s", 3.0), ("tilt", "deg", 0.1))
READINGS_PER_FRAME = CRANES_PER_SITE * len(CRANE)
TICKS_PER_S = 10
GOAL_P99_MS = 1000.0


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


def _measure(label: str, port: int, db: Path, receiver, prefix: str, n: int, per_s: float, echo) -> dict:
    sent = _inject(port, prefix, n, per_s)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        tickets, hooks = _outbox_times(db, prefix), _webhook_times(receiver, prefix)
        if len(tickets) >= n and len(hooks) >= n:
            break
        time.sleep(0.5)
    tickets, hooks = _outbox_times(db, prefix), _webhook_times(receiver, prefix)
    to_ticket = [tickets[s] - ts for s, ts in sent.items() if s in tickets]
    to_hook = [hooks[s] - ts for s, ts in sent.items() if s in hooks]
    out = {"alarms": n, "tickets": len(to_ticket), "webhooks": len(to_hook)}
    echo(f"  {label}: {n} overloads at {per_s:g}/s → {len(to_ticket)} tickets, {len(to_hook)} webhooks")
    for name, xs in (("ticket", to_ticket), ("webhook", to_hook)):
        p = percentiles(xs)
        out.update({f"{name}_{k}_ms": v for k, v in p.items()})
        if p:
            echo(f"    publish → {name:7}  p50 {p['p50']:6.0f} ms   p95 {p['p95']:6.0f} ms   p99 {p['p99']:6.0f} ms"
                 f"   max {p['max']:6.0f} ms")
    if len(to_ticket) < n or len(to_hook) < n:
        echo(f"    MISSING: {n - len(to_ticket)} tickets and {n - len(to_hook)} webhooks did not arrive within "
             "120 s of the last alarm")
    return out


def bench_latency(load: int = 10_000, alarms: int = 200, alarms_per_s: float = 5.0, baseline_alarms: int = 50,
                  workers: int = 1, warmup_s: float = 5.0, echo=click.echo) -> dict:
    from app.localstack import LocalStack, ManagedProcess, free_port, sitewatch_argv
    from app.webhook_receiver import WebhookReceiver

    stop_on_sigterm()
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
        procs.append(ManagedProcess(f"worker-{i + 1}", sitewatch_argv("worker"), tmp / "logs" / f"worker-{i + 1}.log",
                                    {**env, "SW_DATA_DIR": str(wdir)}).start())
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
        out["idle"] = _measure("idle pipeline (baseline)", stack.mqtt_port, db, receiver, "idle", baseline_alarms,
                               alarms_per_s, echo)
        flood = Flood(stack.mqtt_port, load)
        flood.start()
        time.sleep(warmup_s)
        lag = GroupLag(stack.bootstrap, group, (TOPIC_RAW, TOPIC_READINGS))
        lag_before = lag()
        out["load"] = _measure(f"under {load:,} readings/s", stack.mqtt_port, db, receiver, "lat", alarms,
                               alarms_per_s, echo)
        lag_after = lag()
        flood.stop.set()
        flood.join(10)
        lag.close()
        out["load_achieved_rps"] = flood.achieved_rps
        out["group_lag_records"] = [lag_before, lag_after]
        echo(f"  background load published: {flood.achieved_rps:,.0f} readings/s ({flood.behind_ticks} ticks late); "
             f"consumer-group lag on sw.raw + sw.readings {lag_before} → {lag_after} records during the alarms")
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
