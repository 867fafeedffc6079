"""The Faust application: topics and the per-device state table. The stages register themselves on it
(``streams.validate`` … ``streams.report``); ``app.worker`` puts them together with the backlog and the notifier.

    sw.raw ──validate──▶ sw.readings ──detect──▶ sw.hazards ──tickets──▶ backlog DB ──outbox──▶ sw.alerts ──notify──▶ receivers
              └────────▶ sw.readings.dlq

Every stage consumes in batches (``stream.take``) so per-message Faust overhead is paid once per batch, and
offsets are committed only after a batch's output has been flushed to Kafka (at-least-once end to end).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import faust

from sitewatch.contracts import TOPIC_ALERTS, TOPIC_DLQ, TOPIC_HAZARDS, TOPIC_RAW, TOPIC_READINGS
from sitewatch.settings import Settings

log = logging.getLogger("sitewatch.worker")


@dataclass
class Pipeline:
    """Handles shared by the stages (filled in by ``create_app``)."""

    app: faust.App
    settings: Settings
    raw: faust.TopicT
    readings: faust.TopicT
    dlq: faust.TopicT
    hazards: faust.TopicT
    alerts: faust.TopicT
    device_state: faust.Table
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n


FETCH_MAX_WAIT_MS = 20


def _low_latency_fetch() -> None:
    """Faust hard-codes ``fetch_max_wait_ms=1500`` for its consumer. With four hops between a sensor and a
    webhook, a quiet partition can add 1.5 s per hop; a safety alert should not wait on that. Cap it.

    Why 20 ms and not 100: Tansu does not answer a waiting Fetch when a record arrives, it holds it for the full
    wait (measured on the local stack: produce → consume 65 ms at 100 ms, 6–16 ms at 20 ms), so every Kafka hop of
    an alarm (sw.raw, sw.readings, sw.hazards, sw.alerts) paid up to the wait. The price is idle polling: 45 fetch
    requests/s instead of 10, an idle aiokafka consumer 3 % of a core instead of 1 %. A busy partition is not
    affected (a Fetch that finds data returns at once)."""
    import aiokafka

    if getattr(aiokafka.AIOKafkaConsumer, "_sitewatch_patched", False):
        return

    class LowLatencyConsumer(aiokafka.AIOKafkaConsumer):
        _sitewatch_patched = True

        def __init__(self, *args, **kwargs):
            kwargs["fetch_max_wait_ms"] = min(kwargs.get("fetch_max_wait_ms", FETCH_MAX_WAIT_MS), FETCH_MAX_WAIT_MS)
            super().__init__(*args, **kwargs)

        async def end_offsets(self, partitions):
            """Faust's table recovery reads each changelog partition up to ``end_offsets() - 1``; Tansu's
            ListOffsets answer falls short by up to a batch, so a new owner restored stale state
            (``streams.offsets``). Raised to the Fetch high watermark here, the one place Faust asks."""
            from streams.offsets import READ_COMMITTED, READ_UNCOMMITTED, fetched_end_offsets

            listed = await super().end_offsets(partitions)
            level = READ_COMMITTED if self._isolation_level == "read_committed" else READ_UNCOMMITTED
            return await fetched_end_offsets(self._client, listed, level)

        async def seek_to_committed(self, *partitions):
            """Faust re-seeks to committed offsets after a rebalance and whenever a fetch came back while its flow
            was stopped, discarding what was fetched. aiokafka seeks only partitions with a committed offset
            above 0, so a partition nobody had committed yet (taken over from a worker SIGKILLed before its first
            commit) kept a fetch position past the discarded records, which were never read: the scale-out test
            lost the first 42 records of a ``sw.hazards`` partition so. Such a partition goes back to where the
            reset policy starts it, as on a first assignment."""
            committed = await super().seek_to_committed(*partitions)
            for tp, offset in committed.items():
                if offset == 0:
                    self.seek(tp, 0)
            fresh = [tp for tp, offset in committed.items() if offset is None or offset < 0]
            if fresh and self._auto_offset_reset == "earliest":
                await self.seek_to_beginning(*fresh)
            elif fresh and self._auto_offset_reset == "latest":
                await self.seek_to_end(*fresh)
            return committed

    aiokafka.AIOKafkaConsumer = LowLatencyConsumer


def _commit_never_skips_head() -> None:
    """Never commit past the record at the committed offset unless it was acknowledged.

    faust-streaming 0.15.3, ``Consumer._new_offset``: the guard against a gap at the head of the acknowledged
    offsets only holds back a gap of *two or more* (``min(acked) - committed > 1``), so a single record at the
    committed offset that was never acknowledged is committed over and lost for good: committed 58 with 59, 60
    acknowledged commits 61. A record is left unacknowledged at the head when the stream skips it as fetched in
    an older consumer generation (or while flow was stopped) around a rebalance and it is read again later
    (https://github.com/faust-streaming/faust/issues/606, open fix https://github.com/faust-streaming/faust/pull/707;
    the one-gap allowance came with https://github.com/faust-streaming/faust/issues/378 for compacted topics). The
    scale-out test lost ``sw.raw`` records this way around the handover (57 and 59 validated, 58 never).

    Our topics are neither compacted nor transactional, so the record at the committed offset exists and must be
    acknowledged before anything after it is committed. Faust's own gap filling (``_add_gap``) never covers the
    committed offset itself, so the check does not depend on it. Unknown committed offset (``None``, which Faust
    also uses for 0): Faust's behaviour."""
    from faust.transport.consumer import Consumer

    if getattr(Consumer._new_offset, "_sitewatch_patched", False):
        return
    faust_new_offset = Consumer._new_offset

    def _new_offset(self, tp):
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if acked and committed is not None and min(acked) > committed:
            return None  # the head record is still owed; the acknowledged ones wait in ``acked``
        return faust_new_offset(self, tp)

    _new_offset._sitewatch_patched = True  # type: ignore[attr-defined]
    Consumer._new_offset = _new_offset


def _resume_streams_after_seek() -> None:
    """Resume the stream partitions after the seek to committed offsets, not before it.

    faust-streaming 0.15.3, ``Recovery.on_recovery_completed`` (end of every rebalance of an app with tables):
    it resumes the stream partitions, *awaits* the seek to committed offsets, then resumes flow control, and
    resuming flow control clears every stream's queue. Whatever the fetcher handed to the streams during that
    await is dropped unacknowledged while the fetch position has moved past it, so it is never read again:
    records of a partition taken over from a SIGKILLed worker vanished after the handover (a whole partition of
    ``sw.raw`` when it was all fetched in that window; a single record, ``sw.raw`` p2 offset 7 between 0..6 and
    8.., when the stream had already taken the rest), and offsets fetched before and after the seek raced on
    Faust's read offsets ("DROPPED MESSAGE ROFF"). Same family as
    https://github.com/faust-streaming/faust/issues/216 (streams resumed before seeking to committed offsets).

    The copy below differs from Faust's only in order: seek while the stream partitions are still paused, then
    resume partitions, flow control and flow in one synchronous step, so nothing can be delivered between the
    resume and the queue clear."""
    import asyncio

    from faust.tables.recovery import Recovery

    if getattr(Recovery.on_recovery_completed, "_sitewatch_patched", False):
        return

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callback_coros = [
            asyncio.ensure_future(table.on_recovery_completed(self.actives_for_table[table],
                                                              self.standbys_for_table[table]))
            for table in self.tables.values()
        ]
        if callback_coros:
            await asyncio.wait(callback_coros)
        assignment = consumer.assignment()
        if self.app.consumer_generation_id != generation_id:
            self.log.warning(f"Recovery rebalancing again app id {self.app.consumer_generation_id} "
                             f"param {generation_id}")
            return
        if assignment:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
            if self.app.consumer_generation_id != generation_id:  # rebalanced during the seek
                self.log.warning("Recovery rebalancing again (during seek)")
                return
        # -- from here to resume_flow() no await: nothing reaches a stream queue before the clear below
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
        self.completed.set()
        self.app.flow_control.resume()  # clears every stream queue
        consumer.resume_flow()
        await self.app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not self.app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")

    on_recovery_completed._sitewatch_patched = True  # type: ignore[attr-defined]
    Recovery.on_recovery_completed = on_recovery_completed


def _fetch_only_what_is_resumed() -> None:
    """A fetch returns records of resumed partitions only, and a record Faust will not take is fetched again.

    faust-streaming 0.15.3 hands the consumer's *live* set of active partitions to aiokafka's
    ``fetched_records(partitions, timeout)``, which waits up to a second on the consumer thread and reads the set
    again after waiting; for aiokafka an *empty* set means "every partition". A recovery that pauses the changelog
    partitions while such a fetch waits (the stream partitions are still paused) empties the set, and the fetch
    comes back with the records of every partition, prefetched from where the seek to committed offsets put
    them. Faust then drops every record of a partition that is not active, silently, while the fetch position
    has moved past them. Seen in the crash test (a worker SIGKILLed 2 s after it started, its successor joining
    while the dead member was still in the group): the successor's ``sw.raw`` and ``sw.readings`` positions stood
    at the end of both topics, its read offsets at the committed ones, and it never validated or detected
    another reading — 17,000 acknowledged readings lost.

    So the fetch gets a frozen copy of the set (nothing when it is empty), and records of a partition that is
    not active when they come back (paused meanwhile) rewind that partition to the first of them instead of
    vanishing: they are fetched again once it is resumed (after a rebalance, the seek to committed offsets puts
    the position there anyway)."""
    from faust.transport.consumer import Consumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if getattr(Consumer._wait_next_records, "_sitewatch_patched", False):
        return
    faust_getmany = AIOKafkaConsumerThread.getmany
    faust_wait_next_records = Consumer._wait_next_records

    async def getmany(self, active_partitions, timeout):
        if active_partitions is not None:
            active_partitions = frozenset(active_partitions)
            if not active_partitions:
                return {}
        return await faust_getmany(self, active_partitions, timeout)

    async def _wait_next_records(self, timeout):
        records, active = await faust_wait_next_records(self, timeout)
        if records and active is not None:
            assigned = None
            for tp, recs in records.items():
                if recs and tp not in active and tp not in self._buffered_partitions:
                    assigned = self.assignment() if assigned is None else assigned
                    if tp in assigned:  # a revoked one belongs to its next owner, who starts at the commit
                        await self.seek(tp, recs[0].offset)
        return records, active

    _wait_next_records._sitewatch_patched = True  # type: ignore[attr-defined]
    AIOKafkaConsumerThread.getmany = getmany
    Consumer._wait_next_records = _wait_next_records


def faust_credentials(settings: Settings):
    """The Kafka security settings (``Settings.kafka_options``) in the form Faust wants (``broker_credentials``)."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    ctx = settings.kafka_options().get("ssl_context")
    if settings.kafka_security_protocol.startswith("SASL"):
        mech = "PLAIN" if settings.kafka_sasl_mechanism == "PLAIN" else settings.kafka_sasl_mechanism
        return faust.SASLCredentials(username=settings.kafka_username, password=settings.kafka_password,
                                     mechanism=mech, ssl_context=ctx)
    return faust.SSLCredentials(ctx)


def create_app(settings: Settings) -> Pipeline:
    _low_latency_fetch()
    _commit_never_skips_head()
    _resume_streams_after_seek()
    _fetch_only_what_is_resumed()
    app = faust.App(
        settings.worker_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",  # state is rebuilt from the changelog topic on start
        web_enabled=False,  # no unauthenticated admin endpoint
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        # Tansu makes a group join wait the full rebalance timeout (DESIGN §4): keep it short.
        broker_session_timeout=6.0,
        broker_rebalance_timeout=3.0,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=1.0,
        producer_acks=-1,
        producer_max_request_size=4 * 1024 * 1024,
        producer_max_batch_size=1024 * 1024,
        datadir=str(settings.data_dir / "faust"),
        broker_credentials=faust_credentials(settings),
    )

    def topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    device_state = app.Table(
        "device-state",
        default=None,
        # Keys are the raw bytes of the sw.readings key ("site/device"), so the default partitioner puts a
        # device's state in the same partition number as its readings; values are plain JSON dicts.
        key_type=bytes,  # -> "raw" key serializer both when writing and when recovering the changelog
        partitions=settings.kafka_partitions,
        use_partitioner=True,
    )
    pipe = Pipeline(
        app=app,
        settings=settings,
        raw=topic(TOPIC_RAW),
        readings=topic(TOPIC_READINGS),
        dlq=topic(TOPIC_DLQ),
        hazards=topic(TOPIC_HAZARDS),
        alerts=topic(TOPIC_ALERTS),
        device_state=device_state,
    )
    return pipe
