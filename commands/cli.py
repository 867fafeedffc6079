"""``sitewatch command keygen|request|approve|reject|list|serve``, and ``/commands`` for ``sitewatch api serve``.

The CLI acts as the named user (``--as NAME``, a user of the imported org file): whoever runs it holds the
database URL already, like every other ``sitewatch backlog`` command; the API is the way in for everyone else.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from pathlib import Path

import click

from backlog import cli as backlog_cli
from backlog.errors import BacklogError


def _settings(ctx: click.Context):
    return backlog_cli._settings(ctx)


def _ledger(ctx: click.Context, rules: Path | None = None, backlog=None):
    from backlog.store import Backlog
    from commands.ledger import Ledger

    s = _settings(ctx)
    ruleset = None
    path = rules or s.rules_path
    if path:
        from sitewatch.rules import load_rules

        ruleset = load_rules(path)
    else:
        from sitewatch.rules import RuleSet

        ruleset = RuleSet.default()
    return Ledger(backlog or Backlog(s.backlog_url), rules=ruleset)


def _actor(ledger, name: str):
    from backlog import orgs

    try:
        return orgs.actor_by_name(ledger.backlog, name)
    except BacklogError as e:
        raise click.ClickException(str(e)) from None


def _line(c: dict) -> str:
    n = sum(1 for a in c.get("approvals", []) if a["decision"] == "approve") if "approvals" in c else None
    appr = f" approvals {n}/{c['approvals_needed']}" if n is not None else f" needs {c['approvals_needed']}"
    return (f"{c['id']} {c['state']:<9} {c['site']}/{c['gateway']}/{c['device']} {c['action']}"
            f"{' (dangerous)' if c['dangerous'] else ''}{appr} by {c['requested_by']}"
            + (f" ticket #{c['ticket_id']}" if c["ticket_id"] else "")
            + (f" ack {c['ack_status']} {c['ack_reason'] or ''}" if c["ack_status"] else ""))


@click.group()
def command():
    """Commands to site devices: request, approve (two-person rule for dangerous ones), list, serve."""


@command.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="folder for command.pem (0600, the service's secret) and command.pub.pem (for the gateways)")
@click.option("--overwrite", is_flag=True, help="replace an existing key (gateways then need the new public key)")
def keygen(out, overwrite):
    """Make the command-signing key pair. Keep command.pem on the command service's host only."""
    from sitewatch import commands as wire

    out.mkdir(parents=True, exist_ok=True)
    priv, pub = out / "command.pem", out / "command.pub.pem"
    if priv.exists() and not overwrite:
        raise click.ClickException(f"{priv} exists (use --overwrite to rotate)")
    key = wire.generate_key()
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(wire.private_pem(key))
    pub.write_bytes(wire.public_pem(key))
    click.echo(f"{priv} (keep secret)\n{pub} (key id {wire.key_id(key.public_key())})")


@command.command()
@click.option("--as", "user", required=True, help="the requesting user")
@click.option("--site", required=True)
@click.option("--device", required=True)
@click.option("--action", required=True, help="cut_power, restore_power, lock_lifting, unlock_lifting, siren, …")
@click.option("--gateway", help="the gateway the device stands behind (default: rules / device health / policy)")
@click.option("--args", "args_json", default="{}", help="JSON object of arguments")
@click.option("--ticket", "ticket_id", type=int, help="the hazard ticket this acts on")
@click.option("--note", default="")
@click.pass_context
def request(ctx, user, site, device, action, gateway, args_json, ticket_id, note):
    """Request a command (printed with its id; dangerous ones then need a second approver)."""
    ledger = _ledger(ctx)
    try:
        c = ledger.request(_actor(ledger, user), site=site, device=device, action=action, gateway=gateway,
                           args=json.loads(args_json), ticket_id=ticket_id, note=note)
    except BacklogError as e:
        raise click.ClickException(str(e)) from None
    click.echo(_line(c))


@command.command()
@click.argument("command_id")
@click.option("--as", "user", required=True, help="the approving user (not the one who approved already)")
@click.option("--note", default="")
@click.option("--reject", is_flag=True, help="decline instead: the command is never sent")
@click.pass_context
def approve(ctx, command_id, user, note, reject):
    """Approve (or --reject) a requested or proposed command."""
    ledger = _ledger(ctx)
    actor = _actor(ledger, user)
    try:
        c = ledger.decline(command_id, actor, note) if reject else ledger.approve(command_id, actor, note)
    except BacklogError as e:
        raise click.ClickException(str(e)) from None
    click.echo(_line(c))


@command.command("list")
@click.option("--site")
@click.option("--state")
@click.option("--events", is_flag=True, help="each command's steps")
@click.pass_context
def list_(ctx, site, state, events):
    """Commands, newest first."""
    ledger = _ledger(ctx)
    for c in ledger.list(site=site, state=state):
        full = ledger.get(c["id"])
        click.echo(_line(full))
        if events:
            for e in full["events"]:
                click.echo(f"    {e['at_ms']} {e['action']:<14} {e['from_state']}->{e['to_state']} by {e['actor']} "
                           f"{json.dumps(e['detail'], ensure_ascii=False)}")


@command.command()
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the Ed25519 signing key (default $SW_COMMAND_KEY_FILE or $SW_COMMAND_KEY)")
@click.option("--rules", type=click.Path(exists=True, path_type=Path), help="rules directory (proposal rules)")
@click.option("--mqtt-username", default=None, help="default $SW_COMMAND_MQTT_USERNAME or sitewatch-command")
@click.option("--mqtt-ca", type=click.Path(exists=True, dir_okay=False), help="CA file: connect over TLS")
@click.option("--tick", type=float, default=0.5, show_default=True, help="seconds between rounds")
@click.pass_context
def serve(ctx, key_file, rules, mqtt_username, mqtt_ca, tick):
    """Run the command service: proposals, signing, publishing, acks, retries, escalation, expiry."""
    from commands.service import CommandService, load_key
    from ingest.device import connect

    s = _settings(ctx)
    ledger = _ledger(ctx, rules)
    key = load_key(key_file)
    user = mqtt_username or os.environ.get("SW_COMMAND_MQTT_USERNAME") or "sitewatch-command"
    password = os.environ.get("SW_COMMAND_MQTT_PASSWORD") or s.mqtt_password
    pw_file = os.environ.get("SW_COMMAND_MQTT_PASSWORD_FILE")
    if pw_file:
        password = Path(pw_file).read_text().strip()
    client = connect(s.mqtt_host, s.mqtt_port, f"sitewatch-command-{os.getpid()}", user if password else None,
                     password, mqtt_ca or os.environ.get("SW_COMMAND_MQTT_CA"))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    logging.getLogger("sitewatch.commands").setLevel(logging.INFO)
    click.echo(f"command service on MQTT {s.mqtt_host}:{s.mqtt_port} as {user if password else 'anonymous'}")
    try:
        CommandService(ledger, key, client, tick_s=tick).run(stop)
    finally:
        client.loop_stop()
        client.disconnect()


# ------------------------------------------------------------------------------------------------ api
def mount_api(ctx: click.Context, app, backlog):
    """``/commands`` on the backlog API that ``sitewatch api serve`` builds (app/cli.py registers it)."""
    from commands.api import mount

    return mount(app, _ledger(ctx, backlog=backlog))
