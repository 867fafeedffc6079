"""``bench pipeline``: the real pipeline (mosquitto → bridge → Tansu → Faust worker) fed gateway frames vs one MQTT
message per reading, then publish → webhook latency of crane overloads."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import click

from sitewatch.contracts import FAMILIES, TOPIC_RAW, TOPIC_READINGS, gateway_topic, reading_topic


# ---------------------------------------------------------------------------------------------- pipeline
def _interrupt(signum, frame):
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """SIGTERM runs a benchmark's ``finally`` like Ctrl-C does: the brokers and workers it started live in their
    own sessions and would outlive it otherwise."""
    import signal

    signal.signal(signal.SIGTERM, _interrupt)


class GroupLag:
    """Unprocessed records of a consumer group: log end offsets minus committed offsets, summed.

    The end offsets are ``streams.offsets.EndOffsets`` (the Fetch high watermark, not ListOffsets alone): Tansu
    answers ListOffsets(latest) with the last record batch's base offset + 1, so a batch of several records at
    the tail looked already consumed (and a group that had read it showed a negative lag).
    """

    def __init__(self, bootstrap: str, group: str, topics: tuple[str, ...]):
        from kafka import KafkaAdminClient

        from streams.offsets import EndOffsets

        self.group = group
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        self.ends = EndOffsets(bootstrap, topics)
        self.tps = self.ends.tps

    def end_offsets(self) -> dict:
        return self.ends()

    def by_partition(self) -> dict:
        committed = self.admin.list_group_offsets(self.group).get(self.group, {})
        out = {}
        for tp, end in self.end_offsets().items():
            c = committed.get(tp)
            out[tp] = end - (c.offset if c is not None and c.offset >= 0 else 0)
        return out

    def __call__(self) -> int:
        return sum(self.by_partition().values())

    def close(self) -> None:
        self.ends.close()
        self.admin.close()


def _publish_flood(port: int, frames: list[tuple[str, bytes]]) -> float:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{time.time_ns()}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    t0 = time.perf_counter()
    info = None
    for topic, payload in frames:
        info = client.publish(topic, payload, qos=1)
    if info is not None:
        info.wait_for_publish(300)
    dt = time.perf_counter() - t0
    client.loop_stop()
    client.disconnect()
    return dt


# The flood's devices stop publishing when the flood ends, which the deadman rightly reports as thousands of
# silent sensors; that fault storm is not what this benchmark measures, so its worker runs with it off.
BENCH_RULES = "version: 1\nfaults:\n  silent_after_intervals: 1000000\n"


def _frames(readings: int, per_frame: int, sites: int, single: bool) -> list[tuple[str, bytes]]:
    now = int(time.time() * 1000) - readings  # 1 ms apart, ending now: never "in the future" (that is a DLQ case)
    fams = list(FAMILIES)
    frames: list[tuple[str, bytes]] = []
    items = []
    for i in range(readings):
        fam = fams[i % len(fams)]
        metric = list(FAMILIES[fam])[0]
        site = f"b-{(i // per_frame) % sites:03d}"
        dev = f"{fam[:2]}-{i % 97:02d}"
        item = {"family": fam, "device": dev, "metric": metric, "ts": now + i, "value": 1.0,
                "unit": FAMILIES[fam][metric]}
        if single:
            frames.append((reading_topic(site, fam, dev, metric),
                           json.dumps({"ts": item["ts"], "value": 1.0, "unit": item["unit"]}).encode()))
        else:
            items.append(item)
            if len(items) == per_frame:
                frames.append((gateway_topic(site, "gw-01"), json.dumps({"readings": items}).encode()))
                items = []
    if items:
        frames.append((gateway_topic(f"b-{sites - 1:03d}", "gw-01"), json.dumps({"readings": items}).encode()))
    return frames


def _through_pipeline(stack, group: str, frames, readings: int, label: str, echo) -> float:
    lag = GroupLag(stack.bootstrap, group, (TOPIC_RAW, TOPIC_READINGS))
    t0 = time.perf_counter()
    pub_s = _publish_flood(stack.mqtt_port, frames)
    deadline = time.monotonic() + 600
    last_echo = time.monotonic()
    while (remaining := lag()) > 0:
        if time.monotonic() > deadline:
            raise click.ClickException(f"pipeline still {remaining} records behind after 600 s")
        if time.monotonic() - last_echo > 5:
            echo(f"    … {remaining} records still to process")
            last_echo = time.monotonic()
        time.sleep(0.25)
    total = time.perf_counter() - t0
    lag.close()
    rps = readings / total
    echo(f"  {label:38} {rps:10,.0f} readings/s  ({readings:,} readings in {len(frames):,} MQTT messages, "
         f"published in {pub_s:.1f} s, fully processed in {total:.1f} s)")
    return rps


def bench_pipeline(readings: int, echo=click.echo) -> dict[str, float]:
    from app.localstack import LocalStack, ManagedProcess, free_port, sitewatch_argv
    from app.webhook_receiver import WebhookReceiver

    stop_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="sitewatch-bench-"))
    stack = LocalStack(tmp, free_port(), free_port()).start()
    receiver = WebhookReceiver().start()
    group = "sitewatch-bench-worker"
    rules = tmp / "bench-rules.yaml"
    rules.write_text(BENCH_RULES)
    env = {"SW_DATA_DIR": str(tmp), "SW_MQTT_PORT": str(stack.mqtt_port), "SW_KAFKA_BOOTSTRAP": stack.bootstrap,
           "SW_WEBHOOK_URL": receiver.url, "SW_WORKER_ID": group, "SW_RULES_PATH": str(rules),
           "SW_KAFKA_PARTITIONS": str(stack.partitions)}
    procs = [ManagedProcess("bridge", sitewatch_argv("bridge"), tmp / "logs" / "bridge.log", env).start(),
             ManagedProcess("worker", sitewatch_argv("worker"), tmp / "logs" / "worker.log", env).start()]
    out: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 120
        while "worker ready" not in procs[1].tail(100):
            if time.monotonic() > deadline or not procs[1].running:
                raise click.ClickException(f"worker did not start:\n{procs[1].tail()}")
            time.sleep(0.2)
        echo(f"pipeline: mosquitto → bridge → Tansu → Faust worker (validate + detect), logs in {tmp}/logs")
        out["gateway_rps"] = _through_pipeline(stack, group, _frames(readings, 200, 20, False), readings,
                                               "gateway frames (200 readings/message)", echo)
        single_n = max(2_000, readings // 10)
        out["single_rps"] = _through_pipeline(stack, group, _frames(single_n, 1, 20, True), single_n,
                                              "one MQTT message per reading (baseline)", echo)
        # Latency: an overload published on an idle pipeline, timed to the webhook.
        lat = []
        for i in range(5):
            n0 = len(receiver.received)
            ts = int(time.time() * 1000)
            _publish_flood(stack.mqtt_port, [(reading_topic(f"lat-{i}", "crane", "tc-01", "load"),
                                              json.dumps({"ts": ts, "value": 11.5, "unit": "t"}).encode())])
            deadline = time.monotonic() + 30
            while len(receiver.received) == n0 and time.monotonic() < deadline:
                time.sleep(0.01)
            if len(receiver.received) > n0:
                lat.append(receiver.received[-1].at_ms - ts)
            time.sleep(0.5)
        if lat:
            out["latency_median_ms"] = statistics.median(lat)
            echo(f"  MQTT publish → webhook (crane overload)  median {statistics.median(lat):.0f} ms, "
                 f"max {max(lat):.0f} ms over {len(lat)} alerts")
        else:
            echo("  MQTT publish → webhook: no alert arrived within 30 s (see worker log)")
    finally:
        for p in reversed(procs):
            p.stop()
        stack.stop()
        receiver.stop()
    return out
