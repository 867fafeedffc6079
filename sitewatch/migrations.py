"""Alembic driven from code, one script folder per room, all in one database.

Why programmatic: the worker, the CLI and the tests open a database by URL and should not need an ini file. Why
one version table per room (``alembic_version`` for the backlog, ``alembic_version_alerts`` for the alerts):
the ledger and the notifier share the database but not their code, so each migrates its own tables on its own
schedule. Each room's ``env.py`` reads the engine, its metadata and its version table from the config attributes
set here, and compares only its own tables.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

# Alembic logs every plugin and step at INFO; in the worker's and CLI's logs that is noise.
if logging.getLogger("alembic").level == logging.NOTSET:
    logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from sqlalchemy import inspect, text  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402

from sitewatch.db import make_engine  # noqa: E402


def ensure_sqlite_dir(url: str) -> None:
    """SQLite creates the file but not its folder; a fresh data dir should just work."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        Path(u.database).parent.mkdir(parents=True, exist_ok=True)


def _engine(url_or_engine: str | Engine) -> Engine:
    if isinstance(url_or_engine, Engine):
        return url_or_engine
    ensure_sqlite_dir(url_or_engine)
    return make_engine(url_or_engine)


@contextmanager
def _one_at_a_time(engine: Engine, key: int) -> Iterator[None]:
    """Workers, sinks and the API start together; only one of them migrates at a time (two processes running the
    same migration at once fail with e.g. "duplicate column name"). PostgreSQL: an advisory lock; SQLite: an
    exclusive lock on a file beside the database."""
    if engine.dialect.name == "sqlite":
        db = engine.url.database
        if not db or db == ":memory:":
            yield
            return
        import fcntl

        with open(f"{db}.migrate.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


@dataclass(frozen=True)
class Migrations:
    """One room's migration scripts.

    ``adopt_table``: a table whose presence without a version table means the schema was made by ``create_all``
    before migrations existed; such a database is stamped at ``baseline`` (after ``before_adopt`` brings it to
    the baseline's shape) and then upgraded in place, keeping its data.
    """

    script_location: Path
    version_table: str = "alembic_version"
    baseline: str | None = None
    adopt_table: str | None = None
    before_adopt: Callable[[Engine], None] | None = None
    lock_key: int = 7405

    def config(self, engine: Engine | None) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(self.script_location))
        cfg.attributes["engine"] = engine
        cfg.attributes["version_table"] = self.version_table
        return cfg

    def head(self) -> str:
        """The newest revision shipped with this code."""
        return ScriptDirectory.from_config(self.config(None)).get_current_head()  # type: ignore[return-value]

    def current(self, url_or_engine: str | Engine) -> str | None:
        """The revision the database is at (None: empty or pre-Alembic)."""
        with _engine(url_or_engine).connect() as conn:
            return MigrationContext.configure(conn, opts={"version_table": self.version_table}).get_current_revision()

    def upgrade(self, url_or_engine: str | Engine, rev: str = "head") -> None:
        engine = _engine(url_or_engine)
        cfg = self.config(engine)
        with _one_at_a_time(engine, self.lock_key):
            if self.adopt_table and self.baseline:
                with engine.connect() as conn:
                    tables = set(inspect(conn).get_table_names())
                if self.adopt_table in tables and self.version_table not in tables:
                    if self.before_adopt is not None:
                        self.before_adopt(engine)
                    command.stamp(cfg, self.baseline)
            command.upgrade(cfg, rev)

    def downgrade(self, url_or_engine: str | Engine, rev: str) -> None:
        """Downgrade to ``rev`` (``base`` drops everything this room's migrations created)."""
        engine = _engine(url_or_engine)
        with _one_at_a_time(engine, self.lock_key):
            command.downgrade(self.config(engine), rev)


def run_env(context, metadata) -> None:
    """The body of every room's ``env.py``: online migrations on the handed-in engine, this room's tables only."""
    engine = context.config.attributes["engine"]
    own = set(metadata.tables)

    def include_name(name, type_, parent_names):  # autogenerate/compare: leave the other rooms' tables alone
        return type_ != "table" or name in own

    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=context.config.attributes.get("version_table", "alembic_version"),
            include_name=include_name,
            render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


# ------------------------------------------------------------------------------------------------ append-only
def create_append_only(op, function: str, tables: tuple[str, ...]) -> None:
    """Triggers that refuse UPDATE, DELETE (and on PostgreSQL TRUNCATE) of ``tables``: the record and the command
    ledger are evidence. Called from migrations; the SQL it emits must never change (applied schemas hold it)."""
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                   "BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$")
        for t in tables:
            op.execute(f"CREATE TRIGGER {t}_no_change BEFORE UPDATE OR DELETE ON {t} "
                       f"FOR EACH ROW EXECUTE FUNCTION {function}()")
            op.execute(f"CREATE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()")
    elif dialect == "sqlite":
        for t in tables:
            for what in ("UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER {t}_no_{what.lower()} BEFORE {what} ON {t} "
                           f"BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END")


def drop_append_only(op, function: str, tables: tuple[str, ...]) -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for t in tables:
            op.execute(f"DROP TRIGGER IF EXISTS {t}_no_change ON {t}")
            op.execute(f"DROP TRIGGER IF EXISTS {t}_no_truncate ON {t}")
        op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    elif dialect == "sqlite":
        for t in tables:
            for what in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {t}_no_{what}")
