"""Stage 2: sw.readings → detectors (numpy, per-device state in a Faust table) → sw.hazards.

Readings of a whole batch are decoded into one columnar ``ReadingBatch`` and run through the detector engine
in a single call; Python work per *device* (state in and out) remains, per *reading* none.

Device state lives in memory and is checkpointed to the changelogged Faust table in *rounds*, and the stage
acknowledges its input records only once a round has written the states that hold their readings
(``noack_take``, ``hold``, ``checkpoint_round``):

- a device whose batch produced a finding is saved at once, as soon as the findings are delivered (alarm state is
  never lost on a crash);
- every other changed state waits for the next round: every ``state_checkpoint_s`` (default 30 s), when
  ``state_checkpoint_max_readings`` readings are held, as soon as the stream pauses with no records waiting
  (``ROUND_IDLE_S``), and at once when a rebalance or a shutdown begins (Faust waits for every taken record to be
  acknowledged before it commits and hands partitions over).

A crash therefore replays exactly the records after the last round onto the states that round wrote: nothing is
lost, whatever the interval. (Before, states were saved at most every 5 s per device while offsets were committed
after every batch, so a crash rolled a quiet device's state back by up to 5 s of readings; and a large fleet
catching up wrote a checkpoint about once per reading — one export and one changelog record per device every
5 s of wall time, the worker's largest cost at 25,000 devices.) Replayed readings older than a restored state
are dropped by the engine (a device saved after a finding is ahead of the round); alarm levels are re-derived
from the replay, and the backlog treats a re-raised level on an open ticket as an update, not a new ticket.

A batch, the clock tick and each chunk of a round run one at a time (``Detection.lock``), so no finding is in
flight when a round writes a state or acknowledges. Batches go on between a round's chunks: a device's state only
moves forward, so a state written after the round began holds at least the readings of every record the round
acknowledges (and perhaps later ones, whose replay the engine drops as old).

The engine runs *resident*: it keeps each device's series block (last values, fault guards, baselines — the
largest part of a state) in its own arrays across batches, and the states it hands back carry no ``m``. The cache
holds those states; every write to the table or to a snapshot goes through ``engine.export_state``, which fills
``m`` in, so the table, the changelog and the snapshots only ever see full JSON states. Cache and engine store are
dropped together (``forget``), and a state read back from the table or a snapshot is full and replaces the block
the engine held. A rules reload exports the cache before the new engine takes over.

A clock tick (each worker, over the partitions it owns) runs the silence (deadman) checks, which no reading can
trigger by definition. It asks a ``DeadlineIndex`` which devices are due instead of walking the state table, so
its cost follows the number of devices falling silent, not the size of the fleet; the index is rebuilt from the
table (one walk) when partitions are assigned.

Snapshots (``streams.state_snapshots``, handed in by ``app.worker``; on for the local stack, whose Kafka is in
memory and loses the changelog on a full stop): every state written to the table is also queued for an upsert
into the backlog database, written by a timer on a worker thread; a clean shutdown writes every device's current
state. When neither the cache nor the table knows a device of a batch, its snapshot is read (one query per
batch, devices without one remembered) and used as its state. A state is never saved, to the table or a
snapshot, while findings it produced are not yet delivered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Collection, Iterable, Mapping, Protocol

import numpy as np

from detectors import DetectorEngine, RuleSet, load_rules
from detectors.deadman import DeadlineIndex
from sitewatch.findings import Finding
from detectors.model import ReadingBatch
from sitewatch.contracts import (SCHEMA_VERSION, TOPIC_READINGS, DeviceStatus, GatewayStatus, decode_readings_records,
                                 now_ms, partition_of)
from sitewatch.settings import Settings
from streams.input_watch import BrokerWatch, StallWatch, kafka_probe
from streams.pipeline import Pipeline

log = logging.getLogger("sitewatch.detect")

STATE_CHECKPOINT_S = Settings.model_fields["state_checkpoint_s"].default  # a round at least this often
STATE_CHECKPOINT_MAX_READINGS = Settings.model_fields["state_checkpoint_max_readings"].default  # or this many held
ROUND_IDLE_S = 0.25  # or when no batch came for this long and nothing waits: a quiet stream commits what it has
# States written per turn of a round: Faust's producer buffer holds 100 messages before it stalls every stream
# (``ProducerBuffer.max_messages``; the conductor waits for it to ebb), and a round waits for the buffer to drain
# between chunks — so the changelog records of a fleet's round trickle out instead of stopping the worker.
ROUND_CHUNK = 100
ROUND_POLL_S = 0.1  # how often the stage looks whether a round is due
SLOW_ROUND_MS = 100.0  # a round taking longer is logged (INFO): the fleet's checkpoint cost, visible
SNAPSHOT_FLUSH_S = 1.0
STALL_S = 15.0  # records waiting in sw.readings and none taken for this long: the stage, not the fleet, stopped
NO_SNAPSHOT_MAX = 1_000_000  # devices remembered as having no snapshot (then forgotten all at once)


class ReadingRecord(Protocol):
    """The tamper-evident record of readings received (``blackbox.readings.ReadingLog`` is one): a batch is added
    by reference on the hot path; once per window the window's entries are taken (a digest per site) and appended
    to the chain."""

    def add_batch(self, rb: Any) -> None: ...

    def due(self) -> bool: ...

    def take(self, at_ms: int) -> list: ...

    def append(self, entries: list) -> None: ...


class SnapshotStore(Protocol):
    """What this stage needs of a snapshot store (``streams.state_snapshots.StateSnapshots`` is one); blocking
    calls, run on a worker thread."""

    def save(self, states: Mapping[str, dict]) -> int: ...

    def load(self, keys: Iterable[str]) -> dict[str, dict]: ...

    def load_all(self) -> dict[str, dict]: ...


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
    return for_detectors(decode_readings_records(records))


def for_detectors(rb) -> tuple[ReadingBatch, list[GatewayStatus], list[DeviceStatus], list[str]]:
    """A decoded ``sw.readings`` batch (``sitewatch.contracts.decode_readings_records``) as the detectors take it."""
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
    def __init__(self, pipe: Pipeline, checkpoint_s: float = STATE_CHECKPOINT_S, snapshots: SnapshotStore | None = None,
                 max_held_readings: int = STATE_CHECKPOINT_MAX_READINGS, waiting: Callable[[], int] = lambda: 0,
                 drained: Callable[[], Awaitable[Any]] = lambda: asyncio.sleep(0)):
        self.pipe = pipe
        self.waiting = waiting  # records not yet taken (readings_lag): a pause with these is no pause
        self.drained = drained  # until the table's changelog records of a chunk are handed to the producer
        self.engine = DetectorEngine(load_rule_set(pipe), resident=True)
        self.checkpoint_s = checkpoint_s
        self.max_held_readings = max_held_readings
        self.cache: dict[str, dict] = {}  # device key -> latest state (authoritative while we own the partition)
        self.dirty: set[str] = set()  # changed since the table last got them: the next round writes them
        # Taken records not yet acknowledged, with the ``Stream.ack`` of their stream: acknowledged by the round that
        # writes the states holding their readings (``hold``, ``checkpoint_round``).
        self.held: list[tuple[Any, list, int]] = []
        self.held_readings = 0
        self.held_since = 0.0  # monotonic time the oldest held record was taken
        self.last_batch = 0.0
        self.lock = asyncio.Lock()  # batch + emit, tick + emit, round: one at a time
        # Devices with a finding: saved only once the findings are delivered (``take_pending``, ``save``). Saved
        # first, a crash before delivery restored a state that already had those readings, so their replay was
        # dropped as old and the findings never came (the scale-out test: a worker SIGKILLed mid-batch lost them).
        self.pending: set[str] = set()
        self.sending: dict[str, int] = {}  # device key -> emits delivering its findings right now
        self.due = DeadlineIndex()  # device key -> when the deadman must look at it next
        self.indexed: frozenset[int] = frozenset()  # partitions whose devices are in ``due``
        self.snapshots = snapshots
        self.to_snapshot: dict[str, dict] = {}  # checkpointed, not yet written to the snapshot store
        self.restored: dict[str, dict] = {}  # read from snapshots for the coming batch (table misses)
        self.no_snapshot: set[str] = set()
        self.generation = 0  # bumped by ``forget``: a snapshot read begun before a rebalance is dropped
        self.snap_indexed: frozenset[int] = frozenset()  # partitions whose snapshots are in ``due``
        self.db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-snapshots") if snapshots else None
        self._warned_at = -1e9

    # ------------------------------------------------------------------------------------ state
    def _load(self, keys) -> dict[str, dict]:
        """Cache first, then the table (keys there are bytes, see streams.pipeline), then a snapshot read for
        this batch (``restore``)."""
        table = self.pipe.device_state
        out = {}
        for k in keys:
            v = self.cache.get(k)
            if v is None:
                v = table.get(k.encode())
                if v is None and self.restored:
                    v = self.restored.get(k)  # until ``_keep`` caches its successor
            if v is not None:
                out[k] = v
        return out

    async def restore(self, keys: Iterable[str]) -> int:
        """Read the snapshots of the devices neither the cache nor the table knows (one query), for ``_load``.

        Only a miss consults a snapshot, so with a durable changelog (production Kafka) the table's state always
        wins. A failed read is retried with the next batch (the device starts fresh meanwhile, as without
        snapshots)."""
        if self.snapshots is None:
            return 0
        table = self.pipe.device_state
        miss = [k for k in keys if k not in self.cache and k not in self.restored and k not in self.no_snapshot
                and table.get(k.encode()) is None]
        if not miss:
            return 0
        gen = self.generation
        try:
            found = await asyncio.get_running_loop().run_in_executor(self.db, self.snapshots.load, miss)
        except Exception as e:  # noqa: BLE001 - detection goes on without the snapshots
            self._warn("state snapshots not readable (%s: %s); %d device(s) start without their saved state",
                       type(e).__name__, e, len(miss))
            return 0
        if gen != self.generation:  # partitions moved while reading: the table is the truth for what we get next
            return 0
        if len(self.no_snapshot) > NO_SNAPSHOT_MAX:
            self.no_snapshot.clear()
        for k in miss:
            v = found.get(k)
            if v is None:
                self.no_snapshot.add(k)
            else:
                self.restored[k] = v
        if found:
            log.warning("restored the state of %d device(s) from snapshots (the state table had none)", len(found))
        return len(found)

    async def restore_assigned(self) -> int:
        """On a new assignment: the snapshots of the assigned devices the table does not know go into ``restored``
        and the deadman index, so a device that fell silent while the stack was down is still found silent —
        no reading of it will come to trigger ``restore``. One read of the snapshot table per assignment."""
        if self.snapshots is None:
            return 0
        assigned = {tp.partition for tp in self.pipe.app.assignor.assigned_actives() if tp.topic == TOPIC_READINGS}
        if not assigned or assigned == self.snap_indexed:
            return 0
        gen = self.generation
        try:
            rows = await asyncio.get_running_loop().run_in_executor(self.db, self.snapshots.load_all)
        except Exception as e:  # noqa: BLE001 - tried again on the next tick
            self._warn("state snapshots not readable (%s: %s); silent devices are indexed later",
                       type(e).__name__, e)
            return 0
        if gen != self.generation:
            return 0
        table, parts, n = self.pipe.device_state, self.pipe.settings.kafka_partitions, 0
        for k, v in rows.items():
            kb = k.encode()
            if (k in self.cache or k in self.restored or partition_of(kb, parts) not in assigned
                    or table.get(kb) is not None):
                continue
            self.restored[k] = v
            self.due.update(k, DetectorEngine.next_due(v))
            n += 1
        self.snap_indexed = frozenset(assigned)
        if n:
            log.warning("restored the state of %d device(s) of partitions %s from snapshots", n, sorted(assigned))
        return n

    async def flush_snapshots(self, everything: bool = False) -> int:
        """Write the queued states (``everything``: every state in the cache whose findings are out, on a clean
        shutdown) to the snapshot store on its thread."""
        if self.snapshots is None:
            return 0
        if everything:
            busy = self._in_flight()
            quiet = {k: v for k, v in self.cache.items() if k not in busy}
            self.to_snapshot.update(self.engine.export_states(quiet))
        batch, self.to_snapshot = self.to_snapshot, {}
        if not batch:
            return 0
        try:
            await asyncio.get_running_loop().run_in_executor(self.db, self.snapshots.save, batch)
        except Exception as e:  # noqa: BLE001 - a timer must not crash the worker; the states wait for the next turn
            for k, v in batch.items():
                self.to_snapshot.setdefault(k, v)  # a newer checkpoint queued meanwhile wins
            self._warn("state snapshots not written (%s: %s); %d device state(s) kept for the next try",
                       type(e).__name__, e, len(self.to_snapshot))
            return 0
        return len(batch)

    def _warn(self, msg: str, *args) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 10.0:
            self._warned_at = now
            log.warning(msg, *args)

    def _keep(self, states: dict[str, dict], urgent: set[str]) -> None:
        for k, v in states.items():
            self.cache[k] = v
            if self.restored:
                self.restored.pop(k, None)
            self.due.update(k, DetectorEngine.next_due(v))
            if k in urgent:
                self.pending.add(k)
            else:
                self.dirty.add(k)

    def _in_flight(self) -> set[str]:
        """Devices whose findings are not delivered yet (to be taken, or being sent): their states wait."""
        return self.pending | self.sending.keys() if self.pending or self.sending else set()

    def _checkpoint(self, keys: Collection[str]) -> int:
        """Write the cached states of these devices to the table (and queue their snapshots); a device whose
        findings are not delivered yet waits as dirty — the emit delivering them saves it (``save``)."""
        cache, busy = self.cache, self._in_flight()
        todo = {k: cache[k] for k in keys if k in cache and k not in busy}
        if busy:
            self.dirty.update(k for k in busy.intersection(keys) if k in cache)
        # the full states: the engine holds the series blocks of cached ones (all of them exported in one pass)
        table, snap = self.pipe.device_state, self.to_snapshot if self.snapshots is not None else None
        for k, v in self.engine.export_states(todo).items():
            table[k.encode()] = v
            if snap is not None:
                snap[k] = v
        self.dirty.difference_update(todo)
        return len(todo)

    def take_pending(self) -> set[str]:
        keys, self.pending = self.pending, set()
        for k in keys:
            self.sending[k] = self.sending.get(k, 0) + 1
        return keys

    def save(self, keys: set[str]) -> None:
        for k in keys:
            n = self.sending.pop(k, 0) - 1
            if n > 0:
                self.sending[k] = n
        self._checkpoint(keys)  # a device gone from the cache: the partition moved, its next owner replays

    def flush_dirty(self) -> int:
        """Write every changed state whose findings are out, now (a rebalance hands the latest state over)."""
        return self._checkpoint(list(self.dirty))

    # ------------------------------------------------------------------------------------ rounds
    def hold(self, ack: Any, events: list, readings: int) -> None:
        """Records whose readings are in the cache's states: acknowledged by the next round."""
        now = time.monotonic()
        if not self.held:
            self.held_since = now
        self.held.append((ack, events, readings))
        self.held_readings += readings
        self.last_batch = now

    def round_due(self, urgent: bool = False) -> bool:
        """Held records, and: ``urgent`` (a rebalance or shutdown is waiting for them), the interval is up, too
        many readings held, or the stream paused."""
        if not self.held:
            return False
        now = time.monotonic()
        return (urgent or now - self.held_since >= self.checkpoint_s or self.held_readings >= self.max_held_readings
                or (now - self.last_batch >= ROUND_IDLE_S and not self.waiting()))

    async def checkpoint_round(self) -> int:
        """Write every state changed by the held records, then acknowledge them. Returns the number of records
        acknowledged.

        The round takes ``lock`` per chunk of states, so batches go on between its chunks and an alarm does not
        wait for a large fleet's round. That is safe because each device's state only moves forward: a state
        written after the round began holds at least the readings of the records held when it began (and maybe
        later ones, whose replay after a crash the engine drops as old). Under the lock no finding is in flight
        (``emit`` completes inside it), so a state with undelivered findings is never what a round writes.
        Partitions that move meanwhile (``forget``) take the held records with them: they are not acknowledged,
        and their next owner reads them again."""
        t0, written = time.perf_counter(), 0
        async with self.lock:
            gen, held, keys = self.generation, self.held, list(self.dirty)
            self.held, self.held_readings = [], 0
        # One pass: a state dirty again after its chunk was written then with every held record's readings, and
        # waits for the next round with the records that changed it since.
        for i in range(0, len(keys), ROUND_CHUNK):
            if i:
                await self.drained()  # the last chunk's changelog records out, and a waiting batch goes first
            async with self.lock:
                if gen != self.generation:
                    return 0
                written += self._checkpoint([k for k in keys[i:i + ROUND_CHUNK] if k in self.dirty])
        async with self.lock:
            if gen != self.generation:
                return 0
            if self.pending or self.sending:  # findings in flight (only a caller without the lock sees this)
                self.held = held + self.held
                self.held_readings += sum(r for *_, r in held)
                return 0
            n = 0
            for ack, events, _ in held:
                for ev in events:
                    await ack(ev)
                n += len(events)
        self.pipe.count("state_rounds", 1)
        self.pipe.count("states_checkpointed", written)
        ms = (time.perf_counter() - t0) * 1000
        (log.info if ms >= SLOW_ROUND_MS else log.debug)("state round: %d state(s) written, %d record(s) "
                                                         "acknowledged in %.0f ms", written, n, ms)
        return n

    def forget(self) -> None:
        """Partitions moved (rebalance): the table is the truth again for whatever we are given next."""
        self.cache.clear()
        self.engine.drop_resident()  # with the cache: a state read back later is a full one
        self.dirty.clear()
        self.held, self.held_readings = [], 0  # not acknowledged: the next owner reads them again
        self.pending.clear()  # their findings may not be out: the next owner replays those readings
        self.sending.clear()
        self.due.clear()
        self.indexed = frozenset()
        self.restored.clear()
        self.no_snapshot.clear()
        self.generation += 1
        self.snap_indexed = frozenset()

    # ------------------------------------------------------------------------------------ stages
    def run_batch(self, records: list[bytes]) -> list[Finding]:
        return self.run_decoded(decode_batch(records))

    @staticmethod
    def keys_of(decoded) -> list[str]:
        """Every state key a decoded batch touches (devices, announced devices, gateways)."""
        _, statuses, dstatuses, keys = decoded
        return [*keys, *(f"{ds.site}/{ds.device}" for ds in dstatuses),
                *(f"{st.site}/gateway:{st.gateway}" for st in statuses)]

    def run_decoded(self, decoded) -> list[Finding]:
        batch, statuses, dstatuses, keys = decoded
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
        # the cached states in full: the new engine starts without the old one's series blocks
        self.cache = self.engine.export_states(self.cache)
        self.engine = DetectorEngine(rules, resident=True)
        log.warning("rules applied from sw.config: fingerprint %s (published by %s)", rules.fingerprint,
                    msg.get("author", "?"))
        return True


def readings_lag(pipe: Pipeline) -> int:
    """Records of the assigned ``sw.readings`` partitions the detect stage has not taken yet: the consumer's high
    watermark minus Faust's read offset (the last record it handed to the stream), for ``StallWatch``. The read
    offset, not the fetch position: a fetch that ran ahead of the stream (what Faust dropped) must count."""
    try:
        consumer = pipe.app.consumer
        read = consumer._read_offset  # faust-streaming 0.15.3; no public accessor
        total = 0
        for tp in pipe.app.assignor.assigned_actives():
            if tp.topic != TOPIC_READINGS:
                continue
            end = consumer.highwater(tp)
            if not end or end <= 0:
                continue
            last = read.get(tp)
            total += end if last is None else max(0, end - 1 - last)
        return total
    except Exception:  # noqa: BLE001 - a diagnostic must not stop the tick: unknown counts as nothing waiting
        return 0


def register(pipe: Pipeline, snapshots: SnapshotStore | None = None, record: ReadingRecord | None = None) -> None:
    s = pipe.settings

    async def changelog_drained() -> None:
        try:
            await pipe.app.producer.buffer.flush()
        except RuntimeError:  # the producer is stopping: its own flush sends what is left
            await asyncio.sleep(0)

    detection = Detection(pipe, checkpoint_s=s.state_checkpoint_s, snapshots=snapshots,
                          max_held_readings=s.state_checkpoint_max_readings, waiting=lambda: readings_lag(pipe),
                          drained=changelog_drained)
    record_db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="record-db")  # appends off the event loop
    unrecorded: list = []  # entries a database outage left behind, appended first next time

    async def write_record() -> None:
        entries = unrecorded + record.take(now_ms())  # taken on the loop, where batches are added
        unrecorded.clear()
        if not entries:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(record_db, record.append, entries)
            pipe.count("record_entries", len(entries))
        except Exception:  # noqa: BLE001 - the database is away: keep the entries, try again next window
            unrecorded.extend(entries)
            log.exception("could not append %d readings record entries; retrying with the next window", len(entries))
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
        async for events in stream.noack_take(s.batch_size, within=s.batch_within_s):
            async with detection.lock:
                rb = decode_readings_records([ev.value for ev in events])
                if record is not None:
                    record.add_batch(rb)  # references only; digested per site once per window
                decoded = for_detectors(rb)
                if snapshots is not None:
                    await detection.restore(Detection.keys_of(decoded))
                await emit(detection.run_decoded(decoded))
                detection.hold(stream.ack, events, len(rb.ts))  # acknowledged by the round that saves their states
            if record is not None and record.due():
                await write_record()

    @pipe.app.task
    async def checkpoint_rounds():
        """State rounds, beside the stream rather than in it (batches go on between a round's chunks). A
        rebalance or shutdown makes one due at once: Faust waits for every taken record to be acknowledged
        (``Consumer.wait_empty``) before it commits and lets go."""
        while True:
            await asyncio.sleep(ROUND_POLL_S)
            try:
                if detection.round_due(pipe.app.rebalancing or pipe.app.should_stop):
                    await detection.checkpoint_round()
            except Exception:  # noqa: BLE001 - the records stay held and are tried again next turn
                log.exception("state checkpoint round failed; its records stay unacknowledged")

    if snapshots is not None:
        @pipe.app.timer(SNAPSHOT_FLUSH_S, name="state-snapshots")
        async def write_snapshots():
            await detection.flush_snapshots()

        @pipe.app.on_before_shutdown.connect
        async def final_snapshots(sender, **kwargs):
            # The consumer has stopped: every state in the cache whose findings are out is written, so a restart
            # on a fresh broker (local Kafka is in memory) picks up exactly where this worker stopped.
            n = await detection.flush_snapshots(everything=True)
            log.warning("shutdown: state of %d device(s) written to snapshots", n)

    if record is not None:
        @pipe.app.timer(1.0, name="readings-record")
        async def record_window():
            if record.due() or unrecorded:  # a quiet stream's last window closes without a next batch
                await write_record()

        @pipe.app.on_before_shutdown.connect
        async def final_record(sender, **kwargs):
            await write_record()  # a clean stop leaves no received batch off the record

    watch = BrokerWatch(kafka_probe(s.kafka_bootstrap, s.kafka_options()), s.deadman_settle_s)
    stall = StallWatch(lambda: readings_lag(pipe), lambda: pipe.counters.get("readings_detected", 0),
                       stall_s=STALL_S, settle_s=s.deadman_settle_s)

    @pipe.app.timer(5.0, name="deadman-tick")
    async def tick():
        if snapshots is not None:
            await detection.restore_assigned()
        # not while Kafka is away, the stage stands still or the worker catches up (streams/input_watch.py)
        reachable, moving = await watch.trusted(), stall.trusted()
        if reachable and moving:
            async with detection.lock:  # its findings delivered before a round may acknowledge anything
                await emit(detection.run_tick(now_ms()))

    @pipe.app.on_partitions_revoked.connect
    async def revoked(sender, revoked, **kwargs):
        detection.flush_dirty()  # hand over the latest state, not the last round's
        detection.forget()
        if record is not None:
            await write_record()  # what this worker received is on the record before another takes over

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
