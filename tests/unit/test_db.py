"""SQLite transactions are atomic with savepoints inside: nothing of a transaction is visible, or survives a crash,
before its outer commit (the driver used to commit a savepoint's RELEASE at once)."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from sitewatch.db import make_engine


def _count(path) -> int:
    with sqlite3.connect(path) as other:
        return other.execute("SELECT count(*) FROM t").fetchone()[0]


def test_a_savepoint_commits_only_with_its_transaction(tmp_path):
    path = tmp_path / "t.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as c:
        c.execute(text("CREATE TABLE t (x INTEGER)"))
    session = sessionmaker(engine)
    with session.begin() as s:
        with s.begin_nested():
            s.execute(text("INSERT INTO t VALUES (1)"))
        assert _count(path) == 0, "a released savepoint must not be committed before the transaction"
        s.execute(text("INSERT INTO t VALUES (2)"))
    assert _count(path) == 2

    with pytest.raises(RuntimeError), session.begin() as s:
        with s.begin_nested():
            s.execute(text("INSERT INTO t VALUES (3)"))
        raise RuntimeError("crash before the commit")
    assert _count(path) == 2, "the rolled-back transaction's savepoint is gone too"

    with session.begin() as s:  # a savepoint rolled back alone leaves the rest of the transaction
        s.execute(text("INSERT INTO t VALUES (4)"))
        with pytest.raises(RuntimeError), s.begin_nested():
            s.execute(text("INSERT INTO t VALUES (5)"))
            raise RuntimeError("lost the race")
    with engine.connect() as c:
        assert sorted(x for (x,) in c.execute(text("SELECT x FROM t"))) == [1, 2, 4]
    engine.dispose()
