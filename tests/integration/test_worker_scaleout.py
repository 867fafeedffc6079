"""Scale-out: three workers share one consumer group; one is SIGKILLed mid-stream. Its partitions move to the
survivors, which carry on from the changelogged device state: no reading is lost, no ticket is filed twice,
and a pit rate alarm whose 20 s window spans the handover still fires on the reading that completes it.

Observable for "every reading was processed": every crane reading changes the crane's level (11.5 t on a 10 t
crane, then 4 t, alternately), so the detect stage must emit exactly one finding per reading — the set of finding
timestamps in ``sw.hazards`` equals the set of published timestamps, device by device. The backlog counts the
raised ones on the open ticket (replays are recognised by timestamp), so the ticket's count is a second,
independent tally of the same readings.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from app.bench.pipeline import GroupLag
from app.localstack import ManagedProcess, sitewatch_argv
from backlog.store import Backlog
from sitewatch.contracts import (TOPIC_ALERTS, TOPIC_HAZARDS, TOPIC_RAW, TOPIC_READINGS, device_key, now_ms,
                                 partition_of, reading_topic)
from tests.conftest import read_topic, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 4  # what the ``stack`` / ``pipeline`` fixtures create and give the workers
STEP_MS = 1000  # every device reports once a second (event time)
STEPS = 30
WINDOW_STEPS = 20  # the pit rate window in readings: the reading of step 20 completes the first window
KILL_AFTER_STEP = 3  # the victim has processed at least this many steps of its devices when it is killed
CRANES = [f"so-{i:02d}" for i in range(24)]

# Short pit rate window so the test can span it; no deadman (the stream stops at the end of the test); a rate of
# 60 mm/min against a 30 mm/min alarm value is red at once, and the cumulative alarm (400 mm) stays out of reach.
RULES = """\
faults:
  silent_after_intervals: 1000000
families:
  pit:
    expected_interval: 1s
    rate_window: 20s
    rate_per: min
    rate_consecutive: 1
    rate: {hold_count: 1}
    metrics:
      wall_top_horizontal: {alarm: 400, rate: 30}
"""

READY = re.compile(r"worker ready: sw\.readings partitions \[([0-9, ]*)\]")


def assigned(proc: ManagedProcess) -> set[int] | None:
    """The ``sw.readings`` partitions of the worker's latest rebalance (None before its first one)."""
    try:
        found = READY.findall(proc.log_path.read_text(errors="replace"))
    except FileNotFoundError:
        return None
    if not found:
        return None
    return {int(p) for p in found[-1].split(",") if p.strip()}


def settled(workers: dict[str, ManagedProcess]) -> dict[str, set[int]] | None:
    """Every worker's latest assignment, once they are disjoint and cover every partition (one generation)."""
    dead = [name for name, p in workers.items() if not p.running]
    assert not dead, "\n".join(f"{name} died:\n{workers[name].tail(60)}" for name in dead)
    got = {name: assigned(p) for name, p in workers.items()}
    if any(a is None for a in got.values()):
        return None
    parts = sorted(p for a in got.values() for p in a)  # type: ignore[union-attr]
    return got if parts == list(range(PARTITIONS)) else None  # type: ignore[return-value]


def pit_sites() -> list[str]:
    """One pit point per partition, so whichever worker is killed owned at least one of them."""
    out: dict[int, str] = {}
    i = 0
    while len(out) < PARTITIONS:
        site = f"sp-{i:02d}"
        out.setdefault(partition_of(device_key(site, "jc-01").encode(), PARTITIONS), site)
        i += 1
    return [out[p] for p in range(PARTITIONS)]


def hazards(bootstrap: str) -> list[dict]:
    return [json.loads(r.value) for r in read_topic(bootstrap, TOPIC_HAZARDS, min_records=1, timeout=10)]


def dump_topics(bootstrap: str, start: int, path: Path) -> None:
    """On failure: every record of the pipeline's topics and the state changelog, one line each, by partition and
    offset (step = reading number), so a lost or skipped record can be traced to the stage that dropped it."""
    from sitewatch.contracts import unpack_raw, unpack_readings

    def step(ts: int) -> int:
        return (ts - start) // STEP_MS

    lines = []
    for topic in (TOPIC_RAW, TOPIC_READINGS, TOPIC_HAZARDS, "sitewatch-worker-device-state-changelog"):
        for r in sorted(read_topic(bootstrap, topic, min_records=1, timeout=10), key=lambda r: (r.partition, r.offset)):
            head = f"{topic} p{r.partition} o{r.offset}"
            if topic == TOPIC_RAW:
                items = [f"{t.split('/')[1]}:{step(json.loads(m)['ts'])}" for t, m in unpack_raw(r.value)[1]]
            elif topic == TOPIC_READINGS:
                items = sorted({f"{x.site}:{step(x.ts)}" for x in unpack_readings(json.loads(r.value))})
            elif topic == TOPIC_HAZARDS:
                f = json.loads(r.value)
                items = [f["site"], f["kind"], f"step={step(f['ts'])}", f"L{f['level']}"]
            else:
                items = [repr(r.key), repr(r.value[:200])]
            lines.append(" ".join([head, *items]))
    path.write_text("\n".join(lines))


@pytest.mark.rules(RULES)
def test_sigkilled_worker_hands_over_state_without_loss_or_duplicate(pipeline, sensor):
    bootstrap = pipeline.stack.bootstrap
    crane_part = {s: partition_of(device_key(s, "tc-01").encode(), PARTITIONS) for s in CRANES}
    assert set(crane_part.values()) == set(range(PARTITIONS)), "cranes on every partition"
    pits = pit_sites()

    # -------------------------------------------------------------------------------- three workers, one group
    workers = {"worker": pipeline.procs["worker"]}
    for i in (2, 3):
        data_dir = pipeline.data_dir / f"worker-{i}"  # a machine of its own: its own Faust data directory
        data_dir.mkdir(parents=True)
        env = {**pipeline.env, "SW_DATA_DIR": str(data_dir)}
        p = ManagedProcess(f"worker-{i}", sitewatch_argv("worker"), pipeline.data_dir / "logs" / f"worker-{i}.log", env)
        workers[f"worker-{i}"] = pipeline.procs[f"worker-{i}"] = p.start()
    before = wait_until(lambda: settled(workers), 120, "three workers sharing the partitions", interval=0.5)
    owned = {n: a for n, a in before.items() if a}
    # The oldest worker if it owns anything (most likely the group leader: the harder case), else any owner.
    victim = "worker" if owned.get("worker") else next(iter(owned))
    victim_parts = before[victim]
    survivors = {n: p for n, p in workers.items() if n != victim}

    # -------------------------------------------------------------------------------- the stream
    start = now_ms()
    ts_of = [start + i * STEP_MS for i in range(STEPS)]
    published_at: dict[int, float] = {}
    killed = threading.Event()
    errors: list[BaseException] = []

    def publish_all():
        try:
            for step, ts in enumerate(ts_of):
                if step == WINDOW_STEPS - 1:  # the window must not complete before the kill (usually no wait)
                    killed.wait(120)
                for site in CRANES:
                    sensor.publish(reading_topic(site, "crane", "tc-01", "load"),
                                   {"ts": ts, "value": 11.5 if step % 2 == 0 else 4.0, "unit": "t"})
                for site in pits:
                    sensor.publish(reading_topic(site, "pit", "jc-01", "wall_top_horizontal"),
                                   {"ts": ts, "value": float(step), "unit": "mm"})
                published_at[step] = time.monotonic()
                time.sleep(0.3)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    pub = threading.Thread(target=publish_all, daemon=True)
    pub.start()

    def victim_progressed():
        got = {f["ts"] for f in hazards(bootstrap)
               if f["kind"] == "crane.overload" and crane_part[f["site"]] in victim_parts}
        return ts_of[KILL_AFTER_STEP] in got

    wait_until(victim_progressed, 60, f"{victim} to process its devices' first readings", interval=0.3)
    workers[victim].kill()  # SIGKILL: no revoke callback, no final commit, no state flush
    killed_at = time.monotonic()
    killed.set()

    try:
        check_after_kill(pipeline, bootstrap, start, ts_of, pits, crane_part, victim, victim_parts, survivors, pub,
                         errors, published_at, killed_at)
    except AssertionError as e:
        dump = pipeline.data_dir / "topics.txt"
        dump_topics(bootstrap, start, dump)
        raise AssertionError(f"{e}\n(victim {victim} owned sw.readings partitions {sorted(victim_parts)}; "
                             f"records of every topic in {dump})") from None


def check_after_kill(pipeline, bootstrap, start, ts_of, pits, crane_part, victim, victim_parts, survivors, pub,
                     errors, published_at, killed_at) -> None:
    after = wait_until(lambda: settled(survivors), 120, "the survivors to take over every partition", interval=0.5)
    assert victim_parts <= set().union(*after.values())
    pub.join(120)
    assert not pub.is_alive() and not errors, errors
    assert published_at[WINDOW_STEPS] > killed_at, "the reading completing the pit window came after the kill"

    # -------------------------------------------------------------------------------- nothing lost
    want_ts = set(ts_of)

    def all_findings():
        by_dev: dict[str, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
        rate: dict[str, set[int]] = defaultdict(set)
        for f in hazards(bootstrap):
            if f["kind"] == "crane.overload":
                by_dev[f["site"]][f["ts"]].add(f["level"])
            elif f["kind"] == "pit.rate" and f["level"] > 0:
                rate[f["site"]].add(f["ts"])
        done = all(set(by_dev[s]) >= want_ts for s in CRANES) and all(rate[s] for s in pits)
        return (by_dev, rate) if done else None

    try:
        by_dev, rate = wait_until(all_findings, 120, "a finding for every crane reading and every pit rate alarm",
                                  interval=1.0)
    except AssertionError as e:
        got: dict[str, set[int]] = defaultdict(set)
        for f in hazards(bootstrap):
            if f["kind"] == "crane.overload":
                got[f["site"]].add((f["ts"] - start) // STEP_MS)
        missing = {s: (crane_part[s], sorted(set(range(STEPS)) - got[s])) for s in CRANES if len(got[s]) < STEPS}
        raise AssertionError(f"{e}; cranes (partition, steps without a finding): {missing}") from None
    lag = GroupLag(bootstrap, "sitewatch-worker", (TOPIC_RAW, TOPIC_READINGS, TOPIC_HAZARDS, TOPIC_ALERTS))
    try:  # everything consumed and committed: any duplicate would be in the backlog by now
        wait_until(lambda: lag() == 0, 120, "the consumer group to have no lag left", interval=0.5)
    except AssertionError as e:
        raise AssertionError(f"{e}: {lag.by_partition()}") from None
    finally:
        lag.close()
    by_dev, rate = all_findings() or (by_dev, rate)

    for site in CRANES:
        got = by_dev[site]
        assert set(got) == want_ts, f"{site}: readings without a finding: {sorted(want_ts - set(got))}"
        wrong = {i: got[ts] for i, ts in enumerate(ts_of) if got[ts] != {3 if i % 2 == 0 else 0}}
        assert not wrong, f"{site}: step -> levels found {wrong}"

    # -------------------------------------------------------------------------------- state handed over
    for site in pits:  # event time: the reading that completes the 20 s window, once
        assert rate[site] == {ts_of[WINDOW_STEPS]}, (site, sorted((t - start) // STEP_MS for t in rate[site]))
    moved = [s for s in pits if partition_of(device_key(s, "jc-01").encode(), PARTITIONS) in victim_parts]
    assert moved, "at least one pit point lived on the killed worker"

    # -------------------------------------------------------------------------------- no duplicate ticket
    tickets = Backlog(pipeline.db_url, create=False).tickets()
    per_key = defaultdict(list)
    for t in tickets:
        per_key[(t.site, t.device, t.kind)].append(t)
    want_keys = {(s, "tc-01", "crane.overload") for s in CRANES} | {(s, "jc-01", "pit.rate") for s in pits}
    assert set(per_key) == want_keys, sorted(set(per_key) ^ want_keys)
    dup = {k: len(v) for k, v in per_key.items() if len(v) != 1}
    assert not dup, f"duplicate tickets: {dup}"
    raised = STEPS // 2 + STEPS % 2
    counts = {k[0]: v[0].count for k, v in per_key.items() if k[2] == "crane.overload" and v[0].count != raised}
    assert not counts, f"raised findings counted per crane ticket (want {raised}): {counts}"
    assert all(per_key[(s, "jc-01", "pit.rate")][0].opened_ms == ts_of[WINDOW_STEPS] for s in pits)

    # Every ticket announced (a redelivered webhook is allowed: it carries the same Idempotency-Key).
    wait_until(lambda: len({a.body["alert_id"] for a in pipeline.receiver.received}) >= len(tickets), 60,
               "an alert for every ticket")
    assert {a.body["alert_id"] for a in pipeline.receiver.received} == {f"t{t.id}-opened-L{t.peak_level}"
                                                                        for t in tickets}
    for name, p in survivors.items():
        log = p.tail(2000)
        assert "Error in recovery" not in log and "Traceback" not in log, f"{name}:\n{log}"
