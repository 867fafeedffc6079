"""Device state snapshots (streams.state_snapshots) and how the detect stage uses them, without brokers:

- the table is under the streams room's own Alembic scripts and version table, up and down, on SQLite and
  PostgreSQL; upserts are batched, a newer row is never overwritten by an older write;
- the detect stage reads a snapshot only when the state table has nothing for a device (one query per batch,
  devices without a snapshot remembered), and never snapshots a state whose findings are not yet delivered.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from sqlalchemy import inspect

from sitewatch.contracts import Reading, pack_readings
from streams import state_snapshots
from streams.detect import Detection
from streams.state_snapshots import MIGRATIONS, StateSnapshots, wanted
from tests.backlog.conftest import pg_server, pg_url  # noqa: F401 (fixtures)

T0 = 1_791_000_000_000


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'backlog.db'}"
    return request.getfixturevalue("pg_url")


def test_table_under_its_own_alembic_scripts_and_upserts(url, monkeypatch):
    store = StateSnapshots(url)
    tables = set(inspect(store.engine).get_table_names())
    assert {"device_state_snapshots", "alembic_version_streams"} <= tables
    assert MIGRATIONS.current(store.engine) == MIGRATIONS.head()

    monkeypatch.setattr(state_snapshots, "ROWS_PER_STATEMENT", 7)  # several statements in one save
    many = {f"s-1/d-{i}": {"v": 2, "i": i} for i in range(20)}
    assert store.save(many, at_ms=100) == 20
    assert store.save({"s-1/d-0": {"v": 2, "i": -1}}, at_ms=50) == 1  # older: ignored
    assert store.save({"s-1/d-1": {"v": 2, "i": 99}}, at_ms=200) == 1  # newer: replaces
    got = store.load([*many, "s-1/none"])
    assert set(got) == set(many)
    assert got["s-1/d-0"] == {"v": 2, "i": 0} and got["s-1/d-1"] == {"v": 2, "i": 99}
    assert got["s-1/d-7"] == {"v": 2, "i": 7}

    MIGRATIONS.downgrade(store.engine, "base")
    assert "device_state_snapshots" not in set(inspect(store.engine).get_table_names())
    MIGRATIONS.upgrade(store.engine)
    assert store.load(["s-1/d-0"]) == {}
    store.close()


def test_auto_is_on_for_the_local_stack_only():
    assert wanted("auto", "sqlite:///x.db", "kafka-1.prod:9093")
    assert wanted("auto", "postgresql+psycopg://db/sw", "127.0.0.1:9092")
    assert not wanted("auto", "postgresql+psycopg://db/sw", "kafka-1.prod:9093,kafka-2.prod:9093")
    assert wanted("on", "postgresql+psycopg://db/sw", "kafka-1.prod:9093")
    assert not wanted("off", "sqlite:///x.db", "127.0.0.1:9092")


class CountingStore:
    def __init__(self, inner: StateSnapshots):
        self.inner = inner
        self.loads: list[list[str]] = []

    def save(self, states):
        return self.inner.save(states)

    def load(self, keys):
        keys = list(keys)
        self.loads.append(keys)
        return self.inner.load(keys)


def pit_record(site: str, steps: range) -> bytes:
    return pack_readings([Reading(site, "pit", "jc-01", "wall_top_horizontal", T0 + i * 1000, 100.0 + i)
                          for i in steps], T0)


def detection(store, table: dict | None = None) -> Detection:
    pipe = SimpleNamespace(settings=SimpleNamespace(rules_path=None, kafka_partitions=4),
                           device_state=table if table is not None else {}, count=lambda *a, **k: None)
    return Detection(pipe, snapshots=store)  # type: ignore[arg-type]


def run(det: Detection, records: list[bytes], deliver: bool = True):
    """What the detect agent does with a batch; ``deliver``: its findings were sent (``emit``)."""
    from streams.detect import decode_batch

    async def go():
        decoded = decode_batch(records)
        await det.restore(Detection.keys_of(decoded))
        found = det.run_decoded(decoded)
        keys = det.take_pending()
        if deliver:
            det.save(keys)
        return found, keys

    return asyncio.run(go())


def test_snapshot_used_on_a_table_miss_only_and_never_ahead_of_delivery(tmp_path):
    store = CountingStore(StateSnapshots(f"sqlite:///{tmp_path / 'b.db'}"))

    # first life: 12 readings, written at shutdown
    first = detection(store)
    run(first, [pit_record("sa", range(12))])
    assert asyncio.run(first.flush_snapshots(everything=True)) == 1
    saved = store.inner.load(["sa/jc-01"])["sa/jc-01"]
    assert saved["lt"] == T0 + 11_000

    # second life, empty table (fresh in-memory Kafka): the snapshot is the state; one query for the batch
    second = detection(store)
    store.loads.clear()
    run(second, [pit_record("sa", range(12, 14)), pit_record("sb", range(0, 2))])
    assert store.loads == [["sa/jc-01", "sb/jc-01"]] or store.loads == [["sb/jc-01", "sa/jc-01"]]
    assert second.engine.export_state("sa/jc-01", second.cache["sa/jc-01"])["lt"] == T0 + 13_000
    run(second, [pit_record("sb", range(2, 4))])  # known now (cache): no query
    assert len(store.loads) == 1
    second.cache.pop("sb/jc-01")
    second.no_snapshot.add("sb/jc-01")  # a device known to have none is not asked for again
    run(second, [pit_record("sb", range(4, 5))])
    assert len(store.loads) == 1

    # the table has a state: the snapshot is not even read
    table = {b"sa/jc-01": dict(saved)}
    third = detection(store, table)
    store.loads.clear()
    run(third, [pit_record("sa", range(12, 13))])
    assert store.loads == []


def test_state_with_undelivered_findings_is_not_snapshotted(tmp_path):
    store = StateSnapshots(f"sqlite:///{tmp_path / 'b.db'}")
    det = detection(store)
    # a rise of 40 mm against the default 30 mm alarm (baseline 0): a finding on this batch
    found, keys = run(det, [pit_record("sc", range(40, 41))], deliver=False)
    assert found and keys == {"sc/jc-01"}
    table = det.pipe.device_state
    assert asyncio.run(det.flush_snapshots(everything=True)) == 0, "findings in flight: nothing written"
    assert det.flush_dirty() == 0 and b"sc/jc-01" not in table
    assert store.load(["sc/jc-01"]) == {}
    det.save(keys)  # delivered
    assert b"sc/jc-01" in table
    assert asyncio.run(det.flush_snapshots()) == 1
    assert store.load(["sc/jc-01"])["sc/jc-01"]["lt"] == T0 + 40_000


def test_device_silent_across_the_stop_is_still_found_silent(tmp_path):
    """A device heard before the stop and never again: no reading brings its snapshot back, so the new
    assignment itself must (``restore_assigned``) or the deadman would never look at it."""
    from sitewatch.contracts import TOPIC_READINGS, device_key, partition_of

    store = StateSnapshots(f"sqlite:///{tmp_path / 'b.db'}")
    first = detection(store)
    run(first, [pit_record("sd", range(5))])
    asyncio.run(first.flush_snapshots(everything=True))

    part = partition_of(device_key("sd", "jc-01").encode(), 4)
    tps = [SimpleNamespace(topic=TOPIC_READINGS, partition=p) for p in range(4)]
    second = detection(store)  # empty table, nothing heard from the device since the restart
    second.pipe.app = SimpleNamespace(assignor=SimpleNamespace(assigned_actives=lambda: tps))
    assert asyncio.run(second.restore_assigned()) == 1
    assert asyncio.run(second.restore_assigned()) == 0  # same assignment: not read again
    later = T0 + 10 * 24 * 3600 * 1000
    found = second.run_tick(later)
    assert [(f.key, f.kind) for f in found if f.level > 0] == [("sd/jc-01", "fault.silent")]
    assert second.cache["sd/jc-01"]["lt"] == T0 + 4000  # the restored state, now the stage's own

    other = detection(store)  # a worker given the other partitions only: not its device
    others = [tp for tp in tps if tp.partition != part]
    other.pipe.app = SimpleNamespace(assignor=SimpleNamespace(assigned_actives=lambda: others))
    assert asyncio.run(other.restore_assigned()) == 0
