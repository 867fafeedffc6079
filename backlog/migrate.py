"""The backlog's schema migrations (``backlog/migrations/``): ``upgrade(url)``, ``downgrade(url, rev)``, ``current``,
``head``. A database created by the first release (``create_all``, no ``alembic_version`` table) is recognised and
stamped at the baseline revision, so it upgrades in place. The runner is the core's (``sitewatch.migrations``).
"""

from __future__ import annotations

from pathlib import Path

from sitewatch.migrations import Migrations, ensure_sqlite_dir

BASELINE = "0001_baseline"
MIGRATIONS = Migrations(Path(__file__).resolve().parent / "migrations", baseline=BASELINE, adopt_table="tickets")

head = MIGRATIONS.head
current = MIGRATIONS.current
upgrade = MIGRATIONS.upgrade
downgrade = MIGRATIONS.downgrade

__all__ = ["BASELINE", "MIGRATIONS", "current", "downgrade", "ensure_sqlite_dir", "head", "upgrade"]
