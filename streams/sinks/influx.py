"""The time-series sink: ``sw.readings`` + ``sw.hazards`` → InfluxDB, at least once, nothing dropped.

A separate kafka-python consumer group (not a Faust agent) because its job is I/O-bound batching with one
rule that matters more than speed: **Kafka offsets are committed only after the database acknowledged the
write.** While the database is slow or down the write is retried with exponential backoff (tenacity) in a
writer thread; meanwhile the main thread keeps calling ``poll()`` on *paused* partitions so the consumer stays
in its group (no rebalance storm, no re-reading) and fetches nothing new. The backlog waits in Kafka, and when
the database is back the sink catches up at full batch size. Points that are re-delivered after a crash or a
rebalance overwrite themselves (same measurement, tags and timestamp), so at-least-once is harmless.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable

from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from sitewatch.contracts import TOPIC_HAZARDS, TOPIC_READINGS
from streams.sinks.lineproto import Batch, LineBuilder
from streams.sinks.writers import EVENTS, READINGS, RejectedWrite, TransientWriteError, Writer

log = logging.getLogger("sitewatch.sink")


@dataclass
class SinkOptions:
    bootstrap: str = "127.0.0.1:9092"
    group_id: str = "sitewatch-sink"
    batch_points: int = 50_000  # flush when this many points are pending …
    linger_s: float = 0.5  # … or when the oldest pending record is this old
    max_poll_records: int = 5_000
    # Tansu waits the full rebalance timeout (= max.poll.interval) on join (docs/architecture.md, "The local stack, as measured"); the pause/poll loop
    # keeps polling during DB outages, so a short value is safe here.
    max_poll_interval_ms: int = 3000
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    retry_max_wait_s: float = 10.0
    progress_every_s: float = 5.0
    auto_offset_reset: str = "earliest"
    kafka_options: dict = field(default_factory=dict)  # TLS / SASL (sitewatch.settings.Settings.kafka_options)


@dataclass
class SinkStats:
    points: int = 0
    readings: int = 0
    hazards: int = 0
    health: int = 0
    records: int = 0
    batches: int = 0
    retries: int = 0
    dropped_by_db: int = 0  # acknowledged by the DB but outside its retention window
    skipped: int = 0  # malformed input, logged with its reason
    commit_failures: int = 0
    lag: int | None = None
    db_ok: bool = True
    started: float = field(default_factory=time.monotonic)


def _estimate(records: list) -> int:
    """Points in not-yet-decoded records, from their size (~25 bytes per packed reading): flush trigger only."""
    return sum(len(r.value or b"") // 25 + 1 for r in records)


@dataclass
class _InFlight:
    future: Future
    batch: Batch
    offsets: dict  # TopicPartition → next offset to commit once the write is acknowledged
    records: int


class Sink:
    """One consumer of the sink group. ``run(stop)`` until ``stop`` is set; safe to kill at any moment."""

    def __init__(self, writer: Writer, opts: SinkOptions, builder: LineBuilder | None = None,
                 echo: Callable[[str], None] | None = None):
        self.writer = writer
        self.opts = opts
        self.builder = builder or LineBuilder()
        self.echo = echo or log.info
        self.stats = SinkStats()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sink-writer")
        self._stop = threading.Event()  # the caller's stop event (set in run)
        self._abort = threading.Event()  # ours: the loop ended, give up any retry in flight
        self.consumer = None
        self._end_offsets = None  # streams.offsets.EndOffsets, opened by the first progress line

    # ------------------------------------------------------------------------------------------ kafka
    def _consumer(self):
        from kafka import KafkaConsumer

        return KafkaConsumer(
            TOPIC_READINGS,
            TOPIC_HAZARDS,
            bootstrap_servers=self.opts.bootstrap,
            group_id=self.opts.group_id,
            client_id=f"{self.opts.group_id}",
            enable_auto_commit=False,
            auto_offset_reset=self.opts.auto_offset_reset,
            max_poll_records=self.opts.max_poll_records,
            max_poll_interval_ms=self.opts.max_poll_interval_ms,
            session_timeout_ms=self.opts.session_timeout_ms,
            heartbeat_interval_ms=self.opts.heartbeat_interval_ms,
            fetch_max_wait_ms=100,
            **self.opts.kafka_options,
        )

    # ------------------------------------------------------------------------------------------ writing
    def _write_with_retry(self, batch: Batch) -> None:
        """Runs in the writer thread: returns once every point is acknowledged (or the sink is stopping)."""

        def before_sleep(rs: RetryCallState) -> None:
            self.stats.retries += 1
            self.stats.db_ok = False
            exc = rs.outcome.exception() if rs.outcome else None
            log.warning("database write failed (%s); retry %d in %.1f s — offsets not committed, data waits in Kafka",
                        exc, rs.attempt_number, rs.next_action.sleep if rs.next_action else 0)

        retrying = Retrying(
            retry=retry_if_exception_type(TransientWriteError),
            wait=wait_exponential(multiplier=0.2, min=0.2, max=self.opts.retry_max_wait_s),
            stop=lambda rs: self._stopping(),
            sleep=self._interruptible_sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        for target, lines in ((READINGS, batch.readings), (EVENTS, batch.events)):
            if lines:
                retrying(self._write_isolating, lines, target)
        self.stats.db_ok = True

    def _stopping(self) -> bool:
        return self._stop.is_set() or self._abort.is_set()

    def _interruptible_sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping() and time.monotonic() < end:
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))

    def _write_isolating(self, lines: list[str], target: str) -> None:
        """Write; if the DB rejects the content, bisect to find the bad line(s) and log them (never loop)."""
        try:
            res = self.writer.write(lines, target)
            if res.dropped:
                self.stats.dropped_by_db += res.dropped
                log.warning("database dropped %d point(s): %s", res.dropped, res.note)
            return
        except RejectedWrite as e:
            if len(lines) == 1:
                self.stats.skipped += 1
                log.error("database rejected a line, skipped: %s — line: %.300s", e, lines[0])
                return
        mid = len(lines) // 2
        self._write_isolating(lines[:mid], target)
        self._write_isolating(lines[mid:], target)

    # ------------------------------------------------------------------------------------------ loop
    def run(self, stop: threading.Event, max_seconds: float | None = None) -> SinkStats:
        """Poll → build lines → write (one batch in flight in the writer thread while the next one fills)
        → commit after the acknowledgement. Returns when ``stop`` is set or ``max_seconds`` have passed."""
        self._stop = stop
        try:
            self.builder.seed_open_episodes(getattr(self.writer, "open_episodes", lambda: {})())
        except Exception as e:  # a best effort: only the age display depends on it
            log.warning("could not read open hazard episodes: %s", e)
        consumer = self.consumer = self._consumer()
        deadline = time.monotonic() + max_seconds if max_seconds else None
        pending: list = []  # ConsumerRecords not yet handed to the writer
        pending_points = 0
        first_pending = 0.0
        inflight: _InFlight | None = None
        last_progress = time.monotonic()
        last_points = 0
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                if inflight is not None and inflight.future.done():
                    if not self._finish(consumer, inflight):
                        break
                    inflight = None
                full = pending_points >= self.opts.batch_points
                if full and inflight is not None:
                    # backpressure: the next batch is ready but the database has not taken the last one —
                    # stop fetching (paused partitions) but keep polling so the group keeps us
                    consumer.pause(*consumer.assignment())
                    polled = consumer.poll(timeout_ms=100)
                else:
                    if consumer.paused():
                        consumer.resume(*consumer.paused())
                    polled = consumer.poll(timeout_ms=100)
                for recs in polled.values():  # after a rebalance, new partitions may deliver while paused
                    if recs and not pending:
                        first_pending = time.monotonic()
                    pending.extend(recs)
                    pending_points += _estimate(recs)
                now = time.monotonic()
                if inflight is None and pending and (
                        pending_points >= self.opts.batch_points or now - first_pending >= self.opts.linger_s):
                    inflight = self._submit(pending)
                    pending, pending_points = [], 0
                if now - last_progress >= self.opts.progress_every_s:
                    self._progress(consumer, now - last_progress, self.stats.points - last_points)
                    last_progress, last_points = now, self.stats.points
            # graceful end: finish what is in flight, then one last attempt for the rest (if the database is
            # down, the retry loop gives up at once because stop is set, and the records stay in Kafka)
            if inflight is not None:
                wait([inflight.future])
                ok = self._finish(consumer, inflight)
                if ok and pending:
                    self._finish(consumer, self._submit(pending), block=True)
            elif pending:
                self._finish(consumer, self._submit(pending), block=True)
        finally:
            self._abort.set()
            self._pool.shutdown(wait=True)
            consumer.close(autocommit=False)
            if self._end_offsets is not None:
                self._end_offsets.close()
        return self.stats

    def _decode(self, records: list) -> tuple[list[dict], list[dict]]:
        readings, hazards = [], []
        for r in records:
            try:
                obj = json.loads(r.value)
            except (TypeError, UnicodeDecodeError, json.JSONDecodeError) as e:
                self.stats.skipped += 1
                log.error("undecodable record %s[%d]@%d skipped: %s", r.topic, r.partition, r.offset, e)
                continue
            if not isinstance(obj, dict):
                self.stats.skipped += 1
                log.error("record %s[%d]@%d is not an object, skipped", r.topic, r.partition, r.offset)
                continue
            (hazards if r.topic == TOPIC_HAZARDS else readings).append(obj)
        return readings, hazards

    def _submit(self, records: list) -> "_InFlight":
        """Decode and build in this thread (hazard episode state stays in order), write in the writer thread."""
        from kafka.structs import TopicPartition

        readings, hazards = self._decode(records)
        batch = self.builder.build(readings, hazards)
        for reason in batch.skipped:
            log.error("skipped input: %s", reason)
        self.stats.skipped += len(batch.skipped)
        offsets: dict = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            if r.offset + 1 > offsets.get(tp, -1):
                offsets[tp] = r.offset + 1
        return _InFlight(self._pool.submit(self._write_with_retry, batch), batch, offsets, len(records))

    def _finish(self, consumer, f: "_InFlight", block: bool = False) -> bool:
        """Account for a finished write and commit its offsets. False if the sink is stopping without the
        database's acknowledgement (the records stay uncommitted in Kafka)."""
        from kafka.errors import CommitFailedError, KafkaError
        from kafka.structs import OffsetAndMetadata

        if block:
            wait([f.future])
        exc = f.future.exception()
        if exc is not None:
            if isinstance(exc, TransientWriteError) and self._stopping():
                log.warning("stopping before the database acknowledged: %d record(s) stay uncommitted in Kafka",
                            f.records)
                return False
            raise exc  # RejectedWrite is handled inside; anything else is a bug worth crashing on
        b = f.batch
        self.stats.points += b.points
        self.stats.readings += b.n_readings
        self.stats.hazards += b.n_hazards
        self.stats.health += b.n_health
        self.stats.records += f.records
        self.stats.batches += 1
        mine = consumer.assignment()
        commit = {tp: OffsetAndMetadata(off, "", -1) for tp, off in f.offsets.items() if tp in mine}
        if commit:
            try:
                consumer.commit(commit)
            except (CommitFailedError, KafkaError) as e:
                # the group moved on (rebalance): another member re-reads from the last commit; the
                # duplicate points it writes overwrite ours — nothing lost
                self.stats.commit_failures += 1
                log.warning("offset commit failed after a successful write (%s); records will be re-delivered", e)
        return True

    def _progress(self, consumer, dt: float, points: int) -> None:
        try:
            assigned = list(consumer.assignment())
            if assigned:
                # not consumer.end_offsets(): Tansu's ListOffsets is short by up to a batch (streams/offsets.py)
                if self._end_offsets is None:
                    from streams.offsets import EndOffsets

                    self._end_offsets = EndOffsets(self.opts.bootstrap, (TOPIC_READINGS, TOPIC_HAZARDS),
                                                   **self.opts.kafka_options)
                ends = self._end_offsets()
                self.stats.lag = sum(max(0, ends[(tp.topic, tp.partition)] - consumer.position(tp))
                                     for tp in assigned)
        except Exception:  # lag is informational only
            self.stats.lag = None
        s = self.stats
        lag = "?" if s.lag is None else f"{s.lag:,}"
        self.echo(f"sink: {points / dt:,.0f} points/s  lag {lag} records  written {s.points:,} "
                  f"(readings {s.readings:,}, hazards {s.hazards:,}, health {s.health:,})  "
                  f"retries {s.retries}  db {'ok' if s.db_ok else 'DOWN — waiting, nothing committed'}")
