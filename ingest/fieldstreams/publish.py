"""Publish arrival events over real MQTT (paho-mqtt, QoS 1): paced by arrival time, or as fast as possible."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable, Sequence

from sitewatch.contracts import now_ms

from .model import Arrival, Cue

log = logging.getLogger("sitewatch.simulate")


def anchored_start(duration_ms: int, speed: float | None, tail_ms: int = 60_000) -> int:
    """Event start time for a live publish: every reading is in the past when it is sent (the contract rejects a
    timestamp more than 5 minutes ahead). At speed 1 event time *is* wall time; with ``speed`` k the scenario
    ends at the wall clock's now when its last message goes out; ``speed=None`` (as fast as possible): it ended
    ``tail_ms`` ago."""
    now = now_ms()
    if not speed:
        return now - int(duration_ms) - tail_ms
    return now - int(duration_ms) + int(duration_ms / speed)


def publish_scenario(host: str, port: int, events: Sequence[Arrival] | Iterable[Arrival], speed: float | None = None,
                     *, stop: threading.Event | None = None, cues: Sequence[Cue] = (),
                     on_cue: Callable[[str], None] | None = None,
                     progress: Callable[[int, int, int], None] | None = None, progress_every_s: float = 5.0,
                     qos: int = 1, client_id: str | None = None, username: str | None = None,
                     password: str | None = None, wait_s: float = 60.0) -> int:
    """Send ``events`` in order over MQTT; returns how many were sent.

    ``speed=None``: as fast as the broker takes them (max 1,000 in flight). ``speed=k``: message ``i`` leaves
    ``(arrival_i - arrival_0) / k`` after the start, so a 6 h outage at speed 60 takes 6 minutes (measurement
    timestamps in the payloads are unchanged). ``cues`` (e.g. ``manifest.cues``) are passed to ``on_cue`` when
    the arrival clock passes them; ``progress(sent, total, arrival_ms)`` is called every ``progress_every_s``.
    Returns once the broker acknowledged every QoS 1 message (or ``wait_s`` passed).
    """
    from ingest.simulator import connect_publisher

    events = events if isinstance(events, (list, tuple)) else list(events)
    stop = stop or threading.Event()
    cues = sorted(cues, key=lambda c: c.arrival_ms)
    client = connect_publisher(host, port, client_id or f"sitewatch-field-{time.time_ns()}", username, password)
    sent = 0
    ci = 0
    infos = []
    try:
        if not events:
            return 0
        a0 = events[0].arrival_ms
        t0 = time.monotonic()
        last_report = t0
        for arrival, topic, payload in events:
            if stop.is_set():
                break
            if speed:
                delay = t0 + (arrival - a0) / 1000.0 / speed - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
            while ci < len(cues) and cues[ci].arrival_ms <= arrival:
                if on_cue:
                    on_cue(cues[ci].text)
                ci += 1
            info = client.publish(topic, payload, qos=qos)
            if qos:
                infos.append(info)
                if len(infos) >= 5000:  # keep the backlog of unacknowledged handles short
                    for i in infos[:-1000]:
                        i.wait_for_publish(wait_s)
                    infos = infos[-1000:]
            sent += 1
            if progress and time.monotonic() - last_report >= progress_every_s:
                last_report = time.monotonic()
                progress(sent, len(events), arrival)
        for i in infos:
            i.wait_for_publish(wait_s)
        if progress:
            progress(sent, len(events), events[min(sent, len(events)) - 1].arrival_ms if sent else a0)
    finally:
        client.loop_stop()
        client.disconnect()
    return sent
