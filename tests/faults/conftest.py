"""The fault suite's tools: a sensor fleet that remembers which readings the MQTT broker acknowledged, a watcher
that collects what reached ``sw.readings``, the accounting of tickets and deliveries, and the summary table.

Short by default (CI); ``SW_FAULTS_FULL=1`` (``make faults``) switches to the issue's durations and volumes.
The table is written to ``.sitewatch/faults/summary.{json,md}`` (or ``$SW_FAULTS_SUMMARY``) and printed at the end
of the run; ``SW_FAULTS_README=1`` also puts it into README.md between the ``faults`` markers.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from sitewatch.contracts import TOPIC_READINGS, gateway_topic, now_ms, reading_topic, unpack_readings
from tests.faults import report

FULL = os.environ.get("SW_FAULTS_FULL") == "1"
REPO = Path(__file__).resolve().parents[2]


def seconds(short: float, full: float) -> float:
    return full if FULL else short


# ------------------------------------------------------------------------------------------------ the fleet
@dataclass
class Fleet:
    """``sites`` × ``cranes`` tower cranes reporting their load every ``step_ms`` (event time), published at
    ``rate`` readings/s, so timestamps follow the wall clock. Even sites send one MQTT message per reading, odd
    sites one gateway frame per tick; every ``hazard_every``-th crane overloads (11.5 t on 10 t) for a few ticks,
    the overloads spread over the stream. Every message is QoS 1; a reading counts as acknowledged when the
    broker's PUBACK for its message arrived."""

    prefix: str  # site ids: f"{prefix}-0000"…
    readings: int
    sites: int = 4
    cranes: int = 25
    rate: float = 2000.0
    hazard_every: int = 5
    hazard_ticks: int = 6
    port: int = 0
    sent: list[tuple[mqtt.MQTTMessageInfo, list[tuple[str, str, int]]]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    error: list[BaseException] = field(default_factory=list)

    def __post_init__(self):
        self.devices = [(f"{self.prefix}-{s:04d}", f"tc-{d:02d}") for s in range(self.sites) for d in range(self.cranes)]
        self.ticks = -(-self.readings // len(self.devices))
        self.step_ms = max(1, int(1000 * len(self.devices) / self.rate))
        hazards = self.devices[self.hazard_every - 1::self.hazard_every]
        span = max(1, self.ticks - self.hazard_ticks - 2)
        # device -> first overloaded tick, spread evenly from 5 % to 95 % of the stream
        self.hazard_start = {dev: 1 + int(span * (0.05 + 0.9 * i / max(1, len(hazards) - 1)))
                             for i, dev in enumerate(hazards)}
        self.progress = 0.0
        self.t0 = 0
        self.t_end_ms = 0

    @property
    def sites_ids(self) -> list[str]:
        return sorted({s for s, _ in self.devices})

    @property
    def hazard_keys(self) -> set[str]:
        return {f"{s}/{d}/crane.overload" for s, d in self.hazard_start}

    def value(self, dev: tuple[str, str], tick: int) -> float:
        start = self.hazard_start.get(dev)
        if start is not None and start <= tick < start + self.hazard_ticks:
            return 11.5
        return 4.0 + (tick % 7) * 0.1

    def start(self, port: int) -> "Fleet":
        self.port = port
        self.thread = threading.Thread(target=self._run, name=f"fleet-{self.prefix}", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fleet-{self.prefix}-{time.time_ns()}")
            client.max_queued_messages_set(0)
            client.max_inflight_messages_set(1000)
            client.connect("127.0.0.1", self.port, keepalive=30)
            client.loop_start()
            try:
                self._publish(client)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not all(i.is_published() for i, _ in self.sent):
                    time.sleep(0.1)
            finally:
                client.loop_stop()
                client.disconnect()
        except BaseException as e:  # noqa: BLE001 - reported by join()
            self.error.append(e)
        finally:
            self.done.set()

    def _publish(self, client: mqtt.Client) -> None:
        self.t0 = now_ms()
        started = time.monotonic()
        by_site: dict[str, list[str]] = defaultdict(list)
        for s, d in self.devices:
            by_site[s].append(d)
        for tick in range(self.ticks):
            ts = self.t0 + tick * self.step_ms
            for n, (site, devices) in enumerate(by_site.items()):
                if n % 2 == 0:  # sensors straight to the broker: one message per reading
                    for d in devices:
                        body = {"ts": ts, "value": self.value((site, d), tick), "unit": "t"}
                        info = client.publish(reading_topic(site, "crane", d, "load"), json.dumps(body), qos=1)
                        self.sent.append((info, [(site, d, ts)]))
                else:  # a site gateway: one frame per tick
                    items = [{"family": "crane", "device": d, "metric": "load", "ts": ts,
                              "value": self.value((site, d), tick), "unit": "t"} for d in devices]
                    info = client.publish(gateway_topic(site, "gw-01"), json.dumps({"readings": items}), qos=1)
                    self.sent.append((info, [(site, d, ts) for d in devices]))
            self.progress = (tick + 1) / self.ticks
            ahead = started + (tick + 1) * self.step_ms / 1000 - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        self.t_end_ms = now_ms()  # until here every device published every tick: no silence before it is true

    def wait_progress(self, fraction: float, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.progress < fraction and not self.done.is_set():
            assert time.monotonic() < deadline, f"fleet {self.prefix} stuck at {self.progress:.0%}"
            time.sleep(0.05)

    def join(self, timeout: float = 600) -> None:
        assert self.done.wait(timeout), f"fleet {self.prefix} did not finish"
        if self.error:
            raise self.error[0]

    def published(self) -> int:
        return sum(len(r) for _, r in self.sent)

    def acknowledged(self) -> set[tuple[str, str, int]]:
        return {x for info, rs in self.sent if info.is_published() for x in rs}


# ------------------------------------------------------------------------------------------------ sw.readings
class ReadingsWatcher:
    """Everything that reaches ``sw.readings``, from the beginning, collected incrementally by one consumer
    (re-reading the whole topic for every check would cost more than the pipeline under test)."""

    def __init__(self, bootstrap: str):
        from kafka import KafkaConsumer

        self.consumer = KafkaConsumer(TOPIC_READINGS, bootstrap_servers=bootstrap, group_id=None,
                                      auto_offset_reset="earliest", enable_auto_commit=False,
                                      request_timeout_ms=305_000)
        self.seen: Counter = Counter()  # (site, device, ts) -> copies

    def poll(self, seconds: float = 1.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for records in self.consumer.poll(timeout_ms=200).values():
                for r in records:
                    for x in unpack_readings(json.loads(r.value)):
                        self.seen[(x.site, x.device, x.ts)] += 1

    def wait_for(self, want: set, timeout: float) -> set:
        """Poll until every reading of ``want`` arrived or ``timeout``; returns what is still missing."""
        deadline = time.monotonic() + timeout
        missing = set(want)
        while missing and time.monotonic() < deadline:
            self.poll(1.0)
            missing = {x for x in missing if x not in self.seen}
        return missing

    def close(self) -> None:
        self.consumer.close()


# ------------------------------------------------------------------------------------------------ accounting
def ticket_counts(backlog, sites: list[str]) -> tuple[int, int, set[str]]:
    """(tickets, duplicates, dedup keys) of these sites: a duplicate is a second ticket with the same key."""
    tickets = [t for t in backlog.tickets() if t.site in sites]
    per_key = Counter(t.dedup_key for t in tickets)
    return len(tickets), sum(n - 1 for n in per_key.values()), set(per_key)


def false_silences(backlog, fleet) -> list[str]:
    """``fault.silent`` tickets opened while the fleet was still publishing every device every tick: a pipeline
    outage taken for sensors falling silent (each one an SMS about a sensor that was fine)."""
    sites = set(fleet.sites_ids)
    return [f"#{t.id} {t.dedup_key} opened {t.opened_ms} ({fleet.t_end_ms - t.opened_ms} ms before the last reading)"
            for t in backlog.tickets() if t.site in sites and t.kind == "fault.silent"
            and (not fleet.t_end_ms or t.opened_ms <= fleet.t_end_ms)]


def ticket_story(backlog, sites: list[str], limit: int = 6) -> str:
    """Why there are more tickets than overloads: tickets per kind, and the tickets of a few repeated keys (for
    the failure message of a duplicate-ticket assertion)."""
    tickets = sorted((t for t in backlog.tickets() if t.site in sites), key=lambda t: t.id)
    kinds = Counter(t.kind for t in tickets)
    per_key: dict[str, list] = defaultdict(list)
    for t in tickets:
        per_key[t.dedup_key].append(t)
    repeated = [k for k, ts in per_key.items() if len(ts) > 1][:limit]
    lines = [f"tickets per kind: {dict(kinds)}"]
    for k in repeated:
        lines.append(k + ": " + "; ".join(
            f"#{t.id} {t.status} L{t.peak_level} opened {t.opened_ms} cleared {t.cleared_ms} closed {t.closed_ms} "
            f"by {t.closed_by} from #{t.reopened_from}" for t in per_key[k]))
    return "\n".join(lines)


def outbox_alerts(backlog, sites: list[str]) -> tuple[set[str], int]:
    """(alert ids the backlog queued for these sites, how many of them are not published to Kafka yet)."""
    from sqlalchemy import select

    from backlog.models import AlertOutbox

    prefixes = tuple(f"{s}/" for s in sites)
    with backlog.session() as s:
        rows = s.execute(select(AlertOutbox.alert_id, AlertOutbox.dedup_key, AlertOutbox.published_ms)).all()
    mine = [r for r in rows if r[1].startswith(prefixes)]
    return {r[0] for r in mine}, sum(1 for r in mine if r[2] is None)


def tickets_unannounced(backlog, receiver, sites: list[str]) -> list[str]:
    """Tickets of these sites of which no alert reached the receiver (each ticket's opening is an alert)."""
    told = {(r.body.get("ticket") or {}).get("id") for r in list(receiver.received)}
    return [f"#{t.id} {t.dedup_key} L{t.peak_level} {t.status}" for t in backlog.tickets()
            if t.site in sites and t.id not in told]


def deliveries(receiver, sites: list[str]) -> Counter:
    """alert id -> how many times the webhook receiver accepted it (2xx), for these sites."""
    return Counter(r.body.get("alert_id") for r in list(receiver.received)
                   if (r.body.get("ticket") or {}).get("site") in sites)


def wait_alerts_delivered(backlog, receiver, sites: list[str], timeout: float) -> tuple[set[str], Counter]:
    """Wait until every alert of these sites is published and accepted by the receiver at least once."""
    deadline = time.monotonic() + timeout
    while True:
        queued, unpublished = outbox_alerts(backlog, sites)
        got = deliveries(receiver, sites)
        if queued and not unpublished and queued <= set(got):
            return queued, got
        if time.monotonic() > deadline:
            return queued, got
        time.sleep(1.0)


# ------------------------------------------------------------------------------------------------ summary
ROWS: list[dict] = []


@contextmanager
def fault_row(fault: str, done: str):
    """One line of the table; the test fills in the figures, an exception marks it FAILED."""
    row: dict = {"fault": fault, "done": done, "result": "pass"}
    ROWS.append(row)
    try:
        yield row
    except BaseException as e:
        row["result"] = f"FAILED: {str(e).splitlines()[0][:160] if str(e) else type(e).__name__}"
        raise


def pytest_sessionfinish(session, exitstatus):
    if not ROWS:
        return
    out = Path(os.environ.get("SW_FAULTS_SUMMARY") or REPO / ".sitewatch" / "faults" / "summary.json")
    data = report.summary(ROWS, full=FULL)
    report.write(data, out)
    if os.environ.get("SW_FAULTS_README") == "1":
        report.update_readme(REPO / "README.md", data)


def pytest_terminal_summary(terminalreporter):
    if ROWS:
        terminalreporter.write_sep("=", "fault suite")
        terminalreporter.write_line(report.markdown(report.summary(ROWS, full=FULL)))
