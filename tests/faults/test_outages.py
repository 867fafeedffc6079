"""Outages of what the pipeline depends on, one after the other on one stack, each while a fleet streams readings
with overloads inside them: Kafka unreachable, PostgreSQL (the backlog and delivery log) stopped, InfluxDB
stopped, the webhook receiver answering 500. After each recovery: every reading the MQTT broker acknowledged is in
``sw.readings`` and in InfluxDB, one ticket per overload, and every alert delivered at least once.

Kafka here is Tansu with in-memory storage: restarting it would forget every topic, so "Kafka down" is the broker
frozen with SIGSTOP for the duration and resumed with SIGCONT — to its clients exactly a network partition (no
answers, timeouts). Durability across a real broker restart is Apache Kafka's job in production (replication 3,
min.insync.replicas 2, acks=all), not something a local memory broker can show.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from app.localstack import LocalStack, ManagedProcess, free_port, sitewatch_argv
from app.webhook_receiver import WebhookReceiver
from backlog.store import Backlog
from tests.backlog.conftest import PG_BIN, PgServer
from tests.conftest import Pipeline, wait_until
from tests.sinks.conftest import Influx, stored_readings

from .conftest import (FULL, Fleet, ReadingsWatcher, false_silences, fault_row, seconds, ticket_counts,
                       ticket_story, tickets_unannounced, wait_alerts_delivered)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600 if FULL else 600)]

KAFKA_DOWN_S = seconds(10, 120)
PG_DOWN_S = seconds(8, 60)
INFLUX_DOWN_S = seconds(8, 120)
WEBHOOK_500_S = seconds(8, 30)
AROUND_S = seconds(6, 20)  # stream before and after the fault
# `make faults ARGS=...` with SW_FAULTS_OUTAGES=kafka,influx runs only those (default: all four, in this order)
OUTAGES = os.environ.get("SW_FAULTS_OUTAGES", "kafka,postgres,influx,webhook").split(",")
SETTLE_S = seconds(15, 30)  # the deadman's wait after the worker starts and after Kafka answers again
RATE = 1000.0  # readings/s while the fault lasts; the backlog of an outage drains at the pipeline's own speed


class Postgres(PgServer):
    """The test PostgreSQL of tests/backlog, stopped and started again on the same data directory."""

    def down(self) -> None:
        r = self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        assert r.returncode == 0, r.stderr

    def up(self) -> None:
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        r = self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-o", opts, "-l", str(self.dir / "pg.log"),
                      "-w", "-t", "30", "start")
        assert r.returncode == 0, r.stderr


@pytest.fixture
def rig(tmp_path: Path):
    """Mosquitto + Tansu + InfluxDB + PostgreSQL, the bridge, the worker (backlog on PostgreSQL) and the sink."""
    stack = LocalStack(tmp_path / "stack", free_port(), free_port(), partitions=4).start()
    pg = Postgres().start()
    influx = Influx(free_port(), tmp_path / "influx", None)  # type: ignore[arg-type]
    receiver = WebhookReceiver(secret="test-secret").start()
    procs: list[ManagedProcess] = []
    pipe = None
    try:
        with pg.admin() as c:
            c.execute('CREATE DATABASE "faults"')
        influx.start()
        pipe = Pipeline(stack, tmp_path / "data", receiver, pg.url("faults"))
        # Cranes report every 100 ms here; a silence floor far below the Kafka outage makes every device look
        # silent while Kafka is away — unless the deadman knows better (streams/input_watch.py). It must stay
        # above the worker's own stalls on a loaded machine: 3 s was, once, not (full run, 2 cores at load 6).
        pipe.rules_path = tmp_path / "rules.yaml"
        pipe.rules_path.write_text(f"families:\n  crane:\n    silent_floor: {seconds(6, 20):.0f}s\n")
        # The short outage must outlast the bridge's delivery timeout too: expired writes are the path that once
        # left the bridge up but writing nothing (kafka-python's idempotent producer, ingest/bridge.py).
        pipe.extra_env["SW_BRIDGE_DELIVERY_TIMEOUT_S"] = str(seconds(KAFKA_DOWN_S / 3, 120))
        pipe.extra_env["SW_DEADMAN_SETTLE_S"] = str(SETTLE_S)
        pipe.start_bridge()
        pipe.start_worker()
        sink_env = {"SW_KAFKA_BOOTSTRAP": stack.bootstrap, "SW_INFLUX_URL": influx.url,
                    "SW_DATA_DIR": str(tmp_path / "sink"), "SW_SINK_LINGER_S": "0.2"}
        sink = ManagedProcess("sink", sitewatch_argv("sink", "run"), tmp_path / "data" / "logs" / "sink.log", sink_env)
        procs.append(sink.start())
        pipe.procs["sink"] = sink
        yield pipe, pg, influx
    finally:
        if pipe is not None:
            print(pipe.logs())
            pipe.stop()
        receiver.stop()
        if influx.proc is not None:
            influx.proc.stop()
        pg.stop()
        stack.stop()


def tansu(pipe: Pipeline) -> ManagedProcess:
    return next(p for p in pipe.stack.procs if p.name == "tansu")


def alive(pipe: Pipeline, during: str) -> None:
    """Checked before waiting for the drain: a dead process would only make every later wait run out."""
    for name in ("bridge", "worker", "sink"):
        p = pipe.procs[name]
        assert p.running, f"the {name} died during {during}: " + " | ".join(
            line for line in p.tail(60).splitlines() if "Error" in line)[-300:]


def check(pipe: Pipeline, influx: Influx, watcher: ReadingsWatcher, fleet: Fleet, row: dict,
          drain_s: float, recovered: float) -> None:
    """The figures of one outage after recovery, asserted: nothing acknowledged lost, one ticket per overload,
    every alert delivered (duplicate deliveries counted, not failed). ``recovered``: time.monotonic() when the
    fault ended; how long the backlog took to drain from then is reported."""
    acked = fleet.acknowledged()
    row.update(published=fleet.published(), acked=len(acked))
    missing = watcher.wait_for(acked, drain_s)
    row["lost"] = len(missing)
    assert not missing, f"{len(missing)} acknowledged readings never reached sw.readings, e.g. {sorted(missing)[:5]}"
    sites = fleet.sites_ids
    where = "WHERE " + " OR ".join(f"site = '{s}'" for s in sites)
    want_points = {(s, d, "load", ts) for s, d, ts in acked}
    stored: set = set()

    def all_stored():
        stored.clear()
        stored.update(stored_readings(influx, where))
        return want_points <= stored

    try:
        wait_until(all_stored, drain_s, "the fleet's readings in InfluxDB", interval=2.0)
    except AssertionError:
        pass
    row.update(influx_stored=len(stored & want_points), influx_lost=len(want_points - stored))
    backlog = Backlog(pipe.db_url, create=False)
    try:
        wait_until(lambda: fleet.hazard_keys <= ticket_counts(backlog, sites)[2], drain_s, "a ticket per overload")
    except AssertionError:
        pass
    queued, got = wait_alerts_delivered(backlog, pipe.receiver, sites, drain_s)
    n, dups, keys = ticket_counts(backlog, sites)
    story = ticket_story(backlog, sites) if dups or keys - fleet.hazard_keys else ""
    print(story)
    row.update(tickets=n, duplicate_tickets=dups, alerts=len(queued), alerts_delivered=len(queued & set(got)),
               duplicate_deliveries=sum(c - 1 for c in got.values()))
    false = false_silences(backlog, fleet)
    silent: list[str] = []

    def all_announced():  # a ticket opened a moment ago may have its alert on the way
        silent[:] = tickets_unannounced(backlog, pipe.receiver, sites)
        return not silent

    try:
        wait_until(all_announced, 30, "an alert for every ticket")
    except AssertionError:
        pass
    backlog.engine.dispose()
    row["drained_s"] = round(time.monotonic() - recovered)
    assert not silent, f"tickets without any alert: {silent}"
    assert not false, f"{len(false)} devices called silent while they reported, e.g. {false[:3]}"
    assert row["influx_lost"] == 0, f"{row['influx_lost']} readings missing from InfluxDB"
    assert fleet.hazard_keys <= keys, f"no ticket for {sorted(fleet.hazard_keys - keys)}"
    assert dups == 0, f"{dups} duplicate tickets\n{story}"
    assert queued and queued <= set(got), f"alerts never delivered: {sorted(queued - set(got))}"


def outage(pipe: Pipeline, influx: Influx, watcher: ReadingsWatcher, prefix: str, down_s: float, fault: str,
           done: str, stop, start, at: float = 0.3) -> dict:
    """One outage while a fleet streams: ``stop()`` at ``at`` of the stream, ``start()`` ``down_s`` later, then
    the fleet's figures checked after recovery. Returns the table row."""
    fleet = Fleet(prefix, readings=int(RATE * (down_s + AROUND_S)), rate=RATE).start(pipe.stack.mqtt_port)
    with fault_row(fault, done) as row:
        fleet.wait_progress(at)
        stop()
        try:
            time.sleep(down_s)
        finally:
            start()
            recovered = time.monotonic()
        fleet.join()
        alive(pipe, f"the outage '{fault}'")
        check(pipe, influx, watcher, fleet, row, seconds(120, 600), recovered)
    return row


def test_outages_lose_nothing_and_the_backlog_drains(rig):
    pipe, pg, influx = rig
    watcher = ReadingsWatcher(pipe.stack.bootstrap)
    try:
        if "kafka" in OUTAGES:
            time.sleep(SETTLE_S + 3)  # the worker's start-up pause is over: the outage's must hold on its own
            broker = tansu(pipe).proc.pid
            outage(pipe, influx, watcher, "fk", KAFKA_DOWN_S, "Kafka broker unreachable",
                   f"Tansu frozen (SIGSTOP) {KAFKA_DOWN_S:.0f} s mid-stream, then SIGCONT: a network partition; a "
                   "memory broker cannot be restarted without losing its topics",
                   lambda: os.kill(broker, signal.SIGSTOP), lambda: os.kill(broker, signal.SIGCONT))

        if "postgres" in OUTAGES:
            outage(pipe, influx, watcher, "fp", PG_DOWN_S, "PostgreSQL down (backlog + delivery log)",
                   f"`pg_ctl stop -m fast` {PG_DOWN_S:.0f} s mid-stream, then started again", pg.down, pg.up)
            log = "\n".join(Path(p).read_text(errors="replace") for p in
                            sorted((pipe.data_dir / "logs").glob("worker-*.log")))
            assert "backlog database unavailable" in log, "the worker should have said it was waiting for the DB"

        if "influx" in OUTAGES:
            outage(pipe, influx, watcher, "fi", INFLUX_DOWN_S, "InfluxDB down",
                   f"influxd stopped {INFLUX_DOWN_S:.0f} s mid-stream, then started again (the sink keeps its "
                   "offsets until InfluxDB acknowledged)", influx.proc.stop, influx.start)

        if "webhook" in OUTAGES:
            refused = pipe.receiver.refused
            row = outage(pipe, influx, watcher, "fw", WEBHOOK_500_S, "Webhook receiver failing",
                         f"receiver answers 500 to everything for {WEBHOOK_500_S:.0f} s while overloads alert",
                         lambda: pipe.receiver.fail_for(WEBHOOK_500_S), lambda: None, at=0.2)
            row["done"] += f" ({pipe.receiver.refused - refused} requests refused)"
            assert pipe.receiver.refused > refused, "the outage should have refused some delivery"
    finally:
        watcher.close()
