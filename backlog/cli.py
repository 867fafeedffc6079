"""``sitewatch backlog …``, ``sitewatch api …`` and ``sitewatch report …`` (loaded lazily by app.cli).

Every command opens the backlog at ``ctx.obj["settings"].backlog_url`` (``--db`` / ``$SW_DB_URL``).
"""

from __future__ import annotations

from pathlib import Path

import click

from backlog.errors import BacklogError


def _settings(ctx: click.Context):
    if ctx.obj and "settings" in ctx.obj:
        return ctx.obj["settings"]
    from sitewatch.settings import Settings

    return Settings()


def _open(ctx: click.Context, create: bool = True):
    from backlog.store import Backlog

    return Backlog(_settings(ctx).backlog_url, create=create)


def _fail(e: BacklogError) -> click.ClickException:
    return click.ClickException(str(e))


# ------------------------------------------------------------------------------------------------ backlog
@click.group()
def backlog():
    """The supervision backlog: schema migrations, organisations, deadline escalation."""


@backlog.command()
@click.option("--to", "rev", default="head", show_default=True, help="upgrade to this revision")
@click.option("--downgrade", "down", metavar="REV", help="downgrade to REV instead (e.g. 0001_baseline or base)")
@click.pass_context
def migrate(ctx, rev, down):
    """Bring the backlog database schema up to date (Alembic; SQLite or PostgreSQL)."""
    from backlog import migrate as m

    url = _settings(ctx).backlog_url
    if down:
        m.downgrade(url, down)
    else:
        m.upgrade(url, rev)
    click.echo(f"backlog schema at {m.current(url) or 'base'} (head {m.head()})")


@backlog.command("escalate-overdue")
@click.pass_context
def escalate_overdue(ctx):
    """Escalate tickets past their rectification deadline (idempotent; run it from cron or a timer)."""
    ids = _open(ctx).escalate_overdue()
    click.echo(f"escalated {len(ids)} overdue ticket(s)" + (f": {', '.join(f'#{i}' for i in ids)}" if ids else ""))


@backlog.command("import-org")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def import_org(ctx, file):
    """Import (upsert) city → district → company → project/site → device and users from a YAML FILE.

    See backlog/fixtures/demo_org.yaml for the format. Re-importing an unchanged file changes nothing.
    """
    from backlog import orgs

    try:
        counts = orgs.import_org(_open(ctx), file)
    except BacklogError as e:
        raise _fail(e) from None
    except (KeyError, TypeError) as e:
        raise click.ClickException(f"malformed org file: missing or wrong entry {e}") from None
    click.echo("imported " + ", ".join(f"{n} {k}" for k, n in counts.items()))


@backlog.command("credits")
@click.pass_context
def credits(ctx):
    """List credit-score deductions recorded against companies."""
    for d in _open(ctx).credit_deductions():
        click.echo(f"#{d.id:<4} company={d.company_id} ticket=#{d.ticket_id} -{d.points:g} by {d.actor}: {d.reason}")


# ------------------------------------------------------------------------------------------------ api
@click.group()
def api():
    """The backlog REST API: serve it, manage its tokens."""


@api.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="interface to listen on")
@click.option("--port", default=8700, show_default=True, help="TCP port")
@click.option("--evidence-dir", type=click.Path(file_okay=False, path_type=Path),
              help="where uploaded evidence is stored (default <data dir>/evidence)")
@click.pass_context
def serve(ctx, host, port, evidence_dir):
    """Serve the API with uvicorn (OpenAPI docs at /docs)."""
    import uvicorn

    from backlog.api import create_app

    s = _settings(ctx)
    backlog = _open(ctx)
    app = create_app(backlog, evidence_dir or s.data_dir / "evidence")
    # Rooms above the backlog (commands) add their routes through the face (app/cli.py): this room cannot
    # import them. Each is called as extend(ctx, app, backlog) and returns the app.
    for extend in (ctx.obj or {}).get("api_extensions", ()):
        app = extend(ctx, app, backlog)
    click.echo(f"backlog API on http://{host}:{port}  (docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level="info")


@api.group()
def token():
    """Create or revoke API tokens (only their hash is stored)."""


@token.command("create")
@click.option("--user", "user", required=True, help="user name (from the imported org file)")
@click.option("--label", default="", help="what the token is for")
@click.pass_context
def token_create(ctx, user, label):
    """Create a token for USER and print it once."""
    from backlog import orgs

    try:
        tok = orgs.create_token(_open(ctx), user, label)
    except BacklogError as e:
        raise _fail(e) from None
    click.echo(tok)


@token.command("revoke")
@click.argument("prefix")
@click.pass_context
def token_revoke(ctx, prefix):
    """Revoke the token(s) starting with PREFIX (the first 10 characters)."""
    from backlog import orgs

    n = orgs.revoke_token(_open(ctx), prefix)
    click.echo(f"revoked {n} token(s)")
    if n == 0:
        raise SystemExit(1)


# ------------------------------------------------------------------------------------------------ report
@click.group()
def report():
    """Month-end and year-end hazard reports (HTML + CSV)."""


def _write(ctx, period, kind: str, out: Path) -> None:
    from backlog import render, reports

    r = reports.build(_open(ctx), period, kind)
    for p in render.write(r, out):
        click.echo(str(p))
    t = r.totals
    rate = "–" if t.rectification_rate is None else f"{t.rectification_rate:.1%}"
    click.echo(f"found {t.found}, rectified {t.rectified} ({rate}), overdue {t.overdue}, major {t.major}")


@report.command()
@click.option("--month", required=True, help="the month, e.g. 2026-10")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"), show_default=True,
              help="output directory")
@click.option("--format", "fmt", type=click.Choice(["html", "pdf"]), default="html", show_default=True,
              help="html: HTML + CSV; pdf: one PDF with charts (Chinese font embedded)")
@click.pass_context
def monthly(ctx, month, out, fmt):
    """The month-end report per district, company and project."""
    from backlog.reports import Period

    try:
        period = Period.month(month)
    except BacklogError as e:
        raise click.BadParameter(str(e), param_hint="--month") from None
    if fmt == "pdf":
        from backlog import report_pdf

        try:
            path, r = report_pdf.write(_open(ctx), period, out)
        except BacklogError as e:
            raise _fail(e) from None
        t = r.totals
        click.echo(str(path))
        click.echo(f"found {t.found}, rectified {t.rectified}, overdue {t.overdue}, major {t.major}")
        return
    _write(ctx, period, "monthly", out)


@report.command()
@click.option("--year", required=True, help="the year, e.g. 2026")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"), show_default=True,
              help="output directory")
@click.pass_context
def yearly(ctx, year, out):
    """The year summary per district, company and project."""
    from backlog.reports import Period

    try:
        _write(ctx, Period.year(year), "yearly", out)
    except BacklogError as e:
        raise click.BadParameter(str(e), param_hint="--year") from None
