"""The Faust fixes in ``streams.pipeline``, each against the loss it prevents: the commit guard (an offset is
committed only once every record before it was acknowledged; a single unacknowledged record at the committed offset
used to be committed over, faust-streaming issue #606), the recovery order (stream partitions resumed only after
the seek to committed offsets, so nothing fetched meanwhile is cleared from the stream queues) and the fetch (only
the partitions active when it started; what Faust will not take is fetched again)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.pipeline import _commit_never_skips_head

TOPIC = TP("sw.raw", 3)


def consumer(committed: int | None, acked: list[int]) -> SimpleNamespace:
    """What ``Consumer._new_offset`` reads of a consumer, nothing else."""
    c = SimpleNamespace(_acked=defaultdict(list), _acked_index=defaultdict(set), _gap=defaultdict(IntervalTree),
                        _committed_offset=defaultdict(lambda: None))
    c._committed_offset[TOPIC] = committed
    c._acked[TOPIC].extend(acked)
    c._acked_index[TOPIC].update(acked)
    return c


def new_offset(c: SimpleNamespace) -> int | None:
    _commit_never_skips_head()
    return Consumer._new_offset(c, TOPIC)


def test_a_single_unacknowledged_record_at_the_head_holds_the_commit_back():
    c = consumer(58, [59, 60])
    assert new_offset(c) is None  # Faust alone: 61, and record 58 is lost
    c._acked[TOPIC].append(58)  # read again and processed
    assert new_offset(c) == 61


def test_contiguous_acknowledgements_commit_as_before():
    assert new_offset(consumer(58, [58, 59, 60])) == 61
    assert new_offset(consumer(58, [58, 59, 61])) == 60  # a hole further on still stops the run
    assert new_offset(consumer(None, [0, 1, 2])) == 3  # nothing committed yet: Faust's behaviour


def test_patch_is_applied_once():
    _commit_never_skips_head()
    patched = Consumer._new_offset
    _commit_never_skips_head()
    assert Consumer._new_offset is patched


# ------------------------------------------------------------------------------------------ resume after seek
class FakeConsumer:
    """Records what a fetcher would hand to the streams while the recovery awaits the seek."""

    def __init__(self, assignment: set[TP]):
        self._assignment = assignment
        self.paused = set(assignment)
        self.queue: list[TP] = []  # records handed to the streams, not yet taken
        self.dropped: list[TP] = []

    def assignment(self):
        return self._assignment

    def resume_partitions(self, tps):
        self.paused -= set(tps)

    async def perform_seek(self):
        await asyncio.sleep(0)  # the offset fetch: the fetcher runs meanwhile
        self.queue.extend(tp for tp in self._assignment if tp not in self.paused)  # it delivers what is resumed
        await asyncio.sleep(0)

    def resume_flow(self):
        pass


def fake_recovery(consumer: FakeConsumer) -> SimpleNamespace:
    async def nothing(*a, **k):
        return None

    async def wait(coro, timeout=None):
        return await coro

    def resume_flow_control():  # mode's FlowControlEvent.resume clears every stream queue
        consumer.dropped.extend(consumer.queue)
        consumer.queue.clear()

    app = SimpleNamespace(consumer=consumer, consumer_generation_id=7,
                          on_rebalance_complete=SimpleNamespace(send=nothing),
                          flow_control=SimpleNamespace(resume=resume_flow_control),
                          conf=SimpleNamespace(broker_request_timeout=1.0),
                          _fetcher=SimpleNamespace(maybe_start=nothing),
                          assignor=SimpleNamespace(assigned_standbys=lambda: set()), on_rebalance_end=lambda: None)
    log = SimpleNamespace(info=lambda *a, **k: None, warning=lambda *a, **k: None, dev=lambda *a, **k: None)
    return SimpleNamespace(app=app, log=log, _set_recovery_ended=lambda: None, _wait=wait,
                           tables=SimpleNamespace(values=lambda: [], on_actives_ready=lambda: None,
                                                  on_standbys_ready=lambda: None),
                           actives_for_table={}, standbys_for_table={},
                           _is_changelog_tp=lambda tp: tp.topic.endswith("-changelog"),
                           completed=SimpleNamespace(set=lambda: None))


def test_recovery_drops_nothing_fetched_while_seeking():
    """Faust resumed the stream partitions, awaited the seek, then cleared the stream queues: what the fetcher
    delivered meanwhile was dropped past the fetch position (a taken-over partition vanished)."""
    from faust.tables.recovery import Recovery

    from streams.pipeline import _resume_streams_after_seek

    _resume_streams_after_seek()
    consumer = FakeConsumer({TP("sw.raw", 2), TP("sw.readings", 2), TP("sitewatch-worker-device-state-changelog", 2)})
    asyncio.run(Recovery.on_recovery_completed(fake_recovery(consumer), 7))
    assert consumer.dropped == []
    assert consumer.paused == {TP("sitewatch-worker-device-state-changelog", 2)}  # streams resumed, changelog not


# ------------------------------------------------------------------------------------------ fetch while pausing
RAW, CHANGELOG = TP("sw.raw", 1), TP("sitewatch-worker-device-state-changelog", 1)


class WaitingFetcher:
    """aiokafka's ``Fetcher.fetched_records`` as far as it matters here: it waits for data, then reads the
    ``partitions`` it was given *again*, and an empty set means every partition."""

    def __init__(self, records: dict):
        self.records = records
        self.data = asyncio.Event()
        self._closed = False
        self._subscriptions = SimpleNamespace(fetch_context=lambda: _Nothing())

    async def fetched_records(self, partitions, timeout=0, max_records=None):
        await self.data.wait()
        return {tp: recs for tp, recs in self.records.items() if not partitions or tp in partitions}


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_fetch_returns_only_the_partitions_active_when_it_started():
    """The consumer's live active set emptied while the fetch waited (the recovery paused the changelog):
    Faust's fetch came back with the records of every partition, ``sw.raw`` included, and dropped them."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    from streams.pipeline import _fetch_only_what_is_resumed

    _fetch_only_what_is_resumed()
    fetcher = WaitingFetcher({RAW: ["r47", "r48"], CHANGELOG: ["c3"]})
    aio = SimpleNamespace(_fetcher=fetcher, _closed=False, _max_poll_records=None)

    async def call_thread(fn, *args, **kwargs):
        return await fn(*args, **kwargs)

    thread = SimpleNamespace(_ensure_consumer=lambda: aio, call_thread=call_thread,
                             consumer=SimpleNamespace(flow_active=True))
    thread._fetch_records = AIOKafkaConsumerThread._fetch_records.__get__(thread)
    live = {CHANGELOG}

    async def scenario():
        fetch = asyncio.ensure_future(AIOKafkaConsumerThread.getmany(thread, live, 1.0))
        await asyncio.sleep(0)
        live.clear()  # recovery done: the changelog is paused, the streams are not resumed yet
        fetcher.data.set()
        return await fetch

    assert asyncio.run(scenario()) == {CHANGELOG: ["c3"]}
    assert asyncio.run(AIOKafkaConsumerThread.getmany(thread, set(), 1.0)) == {}  # nothing active: no fetch


def test_records_of_a_partition_paused_meanwhile_are_fetched_again():
    """Faust drops the records of a partition that is not active when they come back; the fetch position has
    moved past them. The partition is rewound to the first of them instead."""
    from streams.pipeline import _fetch_only_what_is_resumed

    _fetch_only_what_is_resumed()
    live = {RAW, CHANGELOG}
    seeks = []

    async def _getmany(active_partitions, timeout):
        live.discard(RAW)  # paused (a rebalance) while the fetch was under way
        return {RAW: [SimpleNamespace(offset=47), SimpleNamespace(offset=48)], CHANGELOG: [SimpleNamespace(offset=3)]}

    async def seek(tp, offset):
        seeks.append((tp, offset))

    consumer = SimpleNamespace(flow_active=True, not_waiting_next_records=asyncio.Event(),
                               app=SimpleNamespace(client_only=False), _get_active_partitions=lambda: live,
                               _getmany=_getmany, _buffered_partitions=set(), assignment=lambda: {RAW, CHANGELOG},
                               seek=seek)
    records, active = asyncio.run(Consumer._wait_next_records(consumer, 1.0))
    assert RAW not in active and len(records[RAW]) == 2  # what Faust will drop ...
    assert seeks == [(RAW, 47)]  # ... is read again from its first record
