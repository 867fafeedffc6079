"""Stage 2: sw.readings → detectors (numpy, per-device state in a Faust table) → sw.hazards.

Readings of a whole batch are decoded into one columnar ``ReadingBatch`` and run through the detector engine
in a single call; Python work per *device* (state in and out of the table) remains, per *reading* none.
A leader-only clock tick runs the silence (deadman) checks, which no reading can trigger by definition.
"""

from __future__ import annotations

import json
import logging

from aiokafka.partitioner import murmur2

from detectors import DetectorEngine, RuleSet, load_rules
from detectors.model import Finding, ReadingBatch
from sitewatch.contracts import SCHEMA_VERSION, GatewayStatus, TOPIC_READINGS, now_ms
from streams.app import Pipeline

log = logging.getLogger("sitewatch.detect")


def load_rule_set(pipe: Pipeline) -> RuleSet:
    path = pipe.settings.rules_path
    if path is None:
        return RuleSet.default()
    rules = load_rules(path)
    log.info("rules loaded from %s", path)
    return rules


def decode_batch(records: list[bytes]) -> tuple[ReadingBatch, list[GatewayStatus]]:
    site, device, family, metric, ts, value = [], [], [], [], [], []
    statuses: list[GatewayStatus] = []
    for data in records:
        rec = json.loads(data)
        if rec.get("type") == "status":
            statuses.append(GatewayStatus(rec["site"], rec["gateway"], rec["ts"], rec["online"], rec.get("detail", {})))
            continue
        n = len(rec["ts"])
        site.extend([rec["site"]] * n)
        device.extend([rec["device"]] * n)
        family.extend([rec["family"]] * n)
        metric.extend(rec["m"])
        ts.extend(rec["ts"])
        value.extend(rec["val"])
    return ReadingBatch.from_columns(site, device, family, metric, ts, value), statuses


def encode_finding(f: Finding) -> bytes:
    d = f.to_dict()
    d["v"] = SCHEMA_VERSION
    return json.dumps(d, separators=(",", ":")).encode()


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the default Kafka partitioner picks for a key (murmur2, as producers and the table use)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Detection:
    def __init__(self, pipe: Pipeline):
        self.pipe = pipe
        self.engine = DetectorEngine(load_rule_set(pipe))

    def run_batch(self, records: list[bytes]) -> list[Finding]:
        batch, statuses = decode_batch(records)
        findings: list[Finding] = []
        self.pipe.count("readings_detected", len(batch))
        if len(batch):
            keys = set(batch.key.tolist())
            states = self._load(keys)
            findings += self.engine.process(batch, states)
            self._store(states)
        for st in statuses:
            states = self._load([f"{st.site}/gateway:{st.gateway}"])
            findings += self.engine.on_status(st, states)
            self._store(states)
        return findings

    def _load(self, keys) -> dict[str, dict]:
        """Table keys are bytes (see streams.app); the engine speaks str."""
        table = self.pipe.device_state
        found = ((k, table.get(k.encode())) for k in keys)
        return {k: v for k, v in found if v is not None}

    def _store(self, states: dict[str, dict]) -> None:
        for k, v in states.items():
            self.pipe.device_state[k.encode()] = v

    def run_tick(self, now: int) -> list[Finding]:
        table = self.pipe.device_state
        assigned = {tp.partition for tp in self.pipe.app.assignor.assigned_actives() if tp.topic == TOPIC_READINGS}
        if not assigned:
            return []
        parts = self.pipe.settings.kafka_partitions
        states = {
            k.decode(): v for k, v in table.items() if v is not None and partition_of(k, parts) in assigned
        }
        before = {k: json.dumps(v, sort_keys=True) for k, v in states.items()}
        findings = self.engine.tick(now, states)
        self._store({k: v for k, v in states.items() if before.get(k) != json.dumps(v, sort_keys=True)})
        return findings


def register(pipe: Pipeline) -> None:
    s = pipe.settings
    detection = Detection(pipe)
    pipe.detection = detection  # type: ignore[attr-defined]

    async def emit(findings: list[Finding]) -> None:
        for f in findings:
            await pipe.hazards.send(key=f.key.encode(), value=encode_finding(f))
        pipe.count("findings", len(findings))

    @pipe.app.agent(pipe.readings, name="detect")
    async def detect(stream):
        async for batch in stream.take(s.batch_size, within=s.batch_within_s):
            await emit(detection.run_batch(batch))

    @pipe.app.timer(5.0, name="deadman-tick")
    async def tick():
        await emit(detection.run_tick(now_ms()))
