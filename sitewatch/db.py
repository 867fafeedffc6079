"""One way to open a database: SQLite (embedded default, WAL so readers never block the worker) or PostgreSQL.

SQLite through Python's sqlite3 needs one more thing: the driver starts transactions itself and does not start
one before a SAVEPOINT, so a savepoint (``Session.begin_nested``, used where a concurrent writer may win a race)
ran in autocommit mode and its RELEASE committed at once — a ticket could be committed without the journal entry
and the alert of the same transaction, and a crash in between lost the alert. SQLAlchemy's documented remedy:
switch the driver's transaction handling off and emit BEGIN ourselves. A plain (deferred) BEGIN: readers keep
WAL's snapshots and never wait for writers (``BEGIN IMMEDIATE`` made every read take the write lock, and a page
holding a session open stalled the API). The price: a transaction that reads first and writes later can fail with
"database is locked" when another writer committed in between; the worker's writers retry (streams.resilience,
the notifier's flush loop, the record's next window)."""

from __future__ import annotations

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # the driver emits no BEGIN/COMMIT of its own (see above)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            conn.exec_driver_sql("BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True)
