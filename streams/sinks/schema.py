"""The InfluxDB 1.x database layout: retention policies and rollups (``sitewatch sink init``).

    RP          holds                                  kept for
    raw         ``reading`` at full rate (default RP)    --raw-retention (30d by default)
    rollup_1m   ``reading_1m``: mean/min/max/n per 1 min  --rollup-1m-retention (400d)
    rollup_1h   ``reading_1h``: mean/min/max/n per 1 h    forever (monthly reports, long trends)
    events      ``hazard``, ``device_health``              forever (the ledger's evidence; low volume)

Rollups are continuous queries with ``RESAMPLE … FOR`` so readings that arrive a little late (a sink catching
up after a short outage) are still folded in; for longer gaps ``sitewatch sink backfill`` runs the very same
``SELECT … INTO`` over a given time range. Both 1 min and 1 h rollups read the raw data (a mean of means would
weight quiet minutes like busy ones).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RP_RAW = "raw"
RP_1M = "rollup_1m"
RP_1H = "rollup_1h"
RP_EVENTS = "events"

_DUR_RE = re.compile(r"^(INF|([0-9]+(ns|u|µ|ms|s|m|h|d|w))+)$")


@dataclass(frozen=True)
class Rollup:
    name: str  # continuous query name
    rp: str
    measurement: str
    interval: str
    resample_every: str
    resample_for: str


ROLLUPS = (
    Rollup("cq_reading_1m", RP_1M, "reading_1m", "1m", "1m", "15m"),
    Rollup("cq_reading_1h", RP_1H, "reading_1h", "1h", "10m", "3h"),
)


def check_duration(d: str) -> str:
    if not _DUR_RE.match(d):
        raise ValueError(f"{d!r} is not an InfluxQL duration like 30d, 12h, 2w or INF")
    return d


def rollup_select(db: str, r: Rollup, where: str = "") -> str:
    """The body of a rollup: the CQ runs it on a schedule, backfill runs it over an explicit range."""
    cond = f" WHERE {where}" if where else ""
    return (
        f'SELECT mean("value") AS "value", min("value") AS "min", max("value") AS "max", count("value") AS "n" '
        f'INTO "{db}"."{r.rp}"."{r.measurement}" FROM "{db}"."{RP_RAW}"."reading"{cond} '
        f"GROUP BY time({r.interval}), *"
    )


def cq_statement(db: str, r: Rollup) -> str:
    return (f'CREATE CONTINUOUS QUERY "{r.name}" ON "{db}" RESAMPLE EVERY {r.resample_every} FOR {r.resample_for} '
            f"BEGIN {rollup_select(db, r)} END")


def retention_policies(raw: str, rollup_1m: str) -> list[tuple[str, str, str, bool]]:
    """(name, duration, shard duration, is default)."""
    return [
        (RP_RAW, check_duration(raw), "1d", True),
        (RP_1M, check_duration(rollup_1m), "7d", False),
        (RP_1H, "INF", "30d", False),
        (RP_EVENTS, "INF", "30d", False),
    ]


def init_statements(db: str, existing_rps: set[str], existing_cqs: dict[str, str], raw: str = "30d",
                    rollup_1m: str = "400d") -> list[str]:
    """Idempotent: create what is missing, alter durations that changed, recreate CQs whose text changed."""
    out = [f'CREATE DATABASE "{db}"']
    for name, dur, shard, default in retention_policies(raw, rollup_1m):
        verb = "ALTER" if name in existing_rps else "CREATE"
        rep = "" if verb == "ALTER" else " REPLICATION 1"
        out.append(f'{verb} RETENTION POLICY "{name}" ON "{db}" DURATION {dur}{rep} SHARD DURATION {shard}'
                   + (" DEFAULT" if default else ""))
    for r in ROLLUPS:
        want = cq_statement(db, r)
        have = existing_cqs.get(r.name)
        if have is not None and _norm(have) == _norm(want):
            continue
        if have is not None:
            out.append(f'DROP CONTINUOUS QUERY "{r.name}" ON "{db}"')
        out.append(want)
    return out


def _norm(q: str) -> str:
    return re.sub(r"[\s\"]+", "", q).lower()


def init_database(writer, db: str, raw: str = "30d", rollup_1m: str = "400d") -> list[str]:
    """Run the init statements through an ``InfluxV1Writer``; returns what was executed."""
    data = writer.query("SHOW DATABASES", db=db)
    dbs = {v[0] for s in data["results"][0].get("series", []) or [] for v in s.get("values", [])}
    rps: set[str] = set()
    cqs: dict[str, str] = {}
    if db in dbs:
        data = writer.query(f'SHOW RETENTION POLICIES ON "{db}"', db=db)
        rps = {v[0] for s in data["results"][0].get("series", []) or [] for v in s["values"]}
        data = writer.query("SHOW CONTINUOUS QUERIES", db=db)
        for s in data["results"][0].get("series", []) or []:
            if s.get("name") == db:
                cqs = {v[0]: v[1] for v in s.get("values", []) or []}
    stmts = init_statements(db, rps, cqs, raw, rollup_1m)
    for q in stmts:
        res = writer.query(q, db=db, post=True)
        err = res.get("results", [{}])[0].get("error") if res.get("results") else res.get("error")
        if err:
            raise RuntimeError(f"{q}: {err}")
    return stmts


def backfill_statements(db: str, since_ms: int, until_ms: int) -> list[str]:
    """Rollups over [since, until): after an outage longer than a CQ's RESAMPLE window."""
    out = []
    for r in ROLLUPS:
        out.append(rollup_select(db, r, f"time >= {since_ms}ms AND time < {until_ms}ms"))
    return out
