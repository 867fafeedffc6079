"""``sitewatch alerts``: test a receiver's channels, manage silences, check routes, read the delivery log."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import click

from alerts.config import LEVEL_NAMES, AlertsConfig, AlertsConfigError, Matcher, load_config

_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|min|m|h|d)?\s*$")
_UNIT = {"s": 1, None: 1, "min": 60, "m": 60, "h": 3600, "d": 86400}


def _settings(ctx: click.Context):
    obj = ctx.find_root().obj or {}
    s = obj.get("settings") if isinstance(obj, dict) else None
    if s is None:
        from sitewatch.settings import Settings

        s = Settings()
    return s


def _db_url(ctx: click.Context, db: str | None) -> str:
    return db or _settings(ctx).backlog_url


def _config(path: str | None, ctx: click.Context | None = None) -> AlertsConfig:
    path = path or os.environ.get("SW_ALERTS_CONFIG")
    if not path and ctx is not None and getattr(_settings(ctx), "webhook_url", None):
        from alerts.config import webhook_only

        s = _settings(ctx)
        return webhook_only(s.webhook_url, s.webhook_secret)  # the zero-config mode: receiver "webhook"
    if not path:
        raise click.ClickException("no alerts config: pass --config FILE or set SW_ALERTS_CONFIG "
                                   "(or SW_WEBHOOK_URL for the single-webhook mode)")
    try:
        return load_config(path)
    except AlertsConfigError as e:
        raise click.ClickException(f"invalid alerts config:\n{e}") from None


def _log(ctx, db):
    from alerts.delivery_log import DeliveryLog

    return DeliveryLog(_db_url(ctx, db))


def _ts(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _seconds(text: str) -> float:
    m = _DUR.match(text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 30min, 2h, 1d")
    return float(m.group(1)) * _UNIT[m.group(2)]


@click.group()
@click.option("--config", "config_path", envvar="SW_ALERTS_CONFIG", help="alerts routing YAML ($SW_ALERTS_CONFIG)")
@click.option("--db", help="database of the delivery log (default: the backlog's, $SW_DB_URL)")
@click.pass_context
def alerts(ctx, config_path, db):
    """Alert routing, silences, test messages and the delivery log."""
    ctx.ensure_object(dict)
    ctx.obj["alerts_config"] = config_path
    ctx.obj["alerts_db"] = db


# ------------------------------------------------------------------------------------------------ test
@alerts.command("test")
@click.option("--receiver", required=True, help="receiver name from the config")
@click.option("--channel", help="only this channel (its type or name)")
@click.pass_context
def test_cmd(ctx, receiver, channel):
    """Send a test message to RECEIVER through each configured channel; print the outcome per channel."""
    from alerts.notifier import Notifier

    cfg = _config(ctx.obj["alerts_config"], ctx)
    lg = _log(ctx, ctx.obj["alerts_db"])
    if receiver in cfg.receivers:
        _test_allowed(lg, receiver, int(time.time() * 1000))
    n = Notifier(lg, cfg)
    try:
        outcomes = asyncio.run(n.send_test(receiver, channel, actor=os.environ.get("USER", "cli")))
    except KeyError as e:
        raise click.ClickException(str(e.args[0])) from None
    for o in outcomes:
        mark = "OK  " if o.ok else "FAIL"
        click.echo(f"{mark} {receiver} via {o.channel} ({o.attempts} attempt(s))" + (f": {o.error}" if o.error else ""))
    if not all(o.ok for o in outcomes):
        sys.exit(1)


ENV_TEST_LIMIT = "SW_RATE_ALERTS_TEST"
DEFAULT_TEST_LIMIT = "5/hour"


def _test_allowed(lg, receiver: str, now_ms: int) -> None:
    """At most ``$SW_RATE_ALERTS_TEST`` (default 5/hour) test messages per receiver: a test can be an SMS, and
    SMS cost money (OWASP API4). Counted from the delivery log's audit trail, so the limit holds across
    invocations and hosts sharing the database (two runs racing in the same instant may both pass)."""
    from limits import parse
    from sqlalchemy import func, select

    from alerts.delivery_log import AuditRecord

    spec = os.environ.get(ENV_TEST_LIMIT) or DEFAULT_TEST_LIMIT
    try:
        item = parse(spec)
    except ValueError:
        raise click.ClickException(f"${ENV_TEST_LIMIT}={spec!r} is not a rate like '5/hour'") from None
    since = now_ms - item.get_expiry() * 1000
    with lg.session() as s:
        q = select(func.count(), func.min(AuditRecord.at_ms)).where(
            AuditRecord.action == "test_sent", AuditRecord.entity == "receiver", AuditRecord.entity_id == receiver,
            AuditRecord.at_ms > since)
        count, oldest = s.execute(q).one()
    if count >= item.amount:
        wait_s = max(1, -(-((oldest or now_ms) + item.get_expiry() * 1000 - now_ms) // 1000))
        raise click.ClickException(f"receiver {receiver}: {count} test messages within {spec} already "
                                   f"(${ENV_TEST_LIMIT}); try again in {wait_s} s")


# ------------------------------------------------------------------------------------------------ silences
@alerts.group()
def silence():
    """Maintenance windows: matching alerts are recorded as silenced, not sent."""


@silence.command("add")
@click.option("--match", "matches", multiple=True, required=True,
              help="field=value[,value] (site, company, family, device, kind, category, level, major, receiver)")
@click.option("--duration", default="2h", show_default=True, help="how long, e.g. 90min, 4h, 1d")
@click.option("--starts", "starts", help="start, ISO 8601 (default now)")
@click.option("--author", required=True, help="who silences (recorded in the audit trail)")
@click.option("--reason", required=True, help="why (e.g. crane tc-01 under inspection)")
@click.pass_context
def silence_add(ctx, matches, duration, starts, author, reason):
    """Add a silence."""
    matchers: dict = {}
    for m in matches:
        k, sep, v = m.partition("=")
        if not sep or not v:
            raise click.BadParameter(f"{m!r}: expected field=value", param_hint="--match")
        vals = [x.strip() for x in v.split(",") if x.strip()]
        matchers[k.strip()] = (vals[0].lower() in ("1", "true", "yes")) if k.strip() == "major" else vals
    rcv = matchers.pop("receiver", None)
    try:
        Matcher.model_validate(matchers)
    except Exception as e:
        raise click.BadParameter(str(e), param_hint="--match") from None
    if rcv is not None:
        matchers["receiver"] = rcv
    start = (datetime.fromisoformat(starts).timestamp() if starts else time.time())
    start_ms = int(start * 1000)
    sil = _log(ctx, ctx.obj["alerts_db"]).add_silence(matchers, start_ms, start_ms + int(_seconds(duration) * 1000),
                                                      author, reason, int(time.time() * 1000))
    click.echo(f"silence #{sil.id} until {_ts(sil.ends_ms)}: {json.dumps(matchers, ensure_ascii=False)}")


@silence.command("list")
@click.option("--all", "show_all", is_flag=True, help="include expired silences")
@click.pass_context
def silence_list(ctx, show_all):
    """List active (or all) silences."""
    now = int(time.time() * 1000)
    lg = _log(ctx, ctx.obj["alerts_db"])
    rows = lg.silences() if show_all else lg.silences(active_at_ms=now)
    if not rows:
        click.echo("no silences")
    for s in rows:
        state = "active" if s.active(now) else ("expired" if s.expired_ms or s.ends_ms <= now else "pending")
        click.echo(f"#{s.id} {state:8} {_ts(s.starts_ms)} → {_ts(s.ends_ms)}  by {s.author}: {s.reason}  "
                   f"{json.dumps(s.matchers, ensure_ascii=False)}"
                   + (f"  (expired by {s.expired_by} at {_ts(s.expired_ms)})" if s.expired_ms else ""))


@silence.command("expire")
@click.argument("silence_id", type=int)
@click.option("--author", required=True, help="who ends it (audit trail)")
@click.option("--reason", default="", help="why")
@click.pass_context
def silence_expire(ctx, silence_id, author, reason):
    """End a silence now."""
    s = _log(ctx, ctx.obj["alerts_db"]).expire_silence(silence_id, author, int(time.time() * 1000), reason)
    if s is None:
        raise click.ClickException(f"no silence #{silence_id}")
    click.echo(f"silence #{silence_id} expired")


# ------------------------------------------------------------------------------------------------ routes
@alerts.group()
def routes():
    """Check routing configuration."""


@routes.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--alert", "alert_file", type=click.Path(exists=True, dir_okay=False),
              help="a sample alert JSON (as on sw.alerts); else built from the options below")
@click.option("--site", default="cz-0001")
@click.option("--company")
@click.option("--family", default="crane")
@click.option("--device", default="tc-01")
@click.option("--kind", default="crane.overload")
@click.option("--category", default="hazard")
@click.option("--level", type=click.Choice(["yellow", "orange", "red"]), default="red")
@click.option("--major", is_flag=True)
def routes_check(file, alert_file, site, company, family, device, kind, category, level, major):
    """Validate FILE and show which receivers (by tier) a sample alert would reach."""
    from alerts.routing import facts, matching_routes, tiers_for

    try:
        cfg = load_config(file)
    except AlertsConfigError as e:
        click.echo(str(e), err=True)
        sys.exit(1)
    click.echo(f"{file}: OK ({len(cfg.receivers)} receivers, {len(cfg.routes)} routes, "
               f"{len(cfg.providers)} providers)")
    if alert_file:
        alert = json.loads(Path(alert_file).read_text(encoding="utf-8"))
    else:
        lv = {"yellow": 1, "orange": 2, "red": 3}[level]
        alert = {"alert_id": "sample", "ticket": {"id": 0, "site": site, "family": family, "device": device,
                                                  "kind": kind, "category": category, "level": lv, "peak_level": lv,
                                                  "major": major}}
    f = facts(alert, (lambda _s: company) if company else None, cfg)
    click.echo("sample: " + " ".join(f"{k}={LEVEL_NAMES.get(v, v) if k == 'level' else v}" for k, v in f.items()))
    rs = matching_routes(cfg, f)
    click.echo("routes: " + (", ".join(r.name for r in rs) if rs else "(none)"))
    tiers = tiers_for(cfg, f)
    if not tiers:
        click.echo("→ nobody: the alert would be logged as unrouted")
    for tr in tiers:
        skip = tr.tier.major_only and not f["major"]
        when = "at once" if tr.tier.after == 0 else f"after {tr.tier.after / 60:g} min unacknowledged"
        chans = {r: [c.label for c in cfg.receivers[r].channels] for r in tr.tier.receivers}
        click.echo(f"  {tr.id} ({tr.label}) {when}{' [major hazards only: not this one]' if skip else ''}: "
                   + "; ".join(f"{r} via {' → '.join(c)}" for r, c in chans.items()))


# ------------------------------------------------------------------------------------------------ log
@alerts.command("log")
@click.option("--limit", default=30, show_default=True)
@click.option("--receiver", help="only this receiver")
@click.option("--attempts", "show_attempts", is_flag=True, help="every attempt instead of every delivery")
@click.pass_context
def log_cmd(ctx, limit, receiver, show_attempts):
    """Recent deliveries (item × receiver) with their status, channel and attempts."""
    lg = _log(ctx, ctx.obj["alerts_db"])
    if show_attempts:
        rows = [a for a in lg.attempts(limit) if not receiver or a.receiver == receiver]
        if not rows:
            click.echo("no attempts yet")
        for a in rows:
            click.echo(f"{_ts(a.at_ms)} {a.receiver:16} {a.channel:10} {'ok' if a.ok else 'FAIL'} "
                       f"{a.duration_ms} ms {a.error or ''}")
        return
    rows = lg.recent(limit, receiver)
    if not rows:
        click.echo("no deliveries yet")
    for d in rows:
        click.echo(f"{_ts(d.first_attempt_ms)} {d.alert_id:28} {d.receiver:16} {d.status:10} "
                   f"{(d.channel or '-'):10} attempts={d.attempts} "
                   f"{'delivered ' + _ts(d.delivered_ms) if d.delivered_ms else ''}"
                   f"{' ' + d.note if d.note and d.status != 'delivered' else ''}"
                   f"{' last error: ' + d.last_error if d.last_error and d.status == 'pending' else ''}")
