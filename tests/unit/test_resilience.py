"""``streams.resilience.until_stored``: a SQLite lock conflict is retried at once and silently, an outage with
backoff and warnings, anything else not at all. Counts calls and log lines, never times."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest
from sqlalchemy import exc as sa_exc

from streams import resilience
from streams.resilience import CONTENDED_TRIES, lock_conflict, until_stored

log = logging.getLogger("test.resilience")


def locked() -> sa_exc.OperationalError:
    return sa_exc.OperationalError("UPDATE tickets ...", {}, sqlite3.OperationalError("database is locked"))


def refused() -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


def failing(errors: list[BaseException], result="stored"):
    calls = {"n": 0}

    async def call():
        calls["n"] += 1
        if errors:
            raise errors.pop(0)
        return result

    return call, calls


@pytest.fixture
def fast_backoff(monkeypatch):
    monkeypatch.setattr(resilience, "RETRY_INITIAL_S", 0.001)
    monkeypatch.setattr(resilience, "RETRY_JITTER_S", 0.001)


def test_lock_conflicts_are_retried_silently(caplog):
    call, calls = failing([locked(), locked(), locked()])
    with caplog.at_level(logging.WARNING, logger=log.name):
        assert asyncio.run(until_stored("3 findings", call, log)) == "stored"
    assert calls["n"] == 4
    assert caplog.records == []  # a conflict between two writers is not an outage worth a line


def test_a_persistent_lock_conflict_becomes_an_outage(caplog, fast_backoff):
    call, calls = failing([locked() for _ in range(CONTENDED_TRIES + 2)])
    with caplog.at_level(logging.WARNING, logger=log.name):
        assert asyncio.run(until_stored("alert", call, log)) == "stored"
    assert calls["n"] == CONTENDED_TRIES + 3
    texts = [r.getMessage() for r in caplog.records]
    assert any("unavailable" in t and "database is locked" in t for t in texts)
    assert any("backlog database back" in t for t in texts)


def test_an_outage_waits_with_warnings_and_keeps_the_batch(caplog, fast_backoff):
    call, calls = failing([refused(), refused()])
    with caplog.at_level(logging.WARNING, logger=log.name):
        assert asyncio.run(until_stored("alert", call, log)) == "stored"
    assert calls["n"] == 3
    texts = [r.getMessage() for r in caplog.records]
    assert sum("unavailable" in t for t in texts) == 2
    assert "after 2 failed attempt(s)" in texts[-1]


def test_other_errors_are_not_retried():
    call, calls = failing([ValueError("poison record")])
    with pytest.raises(ValueError):
        asyncio.run(until_stored("alert", call, log))
    assert calls["n"] == 1


def test_lock_conflict_is_only_the_sqlite_lock():
    assert lock_conflict(locked())
    assert not lock_conflict(refused())
    assert not lock_conflict(sqlite3.OperationalError("database is locked"))  # only through SQLAlchemy
