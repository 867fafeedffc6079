"""SIGKILL of the bridge, the worker and the notifier, repeatedly, while a fleet streams readings with overloads
inside the stream: no reading the MQTT broker acknowledged is lost, no overload gets two tickets, every alert
reaches the webhook at least once, and deliveries repeated by a crash are counted.

The notifier is the worker's notify stage (one process): "SIGKILL of the notifier" is the worker killed while a
webhook request is in flight (the receiver holds each answer 0.3 s so there is one to catch). The receiver
records that request; the dead notifier never recorded its success, so the restarted one sends it again — the
at-least-once window the ``Idempotency-Key`` header exists for.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from backlog.store import Backlog

from .conftest import (FULL, Fleet, ReadingsWatcher, deliveries, fault_row, ticket_counts, tickets_unannounced,
                       wait_alerts_delivered)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600 if FULL else 420)]

READINGS = 120_000 if FULL else 24_000
RATE = 1500.0
# (when, as a fraction of the stream, what is killed)
SCHEDULE = ([(0.10, "bridge"), (0.20, "worker"), (0.30, "notifier"), (0.45, "bridge"), (0.55, "worker"),
             (0.65, "notifier"), (0.80, "bridge"), (0.90, "worker")] if FULL else
            [(0.15, "bridge"), (0.30, "worker"), (0.50, "notifier")])


def test_sigkill_bridge_worker_and_notifier_mid_stream(pipeline):
    pipeline.receiver.delay_s = 0.3  # every delivery is in flight for a while
    watcher = ReadingsWatcher(pipeline.stack.bootstrap)
    fleet = Fleet("fc", readings=READINGS, rate=RATE)
    kills = {"bridge": 0, "worker": 0, "notifier": 0}
    mid_delivery = 0
    done = (f"{READINGS:,} readings at {RATE:,.0f}/s; SIGKILL " +
            ", ".join(f"{what} at {at:.0%}" for at, what in SCHEDULE) + "; each restarted at once")
    with fault_row("SIGKILL bridge / worker / notifier (= worker mid-delivery)", done) as row:
        fleet.start(pipeline.stack.mqtt_port)
        for at, what in SCHEDULE:
            fleet.wait_progress(at)
            if what == "bridge":
                pipeline.procs["bridge"].kill()
                pipeline.start_bridge()
            elif what == "worker":
                pipeline.procs["worker"].kill()
                pipeline.start_worker()
            else:  # the notifier: wait for a webhook request to be in flight, then kill the worker under it
                before = pipeline.receiver.requests
                deadline = time.monotonic() + 30
                while pipeline.receiver.requests == before and time.monotonic() < deadline:
                    time.sleep(0.01)
                mid_delivery += pipeline.receiver.requests > before
                pipeline.procs["worker"].kill()
                pipeline.start_worker()
            kills[what] += 1
        fleet.join()
        row["done"] += f" ({mid_delivery} of {kills['notifier']} notifier kills with a request in flight)"

        acked = fleet.acknowledged()
        row.update(published=fleet.published(), acked=len(acked))
        missing = watcher.wait_for(acked, 600 if FULL else 150)
        watcher.close()
        row["lost"] = len(missing)

        backlog = Backlog(pipeline.db_url, create=False)
        sites = fleet.sites_ids
        deadline = time.monotonic() + 120
        while not fleet.hazard_keys <= ticket_counts(backlog, sites)[2] and time.monotonic() < deadline:
            time.sleep(1)
        queued, got = wait_alerts_delivered(backlog, pipeline.receiver, sites, 180)
        time.sleep(3)  # a re-sent copy still under way shows up now
        got = deliveries(pipeline.receiver, sites)
        n, dups, keys = ticket_counts(backlog, sites)
        row.update(tickets=n, duplicate_tickets=dups, alerts=len(queued), alerts_delivered=len(queued & set(got)),
                   duplicate_deliveries=sum(c - 1 for c in got.values()))

        assert not missing, f"{len(missing)} acknowledged readings lost, e.g. {sorted(missing)[:5]}"
        kinds = Counter(t.kind for t in backlog.tickets() if t.site in sites)
        assert fleet.hazard_keys <= keys, f"no ticket for {sorted(fleet.hazard_keys - keys)} (tickets: {kinds})"
        assert dups == 0, f"{dups} duplicate tickets"
        assert queued and queued <= set(got), f"alerts never delivered: {sorted(queued - set(got))}"
        silent = tickets_unannounced(backlog, pipeline.receiver, sites)
        assert not silent, f"tickets without any alert: {silent}"
        for name in ("bridge", "worker"):
            assert pipeline.procs[name].running, f"{name} died:\n{pipeline.procs[name].tail(40)}"

