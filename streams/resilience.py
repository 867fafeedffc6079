"""Riding out a backlog-database outage inside the worker.

A stage that cannot store a batch must neither drop it nor let the exception escape: an exception out of a Faust
agent ends the agent (its half-read batch can then be acknowledged when the stream is torn down) and one out of a
timer crashes the whole worker. So a stage retries *the same batch* in place until the database is back, with
capped exponential backoff, and does not ask for the next batch meanwhile: its offsets are not committed, the
other stages keep running, and a worker killed during the outage re-reads the batch (at-least-once).

Only "the database is not reachable right now" is retried forever. Anything else (a bug, a poison record) is the
caller's to handle, as before.

SQLite's "database is locked" is not an outage: it is another writer of the same file (the ledger, the delivery
log, the state snapshots and the tamper-evident record all write the backlog database) that committed between this
transaction's first read and its first write, and SQLite refuses the upgrade at once instead of waiting. Backing
off 0.5–10 s for that put one to two seconds on an alarm's way each time it happened (the latency bench saw it
several times a minute at 10k readings/s). It is retried at once, a few times, with a few milliseconds of jitter,
silently; only if it persists does it fall back to the outage path and its warnings.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Awaitable, Callable, TypeVar

from sqlalchemy import exc as sa_exc
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

T = TypeVar("T")

RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 10.0
RETRY_JITTER_S = 1.0
CONTENDED_TRIES = 8  # quick retries of a lock conflict before it is treated as an outage (~0.3 s in all)
CONTENDED_WAIT_S = 0.005  # doubled per try, with full jitter


def lock_conflict(exc: BaseException) -> bool:
    """SQLite refused a write because another connection holds or just took the write lock: retry at once."""
    return isinstance(exc, sa_exc.OperationalError) and "database is locked" in str(exc)


def storage_unavailable(exc: BaseException) -> bool:
    """True for a database that refused, dropped or timed out a connection (PostgreSQL stopped or restarting,
    SQLite locked): worth waiting for. False for errors that would fail again the same way."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return True
    return isinstance(exc, (ConnectionError, TimeoutError))


def describe(exc: BaseException | None) -> str:
    text = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if exc is not None else "?"


async def until_stored(what: str, call: Callable[[], Awaitable[T]], log: logging.Logger) -> T:
    """Await ``call()`` until it does not fail with :func:`storage_unavailable`; other errors propagate.

    A lock conflict (:func:`lock_conflict`) is retried within milliseconds, without a warning, up to
    ``CONTENDED_TRIES`` times in a row; anything else that is retried waits the capped exponential backoff."""
    started = time.monotonic()
    tries = {"quick": 0, "slow": 0}

    def wait(rs: RetryCallState) -> float:
        exc = rs.outcome.exception() if rs.outcome else None
        if exc is not None and lock_conflict(exc) and tries["quick"] < CONTENDED_TRIES:
            tries["quick"] += 1
            return random.uniform(0, CONTENDED_WAIT_S * 2 ** tries["quick"])
        tries["quick"] = 0
        tries["slow"] += 1
        return min(RETRY_MAX_S, RETRY_INITIAL_S * 2 ** (tries["slow"] - 1) + random.uniform(0, RETRY_JITTER_S))

    def before_sleep(rs: RetryCallState) -> None:
        if tries["quick"]:
            return  # a lock conflict retried at once: not worth a line
        wait_s = rs.next_action.sleep if rs.next_action is not None else 0.0
        log.warning("backlog database unavailable (%s: %s), retrying in %.1f s (attempt %d); offsets held",
                    what, describe(rs.outcome.exception() if rs.outcome else None), wait_s, tries["slow"])

    async for attempt in AsyncRetrying(retry=retry_if_exception(storage_unavailable), wait=wait,
                                       before_sleep=before_sleep, reraise=True):
        with attempt:
            result = await call()
    if tries["slow"]:
        log.warning("backlog database back: %s stored after %d failed attempt(s) over %.0f s", what, tries["slow"],
                    time.monotonic() - started)
    return result  # type: ignore[possibly-undefined]


class Quiet:
    """Say the same outage once per ``every_s``, not on every 1 s timer tick."""

    def __init__(self, every_s: float = 10.0):
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def warn(self, log: logging.Logger, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.every_s:
            self._last[key] = now
            log.warning(msg, *args)

    def clear(self, log: logging.Logger, key: str, msg: str) -> None:
        if self._last.pop(key, None) is not None:
            log.warning(msg)
