"""Run a generated field stream through the same pieces the worker chains, in arrival order, in-process.

MQTT message → ``validate_message`` (with the arrival time as "now": too-late readings are rejected as live) →
one ``ReadingBatch`` per arrival window (gateway column included) → ``DetectorEngine.process`` / ``on_status`` /
``on_device_status`` → the deadman ``tick`` over the keys a ``DeadlineIndex`` says are due → the real backlog
(SQLite, with the rule set's inhibit rules). Weeks of event time run in seconds; only the brokers are left out,
and the end-to-end tests cover those.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backlog.store import Backlog
from detectors import DetectorEngine, RuleSet
from detectors.deadman import DeadlineIndex
from sitewatch.findings import Finding
from detectors.model import ReadingBatch
from sitewatch.contracts import Validated, validate_message


@dataclass
class Run:
    findings: list[Finding] = field(default_factory=list)
    rejected: list = field(default_factory=list)
    engine_batches: int = 0


def run_like_the_worker(events, rules: RuleSet, backlog: Backlog, window_ms: int = 30_000,
                        until_ms: int | None = None) -> Run:
    eng = DetectorEngine(rules)
    states: dict[str, dict] = {}
    due = DeadlineIndex()
    out = Run()

    def keep(found: list[Finding]) -> None:
        out.findings += found
        backlog.apply_findings(found)

    def flush(v: Validated, now: int) -> None:
        if v.readings:
            rs = v.readings
            b = ReadingBatch.from_readings(rs)
            keep(eng.process(b, states, now))
            out.engine_batches += 1
        for st in v.statuses:
            keep(eng.on_status(st, states))
        for ds in v.device_statuses:
            keep(eng.on_device_status(ds, states))
        out.rejected += v.rejected
        for k in {r.key for r in v.readings} | {f"{d.site}/{d.device}" for d in v.device_statuses}:
            due.update(k, DetectorEngine.next_due(states.get(k)))

    def tick(now: int) -> None:
        keys = due.pop_due(now)
        keep(eng.tick(now, states, keys=keys))
        for k in keys:
            due.update(k, DetectorEngine.next_due(states.get(k)))

    v = Validated()
    window_end = None
    last = None
    for arrival, topic, payload in events:
        if window_end is None:
            window_end = arrival + window_ms
        if arrival >= window_end:
            flush(v, window_end)
            tick(window_end)
            v = Validated()
            while arrival >= window_end:
                window_end += window_ms
                if arrival >= window_end:
                    tick(window_end)
        validate_message(topic, payload, arrival, v)
        last = arrival
    if last is not None:
        flush(v, window_end)
        tick(window_end)
        end = max(until_ms or 0, window_end)
        while window_end < end:
            window_end += window_ms
            tick(window_end)
    return out
