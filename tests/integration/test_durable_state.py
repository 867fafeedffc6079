"""Durable local state: the whole local stack (mosquitto, Tansu, bridge, worker) is stopped halfway through a pit
scenario and started again on the same data directory. Tansu keeps everything in memory, so the restarted worker
finds an empty state changelog: what carries the detector state across is the snapshot in the backlog database
(``streams.state_snapshots``), and what carries the readings published while the bridge was down (it crashed
before the stop) is mosquitto's persisted session. The stop is the local stack's graceful one
(``app.localstack.stop_pipeline``, as ``sitewatch demo`` does on Ctrl-C).

The pit point's displacement rises 1 mm per reading (one reading a second, event time) from 100 mm. Its baseline
is the first reading received; the cumulative alarm (20 mm: yellow at 70 %, orange 85 %, red 100 %) and the
20 s rate window therefore both depend on state from before the stop:

- with snapshots, the cumulative levels rise on readings 14, 17 and 20 relative to the ORIGINAL baseline (100),
  and the rate alarm fires on reading 20, the one that completes the window — once;
- without them (``SW_STATE_SNAPSHOTS=off``) the restarted worker starts from nothing: the baseline becomes the
  first reading after the restart and the rate window starts again, so nothing fires on readings 14..20.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.localstack import LocalStack, consumer_lag, free_port, stop_pipeline
from app.webhook_receiver import WebhookReceiver
from backlog.store import Backlog
from sitewatch.contracts import TOPIC_HAZARDS, now_ms, reading_topic
from tests.conftest import Pipeline, Publisher, read_topic, wait_for_readings, wait_until

pytestmark = pytest.mark.integration

STEP_MS = 1000
STEPS = 30
BEFORE_STOP = 12  # readings 0..11 processed before the stop
WHILE_BRIDGE_DOWN = 2  # readings 12..13 published after the bridge crashed: they wait in mosquitto's session
WINDOW_STEP = 20  # the reading that completes the 20 s rate window
SITE, DEVICE, METRIC = "ds-01", "jc-01", "wall_top_horizontal"

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
      wall_top_horizontal: {alarm: 20, rate: 30, baseline: first}
"""


@dataclass
class RestartablePipeline(Pipeline):
    """The conftest pipeline with extra environment (the snapshot switch)."""

    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, **self.extra_env}


def publish(port: int, start: int, steps: range) -> None:
    sensor = Publisher(port)
    try:
        for i in steps:
            sensor.publish(reading_topic(SITE, "pit", DEVICE, METRIC),
                           {"ts": start + i * STEP_MS, "value": 100.0 + i, "unit": "mm"})
    finally:
        sensor.close()


def stop_and_restart(tmp_path: Path, snapshots: str):
    """Run the scenario across a full stop; returns (hazards after the restart, the pipeline, start)."""
    mqtt_port, kafka_port = free_port(), free_port()
    stack_dir = tmp_path / "stack"
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    receiver = WebhookReceiver(secret="test-secret").start()
    stack = LocalStack(stack_dir, mqtt_port, kafka_port, partitions=4).start()
    pipe = RestartablePipeline(stack, tmp_path / "data", receiver, f"sqlite:///{tmp_path / 'backlog.db'}",
                               rules_path=rules, extra_env={"SW_STATE_SNAPSHOTS": snapshots})
    start = now_ms()
    try:
        pipe.start_bridge()
        pipe.start_worker()

        # ---------------------------------------------------------------------------- first half, then a full stop
        publish(mqtt_port, start, range(BEFORE_STOP))
        wait_for_readings(stack.bootstrap, SITE, DEVICE, BEFORE_STOP, timeout=60)
        pipe.procs["bridge"].kill()  # its session keeps the subscription: mosquitto queues for it, persisted at stop
        publish(mqtt_port, start, range(BEFORE_STOP, BEFORE_STOP + WHILE_BRIDGE_DOWN))  # queued for the bridge
        first_worker = pipe.procs["worker"]
        left = stop_pipeline([], [first_worker], [], stack, drain_timeout=60)
        assert left == 0, f"the worker did not drain Kafka before the stop: {left} record(s) left"
        assert not first_worker.running
        wrote = "shutdown: state of 1 device(s) written to snapshots" in first_worker.tail(200)
        assert wrote == (snapshots == "on"), first_worker.tail(60)
        assert (stack_dir / "mqtt" / "mosquitto.db").exists(), "mosquitto saved its sessions in the data dir"

        # ---------------------------------------------------------------------------- everything again, same data dir
        stack = pipe.stack = LocalStack(stack_dir, mqtt_port, kafka_port, partitions=4).start()
        pipe.start_bridge()
        assert "session present=True" in pipe.procs["bridge"].tail(50), "the bridge resumed its MQTT session"
        pipe.start_worker()
        publish(mqtt_port, start, range(BEFORE_STOP + WHILE_BRIDGE_DOWN, STEPS))
        seen = wait_for_readings(stack.bootstrap, SITE, DEVICE, STEPS - BEFORE_STOP, timeout=60)
        assert seen == {start + i * STEP_MS for i in range(BEFORE_STOP, STEPS)}, "the queued readings came through"
        wait_until(lambda: consumer_lag(stack.bootstrap, "sitewatch-worker") == 0, 60, "the worker to drain",
                   interval=0.5)
        found = [json.loads(r.value) for r in read_topic(stack.bootstrap, TOPIC_HAZARDS, min_records=1, timeout=5)]
        return found, pipe, start
    except BaseException:
        print(pipe.logs())
        raise
    finally:
        pipe.stop()
        stack.stop()
        receiver.stop()


def raised(found: list[dict], kind: str) -> list[tuple[int, int]]:
    """(step, level) of the raised findings of one kind, in order."""
    return [(f["ts"] // STEP_MS, f["level"]) for f in found if f["kind"] == kind and f["level"] > 0]


def test_detector_state_survives_a_full_stop_of_the_local_stack(tmp_path):
    found, pipe, start = stop_and_restart(tmp_path, "on")
    t0 = start // STEP_MS
    rate = [(s - t0, lvl) for s, lvl in raised(found, "pit.rate")]
    assert rate == [(WINDOW_STEP, 3)], f"the rate alarm fires once, on reading {WINDOW_STEP}: got {rate}"
    cumulative = [(s - t0, lvl) for s, lvl in raised(found, "pit.cumulative")]
    assert cumulative == [(14, 1), (17, 2), (20, 3)], f"levels relative to the original baseline: {cumulative}"
    base = {f["evidence"].get("baseline") for f in found if f["kind"] == "pit.cumulative"}
    assert base == {100.0}, f"the baseline is the first reading before the stop: {base}"
    assert "restored the state of 1 device(s)" in pipe.procs["worker"].tail(500)

    tickets = {t.kind: t for t in Backlog(pipe.db_url, create=False).tickets()}
    assert tickets["pit.rate"].opened_ms == start + WINDOW_STEP * STEP_MS


def test_without_snapshots_the_restart_forgets_the_state(tmp_path):
    """The negative: the same run with snapshots off does not fire on time — the snapshot is what carried it."""
    found, pipe, start = stop_and_restart(tmp_path, "off")
    t0 = start // STEP_MS
    assert raised(found, "pit.rate") == [], "the rate window started again after the restart"
    cumulative = [(s - t0, lvl) for s, lvl in raised(found, "pit.cumulative")]
    assert all(step > WINDOW_STEP for step, _ in cumulative), cumulative
    base = {f["evidence"].get("baseline") for f in found if f["kind"] == "pit.cumulative"}
    assert base == {100.0 + BEFORE_STOP}, f"the baseline restarted at the first reading after the stop: {base}"
    assert "restored the state" not in pipe.procs["worker"].tail(500)
