"""``sitewatch sink``: run the time-series sink, prepare its database, backfill rollups."""

from __future__ import annotations

import signal
import threading
import time

import click

from streams.sinks.config import SinkSettings, load_companies


def _writer(cfg: SinkSettings):
    from streams.sinks.writers import make_writer

    return make_writer(cfg.influx_url, db=cfg.influx_db, api=cfg.influx_api, username=cfg.influx_username,
                       password=cfg.influx_password, token=cfg.influx_token, org=cfg.influx_org,
                       bucket=cfg.influx_bucket, chunk_lines=cfg.sink_chunk_lines)


def _init_v1(writer, cfg: SinkSettings, echo=click.echo) -> None:
    from streams.sinks.schema import init_database

    for stmt in init_database(writer, cfg.influx_db, cfg.raw_retention, cfg.rollup_1m_retention):
        echo(f"  {stmt}")


def _common(f):
    f = click.option("--influx-url", help="InfluxDB URL (default http://127.0.0.1:8086 or $SW_INFLUX_URL); "
                                          "influxdb2://host:port selects the 2.x/3.x API")(f)
    f = click.option("--db", "influx_db", help="database / bucket name (default sitewatch or $SW_INFLUX_DB)")(f)
    return f


def _cfg(influx_url: str | None, influx_db: str | None, **more) -> SinkSettings:
    over = {k: v for k, v in dict(influx_url=influx_url, influx_db=influx_db, **more).items() if v is not None}
    return SinkSettings(**over)


@click.group()
def sink():
    """Time-series sink: sw.readings and sw.hazards → InfluxDB (for the Grafana wall screens)."""


@sink.command()
@_common
@click.option("--raw-retention", help="how long raw readings are kept (default 30d or $SW_RAW_RETENTION)")
@click.option("--rollup-1m-retention", help="how long 1-minute rollups are kept (default 400d)")
def init(influx_url, influx_db, raw_retention, rollup_1m_retention):
    """Create the database, retention policies (raw / rollup_1m / rollup_1h / events) and rollup queries.

    Idempotent: run it again to change a retention period. InfluxDB 1.x only; on 2.x/3.x create the bucket
    and downsampling tasks in the server instead.
    """
    cfg = _cfg(influx_url, influx_db, raw_retention=raw_retention, rollup_1m_retention=rollup_1m_retention)
    w = _writer(cfg)
    if w.name != "influxdb-v1":
        raise click.ClickException("sink init manages InfluxDB 1.x; on 2.x/3.x create the bucket and tasks there")
    if not w.ping():
        raise click.ClickException(f"InfluxDB at {cfg.influx_url} does not answer /ping")
    click.echo(f"initialising {cfg.influx_db} on {cfg.influx_url}:")
    _init_v1(w, cfg)
    w.close()


@sink.command()
@_common
@click.option("--since", "since", required=True, help="start of the gap: epoch ms, or a duration ago (e.g. 6h, 2d)")
@click.option("--until", "until", default=None, help="end of the gap (default now)")
def backfill(influx_url, influx_db, since, until):
    """Recompute the 1 min / 1 h rollups over a time range (after an outage longer than the CQ window)."""
    from streams.sinks.schema import backfill_statements

    cfg = _cfg(influx_url, influx_db)
    w = _writer(cfg)
    now = int(time.time() * 1000)
    t0, t1 = _when(since, now), _when(until, now) if until else now
    for q in backfill_statements(cfg.influx_db, t0, t1):
        res = w.query(q, post=True)
        r0 = res["results"][0]
        written = r0.get("series", [{}])[0].get("values", [[0, 0]])[0][1] if "series" in r0 else 0
        click.echo(f"{r0.get('error') or 'ok'}: {written} rollup points  ← {q[:90]}…")
    w.close()


def _when(s: str, now: int) -> int:
    if s.isdigit():
        return int(s)
    units = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    if s[-1] in units and s[:-1].isdigit():
        return now - int(s[:-1]) * units[s[-1]]
    raise click.BadParameter(f"{s!r}: epoch ms or a duration like 90m, 6h, 2d")


@sink.command()
@_common
@click.option("--group", "sink_group", help="Kafka consumer group (default sitewatch-sink)")
@click.option("--companies", "sink_companies", type=click.Path(exists=True), help="YAML site → company map")
@click.option("--batch-points", "sink_batch_points", type=int, help="flush after this many points (default 50000)")
@click.option("--no-init", is_flag=True, help="do not create the database / retention policies on start")
@click.option("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
@click.pass_context
def run(ctx, influx_url, influx_db, sink_group, sink_companies, sink_batch_points, no_init, duration):
    """Consume sw.readings + sw.hazards and write them to InfluxDB; offsets commit only after the DB acks.

    Prints a progress line every few seconds (points/s, consumer lag, retries). If the database is down the
    sink waits (nothing committed, nothing dropped) and catches up when it returns.
    """
    from streams.sinks.influx import Sink, SinkOptions
    from streams.sinks.lineproto import LineBuilder

    settings = (ctx.obj or {}).get("settings")
    cfg = _cfg(influx_url, influx_db, sink_group=sink_group, sink_companies=sink_companies,
               sink_batch_points=sink_batch_points)
    bootstrap = settings.kafka_bootstrap if settings is not None else "127.0.0.1:9092"
    w = _writer(cfg)
    if w.name == "influxdb-v1" and not no_init:
        _wait_and_init(w, cfg)
    opts = SinkOptions(bootstrap=bootstrap, group_id=cfg.sink_group, batch_points=cfg.sink_batch_points,
                       linger_s=cfg.sink_linger_s, max_poll_interval_ms=cfg.sink_max_poll_interval_ms,
                       kafka_options=settings.kafka_options() if settings is not None else {})
    s = Sink(w, opts, LineBuilder(load_companies(cfg.sink_companies)), echo=lambda m: click.echo(m))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"sink: {bootstrap} → {w.name} {cfg.influx_url} db={cfg.influx_db} group={cfg.sink_group}")
    stats = s.run(stop, duration)
    w.close()
    click.echo(f"sink stopped: {stats.points:,} points written ({stats.readings:,} readings, {stats.hazards:,} "
               f"hazards, {stats.health:,} health), {stats.retries} retries, {stats.skipped} skipped")


def _wait_and_init(w, cfg: SinkSettings) -> None:
    """The database may start after the sink (or be down): wait for it, creating the schema once it answers."""
    delay = 0.5
    said = False
    while True:
        try:
            if w.ping():
                _init_v1(w, cfg, echo=lambda m: None)
                return
            problem = "no answer to /ping"
        except Exception as e:  # noqa: BLE001 - any failure here means "not ready yet"
            problem = str(e)
        if not said:
            click.echo(f"sink: database at {cfg.influx_url} not ready ({problem}); waiting", err=True)
            said = True
        time.sleep(delay)
        delay = min(delay * 2, 10)
