"""``sitewatch verify`` and ``sitewatch evidence keygen|checkpoint|export|verify`` (loaded lazily by app.cli).

The database is ``ctx.obj["settings"].backlog_url`` (``--db`` / ``$SW_DB_URL``); keys, checkpoint interval and
export targets come from ``SW_BLACKBOX_*`` (sitewatch/settings.py) or the options.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import click


def _settings(ctx: click.Context):
    obj = ctx.find_root().obj
    s = obj.get("settings") if isinstance(obj, dict) else None
    if s is None:
        from sitewatch.settings import Settings

        s = Settings()
    return s


def _ms(value: str | None) -> int | None:
    """Epoch milliseconds, or an ISO 8601 date/time (UTC unless it says otherwise)."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither epoch ms nor an ISO 8601 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _key_dir(ctx: click.Context, key_dir: Path | None) -> Path:
    kd = key_dir or _settings(ctx).blackbox_key_dir
    if kd is None:
        raise click.UsageError("no key directory: --key-dir or SW_BLACKBOX_KEY_DIR")
    return Path(kd)


def _verify(ctx: click.Context, sites: tuple[str, ...], from_: str | None, to: str | None,
            checkpoints_dir: Path | None, key_dir: Path | None, public_key: Path | None) -> None:
    from cryptography.hazmat.primitives import serialization

    from blackbox.checkpoints import load_public, read_exported
    from blackbox.verify import verify_site
    from sitewatch.db import make_engine

    s = _settings(ctx)
    engine = make_engine(s.backlog_url)
    cdir = checkpoints_dir or s.blackbox_export_dir
    kdir = key_dir or s.blackbox_key_dir
    broken = False
    try:
        for site in sites:
            if public_key is not None:
                pub = serialization.load_pem_public_key(public_key.read_bytes())
            else:
                pub = load_public(kdir, site) if kdir else None
            cps = read_exported(cdir, site) if cdir else []
            rep = verify_site(engine, site, from_ms=_ms(from_), to_ms=_ms(to), checkpoints=cps,
                              public_key=pub)  # type: ignore[arg-type]
            span = f"seq {rep.first_seq}–{rep.last_seq}" if rep.entries else "no entries"
            click.echo(f"site {site}: {rep.entries} entries ({span}), {rep.checkpoints} checkpoint(s) compared")
            for note in rep.notes:
                click.echo(f"  note: {note}")
            if rep.ok:
                click.echo("  OK: every link verifies")
                continue
            broken = True
            click.echo(f"  BROKEN: first broken link: {rep.first}")
            for b in sorted(rep.findings, key=lambda b: b.seq)[1:]:
                click.echo(f"  also: {b}")
    finally:
        engine.dispose()
    if broken:
        sys.exit(1)


_VERIFY_OPTIONS = [
    click.option("--site", "sites", multiple=True, required=True, help="site to verify (repeatable)"),
    click.option("--from", "from_", help="first entry time (ISO 8601 or epoch ms)"),
    click.option("--to", help="last entry time (ISO 8601 or epoch ms)"),
    click.option("--checkpoints", "checkpoints_dir", type=click.Path(path_type=Path),
                 help="exported checkpoints (default $SW_BLACKBOX_EXPORT_DIR)"),
    click.option("--key-dir", type=click.Path(path_type=Path), help="site keys (default $SW_BLACKBOX_KEY_DIR)"),
    click.option("--public-key", type=click.Path(exists=True, path_type=Path), help="the site's public key file"),
]


def _with_verify_options(f):
    for opt in reversed(_VERIFY_OPTIONS):
        f = opt(f)
    return f


@click.command("verify")
@_with_verify_options
@click.pass_context
def verify(ctx, sites, from_, to, checkpoints_dir, key_dir, public_key):
    """Recompute a site's tamper-evident record; exit 1 and name the first broken link if it does not verify."""
    _verify(ctx, sites, from_, to, checkpoints_dir, key_dir, public_key)


@click.group()
def evidence():
    """The tamper-evident record: site keys, signed checkpoints, their export, verification."""


evidence.add_command(verify)


@evidence.command()
@click.option("--site", required=True)
@click.option("--key-dir", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="replace an existing key (old checkpoints then need the old key)")
@click.pass_context
def keygen(ctx, site, key_dir, overwrite):
    """Make the Ed25519 key pair of a site (<site>.pem private, <site>.pub.pem for the third party)."""
    from blackbox.checkpoints import keygen as make

    try:
        pub = make(_key_dir(ctx, key_dir), site, overwrite=overwrite)
    except (FileExistsError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"public key: {pub}")


def _checkpointer(ctx, key_dir, export_dir, export_url, interval, need_keys=True):
    from blackbox.schema import upgrade
    from blackbox.signer import Checkpointer
    from sitewatch.db import make_engine

    s = _settings(ctx)
    engine = make_engine(s.backlog_url)
    upgrade(engine)
    keys = _key_dir(ctx, key_dir) if need_keys else Path(key_dir or s.blackbox_key_dir or ".")
    return Checkpointer(engine, keys, export_dir or s.blackbox_export_dir,
                        export_url or s.blackbox_export_url,
                        interval if interval is not None else s.blackbox_checkpoint_s)


@evidence.command()
@click.option("--site", "sites", multiple=True, help="default: every site with entries")
@click.option("--key-dir", type=click.Path(path_type=Path))
@click.option("--export-dir", type=click.Path(path_type=Path))
@click.option("--export-url")
@click.option("--every", type=float, help="keep running: a round every N seconds (signing what is due)")
@click.pass_context
def checkpoint(ctx, sites, key_dir, export_dir, export_url, every):
    """Sign and export checkpoints: now (every site's head), or with --every at the configured interval."""
    cp = _checkpointer(ctx, key_dir, export_dir, export_url, None)
    while True:
        done = cp.run(sites or None, force=every is None)
        for c in done:
            click.echo(f"site {c.site}: checkpoint at seq {c.seq} ({c.hash[:16]}…)")
        if every is None:
            return
        time.sleep(every)


@evidence.command("export")
@click.option("--site", "sites", multiple=True, help="default: every site with entries")
@click.option("--key-dir", type=click.Path(path_type=Path))
@click.option("--export-dir", type=click.Path(path_type=Path))
@click.option("--export-url")
@click.pass_context
def export(ctx, sites, key_dir, export_dir, export_url):
    """Send every stored checkpoint again (after the third party's folder or webhook was unavailable)."""
    cp = _checkpointer(ctx, key_dir, export_dir, export_url, None, need_keys=False)
    if cp.export_dir is None and not cp.export_url:
        raise click.UsageError("nowhere to export: --export-dir/--export-url or SW_BLACKBOX_EXPORT_DIR/URL")
    for site in sites or cp.sites():
        click.echo(f"site {site}: {cp.export_all(site)} checkpoint(s) exported")
