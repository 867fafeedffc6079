"""The commit guard patched into Faust (``streams.pipeline._commit_never_skips_head``): an offset is committed only
once every record before it was acknowledged; a single unacknowledged record at the committed offset used to be
committed over (faust-streaming issue #606) and was never processed."""

from __future__ import annotations

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
