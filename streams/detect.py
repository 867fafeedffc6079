"""Stage 2: sw.readings → detectors (numpy, per-device state in a Faust table) → sw.hazards.

Readings of a whole batch are decoded into one columnar ``ReadingBatch`` and run through the detector engine
in a single call; Python work per *device* (state in and out) remains, per *reading* none.

Device state lives in memory and is checkpointed to the changelogged Faust table:

- at once for a device whose batch produced a finding (alarm state is never lost on a crash), and
- otherwise at most every ``state_checkpoint_s`` per device (default 5 s).

A changelog record per device per batch was the worker's largest single cost; with the checkpoint a crash can
roll a quiet device's state (last values, rate samples) back by a few seconds. Replayed readings older than
the restored state are dropped by the engine; alarm levels are re-derived from the next readings, and the
backlog treats a re-raised level on an open ticket as an update, not a new ticket.

A clock tick (each worker, over the partitions it owns) runs the silence (deadman) checks, which no reading can
trigger by definition. It asks a ``DeadlineIndex`` which devices are due instead of walking the state table, so
its cost follows the number of devices falling silent, not the size of the fleet; the index is rebuilt from the
table (one walk) when partitions are assigned.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np

from detectors import DetectorEngine, RuleSet, load_rules
from detectors.deadman import DeadlineIndex
from sitewatch.findings import Finding
from detectors.model import ReadingBatch
from sitewatch.contracts import (SCHEMA_VERSION, TOPIC_READINGS, DeviceStatus, GatewayStatus, decode_readings_records,
                                 now_ms, partition_of)
from streams.pipeline import Pipeline

log = logging.getLogger("sitewatch.detect")

STATE_CHECKPOINT_S = 5.0


def load_rule_set(pipe: Pipeline) -> RuleSet:
    path = pipe.settings.rules_path
    if path is None:
        return RuleSet.default()
    rules = load_rules(path)
    log.info("rules loaded from %s (fingerprint %s)", path, rules.fingerprint)
    return rules


def decode_batch(records: list[bytes]) -> tuple[ReadingBatch, list[GatewayStatus], list[DeviceStatus], list[str]]:
    """Many ``sw.readings`` records → one columnar batch, the gateway and device status records, and the keys
    (``site/device``) of the devices in the batch — taken from the records' device lists, not row by row."""
    rb = decode_readings_records(records)
    if not rb.devs:
        return ReadingBatch.from_columns([], [], [], [], [], []), rb.statuses, rb.device_statuses, []
    table = np.empty((len(rb.devs), 4), dtype=object)
    table[:] = rb.devs
    site, device, family, gw = (table[rb.d, c] for c in range(4))
    has_gw = any(dv[3] for dv in rb.devs)
    batch = ReadingBatch.from_columns(site, device, family, rb.metric, rb.ts, rb.value, gw if has_gw else None)
    keys = list({f"{dv[0]}/{dv[1]}" for dv in rb.devs})
    return batch, rb.statuses, rb.device_statuses, keys


def encode_finding(f: Finding) -> bytes:
    d = f.to_dict()
    d["v"] = SCHEMA_VERSION
    return json.dumps(d, separators=(",", ":")).encode()


class Detection:
    def __init__(self, pipe: Pipeline, checkpoint_s: float = STATE_CHECKPOINT_S):
        self.pipe = pipe
        self.engine = DetectorEngine(load_rule_set(pipe))
        self.checkpoint_s = checkpoint_s
        self.cache: dict[str, dict] = {}  # device key -> latest state (authoritative while we own the partition)
        self.saved_at: dict[str, float] = {}  # device key -> monotonic time of its last table checkpoint
        self.dirty: set[str] = set()
        # Devices with a finding: saved only once the findings are delivered (``take_pending``, ``save``). Saved
        # first, a crash before delivery restored a state that already had those readings, so their replay was
        # dropped as old and the findings never came (the scale-out test: a worker SIGKILLed mid-batch lost them).
        self.pending: set[str] = set()
        self.due = DeadlineIndex()  # device key -> when the deadman must look at it next
        self.indexed: frozenset[int] = frozenset()  # partitions whose devices are in ``due``

    # ------------------------------------------------------------------------------------ state
    def _load(self, keys) -> dict[str, dict]:
        """Cache first, then the table (keys there are bytes, see streams.pipeline)."""
        table = self.pipe.device_state
        out = {}
        for k in keys:
            v = self.cache.get(k)
            if v is None:
                v = table.get(k.encode())
            if v is not None:
                out[k] = v
        return out

    def _keep(self, states: dict[str, dict], urgent: set[str]) -> None:
        now = time.monotonic()
        for k, v in states.items():
            self.cache[k] = v
            self.due.update(k, DetectorEngine.next_due(v))
            if k in urgent:
                self.pending.add(k)
            elif now - self.saved_at.get(k, 0.0) >= self.checkpoint_s:
                self._checkpoint(k, v, now)
            else:
                self.dirty.add(k)

    def _checkpoint(self, k: str, v: dict, now: float) -> None:
        self.pipe.device_state[k.encode()] = v
        self.saved_at[k] = now
        self.dirty.discard(k)

    def take_pending(self) -> set[str]:
        keys, self.pending = self.pending, set()
        return keys

    def save(self, keys: set[str]) -> None:
        now = time.monotonic()
        for k in keys:
            v = self.cache.get(k)
            if v is not None:  # None: the partition moved meanwhile, and its next owner replays the readings
                self._checkpoint(k, v, now)

    def flush_dirty(self, older_than_s: float | None = None) -> int:
        now = time.monotonic()
        limit = self.checkpoint_s if older_than_s is None else older_than_s
        due = [k for k in self.dirty if now - self.saved_at.get(k, 0.0) >= limit]
        for k in due:
            self._checkpoint(k, self.cache[k], now)
        return len(due)

    def forget(self) -> None:
        """Partitions moved (rebalance): the table is the truth again for whatever we are given next."""
        self.cache.clear()
        self.saved_at.clear()
        self.dirty.clear()
        self.pending.clear()  # their findings may not be out: the next owner replays those readings
        self.due.clear()
        self.indexed = frozenset()

    # ------------------------------------------------------------------------------------ stages
    def run_batch(self, records: list[bytes]) -> list[Finding]:
        batch, statuses, dstatuses, keys = decode_batch(records)
        findings: list[Finding] = []
        self.pipe.count("readings_detected", len(batch))
        if len(batch):
            states = self._load(keys)
            before = dict(self.engine.stats)
            found = self.engine.process(batch, states, now_ms())
            self._keep(states, {f.key for f in found})
            findings += found
            for k in ("late", "stale"):
                self.pipe.count(f"readings_{k}", self.engine.stats[k] - before[k])
        for ds in dstatuses:
            states = self._load([f"{ds.site}/{ds.device}"])
            found = self.engine.on_device_status(ds, states)
            self._keep(states, set(states))
            findings += found
        for st in statuses:
            states = self._load([f"{st.site}/gateway:{st.gateway}"])
            found = self.engine.on_status(st, states)
            self._keep(states, set(states))
            findings += found
        return findings

    def run_tick(self, now: int) -> list[Finding]:
        assigned = {tp.partition for tp in self.pipe.app.assignor.assigned_actives() if tp.topic == TOPIC_READINGS}
        if not assigned:
            return []
        parts = self.pipe.settings.kafka_partitions
        if assigned != self.indexed:  # new assignment: index what the table holds for it (one walk)
            for k, v in self.pipe.device_state.items():
                key = k.decode()
                if v is not None and key not in self.cache and partition_of(k, parts) in assigned:
                    self.due.update(key, DetectorEngine.next_due(v))
            self.indexed = frozenset(assigned)
        keys = [k for k in self.due.pop_due(now) if partition_of(k.encode(), parts) in assigned]
        states = self._load(keys)
        before = dict(states)
        findings = self.engine.tick(now, states, keys=list(states))
        for k, v in states.items():  # still watched: back into the index at its next due time
            if v is before.get(k):
                self.due.update(k, DetectorEngine.next_due(v))
        # The engine replaces the dict of a device whose state it changed: identity tells what to save.
        self._keep({k: v for k, v in states.items() if v is not before.get(k)}, {f.key for f in findings})
        self.flush_dirty()
        return findings

    # ------------------------------------------------------------------------------------ hot reload
    def apply_config(self, raw: bytes) -> bool:
        """A ``sw.config`` record: swap in the new rules, or keep the old ones and say exactly why not."""
        from sitewatch.rules import RulesError

        try:
            msg = json.loads(raw)
            rules = RuleSet.from_yaml_text(msg["text"], filename=f"sw.config@{msg.get('fingerprint', '?')}")
        except RulesError as e:
            log.error("rejected rules from sw.config; the previous rules (fingerprint %s) keep running:\n%s",
                      self.engine.rules.fingerprint, e)
            return False
        except (ValueError, KeyError, TypeError) as e:
            log.error("rejected malformed sw.config record (%s); previous rules keep running", e)
            return False
        if rules.fingerprint == self.engine.rules.fingerprint:
            return True
        self.engine = DetectorEngine(rules)
        log.warning("rules applied from sw.config: fingerprint %s (published by %s)", rules.fingerprint,
                    msg.get("author", "?"))
        return True


def register(pipe: Pipeline) -> None:
    s = pipe.settings
    detection = Detection(pipe)
    pipe.detection = detection  # type: ignore[attr-defined]

    async def emit(findings: list[Finding]) -> None:
        keys = detection.take_pending()  # before any await: the states behind exactly these findings
        sent = [await pipe.hazards.send(key=f.key.encode(), value=encode_finding(f)) for f in findings]
        for fut in sent:
            await fut  # delivered: only now may the state that produced them be saved
        detection.save(keys)
        pipe.count("findings", len(findings))

    @pipe.app.agent(pipe.readings, name="detect")
    async def detect(stream):
        async for batch in stream.take(s.batch_size, within=s.batch_within_s):
            await emit(detection.run_batch(batch))

    @pipe.app.timer(5.0, name="deadman-tick")
    async def tick():
        await emit(detection.run_tick(now_ms()))

    @pipe.app.on_partitions_revoked.connect
    async def revoked(sender, revoked, **kwargs):
        detection.flush_dirty(older_than_s=0.0)  # hand over the latest state, not the last checkpoint
        detection.forget()

    @pipe.app.task
    async def follow_config():
        """Every worker reads all of ``sw.config`` (one partition, no consumer group) from the beginning, then
        follows it: the last valid record wins. A consumer group would give each config to one worker only."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from sitewatch.contracts import TOPIC_CONFIG

        tp = TopicPartition(TOPIC_CONFIG, 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, enable_auto_commit=False,
                                    group_id=None, fetch_max_wait_ms=500, **s.kafka_options())
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            async for msg in consumer:
                detection.apply_config(msg.value)
        finally:
            await consumer.stop()
