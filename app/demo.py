"""``sitewatch demo``: the whole pipeline on one machine, narrated.

Starts the brokers (in-process children), the bridge and the worker (as ``sitewatch`` child processes, the
way they run in production), a local webhook receiver and the simulator; then prints the readings rate and
every ticket as it opens or escalates, and every webhook alert with its MQTT-publish → webhook latency.

Next to the clean simulated sites it runs a *field* site (``ingest.fieldstreams.demo_stream``: the ``field-mix``
shape compressed into minutes, on the wall clock): at ~40 s gateway gw-02 drops off 4G with a crane overload
inside its outage, and flushes its buffer at ~90 s — reverse order, one frame twice — so a back-dated alarm
shows up late; at ~160 s gateway gw-01 with 30 devices goes offline for a minute — one gateway fault, not thirty
silent sensors. A line is printed as each is injected so a watcher knows what to look for.

The command service runs too (its key made in the demo's data dir), and the simulated gateways verify and act on
signed commands: the demo prints how to request one from another terminal, and each device ack as it arrives.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sitewatch.contracts import TOPIC_READINGS
from app.localstack import (LocalStack, ManagedProcess, StackError, free_port, sitewatch_argv, stop_pipeline,
                            wait_for_port)
from sitewatch.settings import Settings
from app.webhook_receiver import Received, WebhookReceiver


class ReadingsCounter(threading.Thread):
    """Counts readings on ``sw.readings`` (what the worker validated) with its own consumer group."""

    def __init__(self, bootstrap: str):
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.count = 0
        self.stop = threading.Event()

    def run(self) -> None:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(
            TOPIC_READINGS, bootstrap_servers=self.bootstrap, group_id=None, auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        try:
            while not self.stop.is_set():
                for records in consumer.poll(timeout_ms=500).values():
                    for r in records:
                        rec = json.loads(r.value)
                        if rec.get("type", "readings") == "readings":  # not a gateway / device status record
                            self.count += len(rec["ts"])
        finally:
            consumer.close()


@dataclass
class Demo:
    settings: Settings
    scenario: str = "crane-overload"
    at_s: float = 20.0
    sites: int = 3
    devices: int = 2
    interval: float = 1.0
    webhook_url: str | None = None
    influx_port: int | None = 8086  # None: no time-series database / sink in this demo
    with_field_site: bool = True  # also run the field site (late flush + gateway outage, see the module docstring)
    field_site: str = "fd-0001"
    echo: Callable[[str], None] = print
    ticket_line: Callable = str
    latencies_ms: list[int] = field(default_factory=list)

    def _on_alert(self, rec: Received) -> None:
        lat = rec.at_ms - int(rec.body.get("reading_ts", rec.at_ms))
        t = rec.body["ticket"]
        if not t.get("late") and t["kind"] != "fault.gateway_offline":  # those measure buffering / keep-alive
            self.latencies_ms.append(lat)
        level = ("clear", "yellow", "orange", "red")[int(t.get("peak_level") or 0)].upper()
        peak = t.get("peak_value", t["value"])
        if t.get("late"):  # back-dated: the latency is the gateway's buffering, not the pipeline's
            when = time.strftime("%H:%M:%S", time.localtime((t.get("first_breach_ms") or t["opened_ms"]) / 1000))
            self.echo(f"  ➜ WEBHOOK alert {rec.body['alert_id']}: LATE {level} {t['kind']} at {t['site']}/{t['device']}"
                      f" — happened at {when} during a gateway outage, peak {t['metric']}={peak:.2f}; the data "
                      f"arrived {t.get('arrival_delay_s') or 0:.0f} s late")
            return
        self.echo(f"  ➜ WEBHOOK alert {rec.body['alert_id']}: {level} {t['kind']} at "
                  f"{t['site']}/{t['device']} ({t['metric']}={peak:.2f}) — {lat} ms after the MQTT publish")

    def _start_field(self, s: Settings, stop: threading.Event) -> threading.Thread:
        """The field site, published on the wall clock (speed 1) with its cues echoed as they happen."""
        from ingest.fieldstreams import demo_stream, publish_scenario
        from sitewatch.contracts import now_ms

        fs = demo_stream(now_ms(), site=self.field_site)
        m = fs.manifest
        gws = ", ".join(f"{k.split('/')[1]} ({len(v)} devices)" for k, v in m.topology.items())
        self.echo(f"▶ field site {self.field_site}: gateways {gws}; within ~4 minutes: a buffered 4G outage with a "
                  "crane overload inside (→ a late, back-dated alarm) and a gateway outage (→ one gateway fault)")

        def cue(text: str) -> None:
            self.echo(f"  ▶ injected [{self.field_site}]: {text}")

        def run() -> None:
            try:
                publish_scenario(s.mqtt_host, s.mqtt_port, fs.events, speed=1.0, stop=stop, cues=m.cues, on_cue=cue,
                                 client_id=f"sitewatch-demo-field-{self.field_site}", username=s.mqtt_username,
                                 password=s.mqtt_password)
            except Exception as e:  # the demo goes on without its field site; say why
                self.echo(f"  ! field site stopped: {e}")

        t = threading.Thread(target=run, daemon=True, name="field-site")
        t.start()
        return t

    def run(self, stop: threading.Event, duration: float | None = None) -> None:
        from backlog.store import Backlog
        from ingest.simulator import SimConfig, Simulator, describe_scenario

        s = self.settings
        kafka_port = int(s.kafka_bootstrap.rsplit(":", 1)[1])
        stack = LocalStack(s.data_dir, s.mqtt_port, kafka_port, s.kafka_partitions, influx_port=self.influx_port,
                           commands=True, db_url=s.backlog_url)
        receiver = None if self.webhook_url else WebhookReceiver(on_alert=self._on_alert).start()
        url = self.webhook_url or receiver.url
        env = {"SW_DATA_DIR": str(s.data_dir), "SW_MQTT_PORT": str(s.mqtt_port), "SW_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
               "SW_WEBHOOK_URL": url, "SW_DB_URL": s.backlog_url}
        if self.influx_port is not None:
            env["SW_INFLUX_URL"] = f"http://127.0.0.1:{self.influx_port}"
        procs: list[ManagedProcess] = []
        counter = ReadingsCounter(stack.bootstrap)
        sim_stop = threading.Event()
        try:
            self.echo(f"▶ starting MQTT broker on :{s.mqtt_port} and Kafka-compatible broker (Tansu) on :{kafka_port}"
                      + (f", InfluxDB on :{self.influx_port}" if self.influx_port is not None else ""))
            stack.start()
            self.echo("▶ starting bridge and Faust worker (logs in %s)" % s.log_dir)
            bridge = ManagedProcess("bridge", sitewatch_argv("bridge"), s.log_dir / "bridge.log", env)
            worker = ManagedProcess("worker", sitewatch_argv("worker"), s.log_dir / "worker.log", env)
            procs += [bridge.start(), worker.start()]
            if self.influx_port is not None:
                procs.append(ManagedProcess("sink", sitewatch_argv("sink", "run"), s.log_dir / "sink.log", env).start())
                self.echo(f"▶ readings and hazards → InfluxDB database 'sitewatch' at {env['SW_INFLUX_URL']} "
                          "(Grafana: docs/dashboards.md)")
            counter.start()
            sim = Simulator(SimConfig(self.sites, self.devices, self.interval, self.scenario, self.at_s,
                                      command_key=str(stack.command_public_key)))
            self.echo(f"▶ simulating {self.sites} sites, {len(sim.rows) / self.interval:.0f} readings/s; "
                      f"scenario: {describe_scenario(self.scenario, self.at_s)}")
            self.echo(f"▶ alerts go to {url}\n")
            sim_thread = threading.Thread(target=sim.run, args=(s.mqtt_host, s.mqtt_port, None, sim_stop), daemon=True)
            sim_thread.start()
            if self.with_field_site:
                self._start_field(s, sim_stop)
            backlog = Backlog(s.backlog_url)
            procs.append(start_wall(backlog, env, s.log_dir, self.echo))  # the wall page, its URL printed
            self._command_hint(s, sim)
            acks_seen: dict[str, int] = {}
            seen: dict[int, int] = {}
            t0 = last = time.monotonic()
            last_count = 0
            while not stop.wait(1.0):
                for p in procs + stack.procs:
                    if not p.running:
                        raise StackError(f"{p.name} exited unexpectedly; last log lines:\n{p.tail()}")
                for t in backlog.tickets():
                    if seen.get(t.id) != t.peak_level:
                        verb = "OPENED  " if t.id not in seen else "ESCALATED"
                        self.echo(f"  ● ticket {verb} " + self.ticket_line(t))
                        seen[t.id] = t.peak_level
                acks_seen = self._print_acks(sim, acks_seen)
                now = time.monotonic()
                if now - last >= 5:
                    rate = (counter.count - last_count) / (now - last)
                    self.echo(f"[{now - t0:5.0f} s] readings/s {rate:7.0f} | total {counter.count} | "
                              f"tickets {len(seen)} | alerts delivered {len(self.latencies_ms)}")
                    last, last_count = now, counter.count
                if duration is not None and now - t0 >= duration:
                    break
        finally:
            sim_stop.set()
            counter.stop.set()
            # bridge first, the worker drains Kafka (in memory) and snapshots its detector state, then the rest
            stop_pipeline([p for p in procs if p.name == "bridge"], [p for p in procs if p.name == "worker"],
                          [p for p in procs if p.name not in ("bridge", "worker")], stack, group=s.worker_id,
                          echo=self.echo)
            if receiver:
                receiver.stop()
            if self.latencies_ms:
                lat = sorted(self.latencies_ms)
                self.echo(f"\npublish → webhook latency: min {lat[0]} ms, median {lat[len(lat) // 2]} ms, "
                          f"max {lat[-1]} ms over {len(lat)} alerts")
            self.echo("stopped. `sitewatch --data-dir %s tickets --events` shows the backlog." % s.data_dir)

    def _command_hint(self, s: Settings, sim) -> None:
        """How to act on a simulated device from another terminal (the demo org's users; cut_power needs two)."""
        site, dd = sim.site_ids[0], f"--data-dir {s.data_dir}"
        self.echo(f"▶ COMMANDS: the command service signs, the simulated gateways verify and act. In another terminal:\n"
                  f"    sitewatch {dd} command request --as zhao.manager --site {site} --device bc-01 --action cut_power\n"
                  f"    sitewatch {dd} command approve <id printed above> --as sun.supervisor\n"
                  f"  → the device acks here, and {site}/bc-01's charge_current reads 0 from then on "
                  f"(`sitewatch {dd} command list --events`)")

    def _print_acks(self, sim, seen: dict[str, int]) -> dict[str, int]:
        """Each device ack not printed yet (``seen``: acks printed per site)."""
        for site, ep in sim.endpoints.items():
            acks, applied = list(ep.acks), {cid: act for cid, _, act in list(ep.applied)}
            for a in acks[seen.get(site, 0):]:
                self.echo(f"  ⚡ device {a.site}/{a.device} {applied.get(a.command_id, '')} {a.status.upper()}"
                          + (f" ({a.reason})" if a.reason else "") + f" — command {a.command_id}")
            seen[site] = len(acks)
        return seen

DEMO_ORG = Path(__file__).resolve().parents[1] / "backlog" / "fixtures" / "demo_org.yaml"


def start_wall(backlog, env: dict[str, str], log_dir: Path, echo: Callable[[str], None], port: int = 8700):
    """Import the demo organisation, start ``sitewatch api serve`` on the demo's backlog and print the wall page's
    login link (the supervisor's view of every site). Returns the managed API process."""
    import secrets
    import socket

    from backlog import orgs
    from backlog.api.wall import ENV_SECRET, login_link

    orgs.import_org(backlog, DEMO_ORG, actor="demo")
    token = orgs.create_token(backlog, "sun.supervisor", "demo wall screen", actor="demo")
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", port)) == 0:  # something already listens there
            port = free_port()
    secret = env.get(ENV_SECRET) or secrets.token_urlsafe(32)
    proc = ManagedProcess("api", sitewatch_argv("api", "serve", "--port", str(port)), log_dir / "api.log",
                          {**env, ENV_SECRET: secret}).start()
    wait_for_port("127.0.0.1", port, 30, proc.proc, "the API")
    base = f"http://127.0.0.1:{port}"
    token_file = log_dir.parent / "wall-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    echo(f"▶ WALL SCREEN (open in a browser; hazards appear live): {login_link(base, token, secret)}")
    echo(f"  link valid 1 h; afterwards log in at {base}/wall with the token in {token_file} · API docs {base}/docs")
    return proc
