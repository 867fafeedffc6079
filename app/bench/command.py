"""``bench command``: how long a person waits between asking for a command and the device's answer, beside what the
broker alone costs for the same hops.

On the local MQTT broker: the real ``sitewatch command serve`` (a child process with the data dir's key, its
default polling interval unless ``--tick``), the demo organisation, and a simulated gateway (``ingest.device``)
in this process. Each command is a dangerous ``cut_power`` / ``restore_power`` (alternating) on one charger:
requested by one account and approved by a second, as the ledger's CLI does — then timed

- request → device done: the gateway has verified, acted and published its ``done`` ack;
- request → ledger done: the service has applied that ack (what ``command list`` / the API show).

Baseline, in the same run and on the same broker: a plain QoS 1 round trip — publish, a second client receives
and publishes back, the first receives — the same two broker hops as command out and ack back, without
signing, verifying, the ledger or the service's polling. Commands run one after the other.
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import click

SITE, DEVICE = "cz-0001", "bc-01"


def _pcts(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    return {"p50_ms": statistics.median(s), "p95_ms": s[min(len(s) - 1, round(0.95 * (len(s) - 1)))],
            "max_ms": s[-1], "n": len(s)}


def _line(p: dict[str, float]) -> str:
    return f"p50 {p['p50_ms']:7.1f}  p95 {p['p95_ms']:7.1f}  max {p['max_ms']:7.1f} ms  (n={p['n']})"


def mqtt_round_trip(port: int, rounds: int) -> list[float]:
    """Milliseconds per QoS 1 publish → echo → receive over ``port``."""
    from ingest.device import connect

    got = threading.Event()
    a = connect("127.0.0.1", port, f"bench-rtt-a-{time.monotonic_ns()}")
    b = connect("127.0.0.1", port, f"bench-rtt-b-{time.monotonic_ns()}")
    try:
        b.on_message = lambda c, _u, m: c.publish("bench/rtt/back", m.payload, qos=1)
        a.on_message = lambda _c, _u, _m: got.set()
        for c, topic in ((b, "bench/rtt/out"), (a, "bench/rtt/back")):
            c.subscribe(topic, qos=1)
        time.sleep(0.3)  # subscriptions in place
        out = []
        for i in range(rounds + 3):
            got.clear()
            t0 = time.perf_counter()
            a.publish("bench/rtt/out", str(i).encode(), qos=1)
            if not got.wait(5):
                raise click.ClickException("MQTT round trip lost a message")
            if i >= 3:  # the first few warm the connections up
                out.append(1000 * (time.perf_counter() - t0))
        return out
    finally:
        for c in (a, b):
            c.loop_stop()
            c.disconnect()


def bench_command(commands: int = 50, tick_s: float | None = None, rtt_rounds: int = 200,
                  echo=click.echo) -> dict:
    from app.bench.pipeline import stop_on_sigterm
    from app.localstack import ensure_command_key, start_command_service, start_mqtt, free_port
    from backlog import orgs
    from backlog.store import Backlog
    from commands.ledger import Ledger
    from ingest.device import CommandEndpoint, connect
    from sitewatch import commands as wire

    stop_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="sitewatch-bench-command-"))
    port = free_port()
    db_url = f"sqlite:///{tmp / 'backlog.db'}"
    demo_org = Path(__file__).resolve().parents[2] / "backlog" / "fixtures" / "demo_org.yaml"
    procs, clients = [], []
    try:
        procs.append(start_mqtt(port, tmp))
        backlog = Backlog(db_url)
        orgs.import_org(backlog, demo_org, actor="bench")
        ledger = Ledger(backlog)
        _, pub = ensure_command_key(tmp)
        env = {"SW_DATA_DIR": str(tmp), "SW_MQTT_PORT": str(port), "SW_DB_URL": db_url}
        procs.append(start_command_service(tmp, env, tick_s))
        done_at: dict[str, float] = {}

        class TimedEndpoint(CommandEndpoint):
            def _on_message(self, client, userdata, msg) -> None:
                super()._on_message(client, userdata, msg)
                for a in self.acks[-2:]:
                    if a.status == "done":
                        done_at.setdefault(a.command_id, time.perf_counter())

        device = TimedEndpoint(SITE, "gw-01", wire.load_public_key(pub))
        gw = connect("127.0.0.1", port, f"bench-gw-{time.monotonic_ns()}")
        clients.append(gw)
        device.attach(gw)
        time.sleep(0.5)  # the gateway's and the service's subscriptions in place
        requester, approver = (orgs.actor_by_name(backlog, n) for n in ("zhao.manager", "sun.supervisor"))
        tick = tick_s if tick_s is not None else "0.5 (its default)"
        echo(f"command latency: {commands} dangerous commands (request + a second approval) through "
             f"`sitewatch command serve` (tick {tick} s) to a simulated gateway on the local MQTT broker, "
             f"one after the other")
        to_device, to_ledger = [], []
        rng = random.Random(7)
        for i in range(commands + 2):
            action = "cut_power" if i % 2 == 0 else "restore_power"
            # A person asks at any moment, not just after the service's previous round: without this pause the
            # loop locks onto the service's polling phase and every command waits exactly one interval.
            time.sleep(rng.uniform(0, tick_s or 0.5))
            t0 = time.perf_counter()
            cid = ledger.request(requester, site=SITE, device=DEVICE, action=action)["id"]
            ledger.approve(cid, approver)
            deadline = time.monotonic() + 30
            while ledger.get(cid)["state"] != "done":
                if time.monotonic() > deadline:
                    raise click.ClickException(f"command {cid} not done after 30 s: {ledger.get(cid)['state']}\n"
                                               + procs[-1].tail(20))
                time.sleep(0.005)
            t_ledger = time.perf_counter()
            if i >= 2:  # two warm-up commands (connections, statements)
                to_device.append(1000 * (done_at[cid] - t0))
                to_ledger.append(1000 * (t_ledger - t0))
        rtt = mqtt_round_trip(port, rtt_rounds)
        acted = len(device.applied)
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    dev, led, base = _pcts(to_device), _pcts(to_ledger), _pcts(rtt)
    echo(f"  request → device acted + done ack  {_line(dev)}")
    echo(f"  request → ledger 'done'            {_line(led)}")
    echo(f"  baseline: MQTT QoS 1 round trip     {_line(base)}  (publish → echo → receive, same broker, same run)")
    echo(f"  the device acted {acted} times for {commands + 2} commands; the service's polling interval, not the "
         f"broker, is most of the wait (issue 14's bar: acknowledged within 2 s locally: "
         f"{'met' if led['max_ms'] < 2000 else 'NOT met'} at the max)")
    return {"commands": commands, "tick_s": tick_s, "to_device": dev, "to_ledger": led, "mqtt_rtt": base,
            "acted": acted, "within_2s": led["max_ms"] < 2000}


@click.command("command")
@click.option("--commands", default=50, show_default=True, help="commands to time")
@click.option("--tick", type=float, default=None, help="the service's polling interval (default: its own, 0.5 s)")
def command_cmd(commands, tick):
    """Request → device ack latency of commands (two-person rule, signed, the real service) vs an MQTT round trip."""
    bench_command(commands, tick)
