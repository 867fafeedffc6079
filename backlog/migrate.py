"""Schema migrations, driven from code (no alembic.ini): ``upgrade(url)``, ``downgrade(url, rev)``.

Why programmatic: the pipeline worker, the CLI and the tests all open the backlog with a URL; they should not
need to find an ini file. A database created by the first spine release (``create_all``, no
``alembic_version`` table) is recognised and stamped at the baseline revision, so it upgrades in place.
"""

from __future__ import annotations

import logging
from pathlib import Path

# Alembic logs every plugin and step at INFO; in the worker's and CLI's logs that is noise.
if logging.getLogger("alembic").level == logging.NOTSET:
    logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from sqlalchemy import inspect  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from sitewatch.db import make_engine  # noqa: E402

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001_baseline"


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


def _config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def head() -> str:
    """The newest revision shipped with this code."""
    return ScriptDirectory.from_config(_config(None)).get_current_head()  # type: ignore[arg-type]


def current(url_or_engine: str | Engine) -> str | None:
    """The revision the database is at (None: empty or pre-Alembic)."""
    engine = _engine(url_or_engine)
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url_or_engine: str | Engine, rev: str = "head") -> None:
    engine = _engine(url_or_engine)
    cfg = _config(engine)
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
    if "tickets" in tables and "alembic_version" not in tables:
        command.stamp(cfg, BASELINE)  # created by create_all before migrations existed
    command.upgrade(cfg, rev)


def downgrade(url_or_engine: str | Engine, rev: str) -> None:
    """Downgrade to ``rev`` (``base`` drops everything the migrations created)."""
    engine = _engine(url_or_engine)
    command.downgrade(_config(engine), rev)
