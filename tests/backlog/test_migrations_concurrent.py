"""Workers, the sink and the API start together on a fresh database: every room's migrations run once, whoever
comes first, and nobody crashes ("duplicate column name" when two processes ran the same migration at once)."""

from __future__ import annotations

import multiprocessing as mp

from sqlalchemy import inspect

from sitewatch.db import make_engine


def _open_everything(url: str, q) -> None:
    try:
        from alerts.delivery_log import DeliveryLog
        from backlog.store import Backlog

        Backlog(url)
        DeliveryLog(url)
        q.put("ok")
    except Exception as e:  # noqa: BLE001 - the parent asserts on what happened
        q.put(repr(e)[:300])


def test_processes_starting_together_migrate_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'backlog.db'}"
    ctx = mp.get_context("spawn")  # a fresh interpreter each, as separate worker processes are
    q = ctx.Queue()
    procs = [ctx.Process(target=_open_everything, args=(url, q)) for _ in range(4)]
    for p in procs:
        p.start()
    outcomes = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert outcomes == ["ok"] * 4, outcomes
    tables = set(inspect(make_engine(url)).get_table_names())
    assert {"tickets", "alert_deliveries", "alembic_version", "alembic_version_alerts"} <= tables
