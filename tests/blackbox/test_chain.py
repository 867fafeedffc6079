"""Appending: the canonical encoding and hash, per-site sequencing under concurrent threads and processes on
SQLite and PostgreSQL, entries staged on a session committing or rolling back with it, the reading-batch digest,
and the record's own migrations."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import threading

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from blackbox.chain import (GENESIS, NewEntry, Recorder, append, append_many, canonical, canonical_payload,
                            entry_hash, stage)
from blackbox.readings import ReadingLog, chunk_bytes, reading_batch_entries, readings_digest
from blackbox.schema import METADATA, MIGRATIONS
from blackbox.verify import verify_site
from sitewatch.db import make_engine
from tests.blackbox.conftest import SITE, rows
from tests.conftest import down_and_up_again, schema_drift


def test_canonical_encoding_is_sorted_compact_utf8_json():
    payload = {"z": 1, "a": [1.5, None, True], "名": "塔吊 \"A\"", "n": {"y": 2, "b": 3}}
    pj = canonical_payload(payload)
    expected = json.dumps({"site": "s-1", "seq": 7, "kind": "finding", "at_ms": 1234, "payload": payload},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical("s-1", 7, "finding", 1234, pj) == expected
    assert b" " not in canonical("s-1", 7, "finding", 1234, canonical_payload({"a": 1})), "no whitespace"
    assert entry_hash(GENESIS, "s-1", 7, "finding", 1234, pj) == hashlib.sha256(bytes(32) + expected).hexdigest()
    assert canonical_payload({"v": np.float64(2.5), "n": np.int64(3)}) == '{"n":3,"v":2.5}'


def test_append_links_each_entry_to_the_previous(recorder):
    a = recorder.record([NewEntry(SITE, "finding", 1, {"i": 1}), NewEntry("s-2", "finding", 1, {"i": 1}),
                         NewEntry(SITE, "ticket", 2, {"i": 2})])
    assert [(x.site, x.seq) for x in a] == [(SITE, 1), ("s-2", 1), (SITE, 2)], "results in the given order"
    with recorder.engine.begin() as c:
        b = append(c, SITE, "delivery", 3, {"i": 3})
    rs = rows(recorder.engine)
    assert [rs[s]["prev"] for s in (1, 2, 3)] == [GENESIS, rs[1]["hash"], rs[2]["hash"]]
    assert b.hash == rs[3]["hash"] == entry_hash(rs[2]["hash"], SITE, 3, "delivery", 3, '{"i":3}')
    with recorder.engine.connect() as c:
        assert c.execute(text("SELECT seq, hash FROM blackbox_heads WHERE site = :s"), {"s": SITE}).one() == (3, b.hash)
    with pytest.raises(ValueError, match="unknown record kind"):
        recorder.record([NewEntry(SITE, "gossip", 4, {})])
    assert verify_site(recorder.engine, SITE).ok


def test_append_rolls_back_with_the_callers_transaction(recorder):
    recorder.record([NewEntry(SITE, "finding", 1, {"i": 1})])
    with pytest.raises(RuntimeError), recorder.engine.begin() as c:
        append_many(c, [NewEntry(SITE, "ticket", 2, {"i": 2}), NewEntry("s-9", "ticket", 2, {})])
        raise RuntimeError("the caller's own work failed")
    assert list(rows(recorder.engine)) == [1] and rows(recorder.engine, "s-9") == {}
    recorder.record([NewEntry(SITE, "ticket", 3, {"i": 3})])
    assert list(rows(recorder.engine)) == [1, 2] and verify_site(recorder.engine, SITE).ok


def test_staged_entries_commit_and_roll_back_with_the_session(recorder):
    Session = sessionmaker(recorder.engine)
    with Session.begin() as s:
        stage(s, SITE, "ticket", 1, {"step": "kept"})
        try:
            with s.begin_nested():
                stage(s, SITE, "ticket", 2, {"step": "in a savepoint that rolls back"})
                raise KeyError("savepoint fails")
        except KeyError:
            pass
        with s.begin_nested():
            stage(s, SITE, "ticket", 3, {"step": "in a savepoint that holds"})
        assert rows(recorder.engine) == {}, "nothing written before the commit"
    with pytest.raises(ZeroDivisionError), Session.begin() as s:
        stage(s, SITE, "ticket", 4, {"step": "rolled back with the session"})
        1 / 0
    with Session.begin() as s:
        pass  # a later commit does not pick up what a rolled-back transaction staged
    assert [json.loads(r["payload"])["step"] for r in rows(recorder.engine).values()] == [
        "kept", "in a savepoint that holds"]
    assert verify_site(recorder.engine, SITE).ok


def _hammer(url: str, who: str, n: int, sites: list[str]) -> None:
    rec = Recorder(url, migrate=False)
    try:
        for i in range(n):
            rec.record([NewEntry(s, "finding", i, {"who": who, "i": i}) for s in sites])
    finally:
        rec.close()


def _check_concurrent(url: str, total_per_site: int, sites: list[str]) -> None:
    engine = make_engine(url)
    try:
        for site in sites:
            rs = rows(engine, site)
            assert sorted(rs) == list(range(1, total_per_site + 1)), "no gap, no duplicate seq"
            ids = [rs[s]["id"] for s in sorted(rs)]
            assert ids == sorted(ids), "row ids grow with seq"
            rep = verify_site(engine, site)
            assert rep.ok, rep.first
    finally:
        engine.dispose()


def test_concurrent_threads_append_to_one_site(db_url):  # noqa: F811
    Recorder(db_url).close()
    threads = [threading.Thread(target=_hammer, args=(db_url, f"t{k}", 40, [SITE, "s-2"] if k % 2 else ["s-2", SITE]))
               for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check_concurrent(db_url, 6 * 40, [SITE, "s-2"])


def test_concurrent_processes_append_to_one_site(db_url):  # noqa: F811
    Recorder(db_url).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(db_url, f"p{k}", 40, [SITE])) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    _check_concurrent(db_url, 3 * 40, [SITE])


def test_reading_batch_entries_digest_per_site():
    devs = [("s-1", "crane-1", "crane"), ("s-2", "pit-1", "pit"), ("s-1", "crane-2", "crane")]
    d = np.array([0, 1, 2, 0, 1, 2, 0])
    metric = np.array(["load", "depth", "load", "wind", "depth", "load", "load"], dtype=object)
    ts = np.array([5, 3, 9, 4, 8, 7, 6], dtype=np.int64)
    value = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    es = {e.site: e for e in reading_batch_entries(devs, d, metric, ts, value, at_ms=100, extra={"worker": "w1"})}
    assert sorted(es) == ["s-1", "s-2"]
    s1 = es["s-1"].payload
    assert (s1["readings"], s1["chunks"], s1["ts_min"], s1["ts_max"], s1["worker"]) == (5, [5], 4, 9, "w1")
    rows1 = [i for i in range(7) if devs[d[i]][0] == "s-1"]  # arrival order, by the recipe in the docstring
    c = chunk_bytes([devs[d[i]][1] for i in rows1], [metric[i] for i in rows1], ts[rows1], value[rows1])
    assert s1["digest"] == readings_digest([c])
    assert es["s-2"].payload["readings"] == 2 and es["s-2"].payload["digest"] != s1["digest"]
    changed = value.copy()
    changed[2] = 3.5
    again = {e.site: e for e in reading_batch_entries(devs, d, metric, ts, changed, at_ms=100)}
    assert again["s-1"].payload["digest"] != s1["digest"] and again["s-2"].payload["digest"] == es["s-2"].payload["digest"]
    wide = np.array(["载荷"] * 7, dtype=object)  # not ASCII: the per-site path gives the same recipe
    (w1,) = [e for e in reading_batch_entries(devs, d, wide, ts, value, at_ms=1) if e.site == "s-1"]
    assert w1.payload["digest"] == readings_digest([chunk_bytes([devs[d[i]][1] for i in rows1], ["载荷"] * 5,
                                                                ts[rows1], value[rows1])])


def test_reading_log_windows_batches_into_one_entry_per_site(recorder):
    clock = [0.0]
    log = ReadingLog(recorder, every_s=1.0, clock=lambda: clock[0])
    devs1 = [("s-1", "crane-1", "crane")]
    devs2 = [("s-2", "pit-1", "pit"), ("s-1", "crane-1", "crane")]  # each batch has its own device table
    log.add(devs1, np.array([0, 0]), np.array(["load", "load"], dtype=object), np.array([10, 11]),
            np.array([1.0, 2.0]))
    clock[0] = 0.5
    log.add(devs2, np.array([1, 0]), np.array(["wind", "depth"], dtype=object), np.array([12, 9]),
            np.array([3.0, 4.0]))
    assert not log.due()
    clock[0] = 1.2
    assert log.due() and log.flush(at_ms=5000) == 2
    e1, e2 = rows(recorder.engine, "s-1")[1], rows(recorder.engine, "s-2")[1]
    p = json.loads(e1["payload"])
    assert e1["kind"] == "readings" and (p["readings"], p["chunks"], p["ts_min"], p["ts_max"]) == (3, [3], 10, 12)
    assert p["digest"] == readings_digest([chunk_bytes(["crane-1"] * 3, ["load", "load", "wind"],
                                                       np.array([10, 11, 12]), np.array([1.0, 2.0, 3.0]))])
    p2 = json.loads(e2["payload"])
    assert p2["digest"] == readings_digest([chunk_bytes(["pit-1"], ["depth"], np.array([9]), np.array([4.0]))])
    assert not log.due() and log.flush() == 0


def test_migrations_up_down_and_models_match(db_url):  # noqa: F811
    engine = make_engine(db_url)
    try:
        MIGRATIONS.upgrade(engine)
        assert MIGRATIONS.current(engine) == MIGRATIONS.head() == "0001_blackbox"
        assert schema_drift(engine, METADATA, "alembic_version_blackbox") == []
        down_and_up_again(engine, MIGRATIONS, METADATA)
    finally:
        engine.dispose()
