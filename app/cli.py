"""The ``sitewatch`` command: the one place that wires every room together.

Rooms are imported inside the commands, so ``sitewatch --help`` is instant and a command only pays for
what it uses.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import click

from sitewatch.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


# Commands that live with their room; imported only when invoked (fast --help, no cross-room imports here).
ROOM_COMMANDS: dict[str, str] = {
    "report": "backlog.cli:report",
    "api": "backlog.cli:api",
    "command": "commands.cli:command",
    "backlog": "backlog.cli:backlog",
    "alerts": "alerts.cli:alerts",
    "sink": "streams.sinks.cli:sink",
    "dashboards": "dashboards.cli:dashboards",
    "rules": "tuning.rules_cli:rules",
    "backtest": "tuning.backtest:backtest",
    "bench": "app.bench:bench",
    "verify": "blackbox.cli:verify",
    "evidence": "blackbox.cli:evidence",
}


def _commands_api(ctx: click.Context, app, backlog):
    """``/commands`` on ``sitewatch api serve``: the backlog room cannot import the commands room, the face can."""
    from commands.cli import mount_api

    return mount_api(ctx, app, backlog)


class LazyGroup(click.Group):
    """A click group whose room commands are imported on first use."""

    def _available(self) -> dict[str, str]:
        import importlib.util

        out = {}
        for name, target in ROOM_COMMANDS.items():
            module = target.split(":")[0]
            try:
                if importlib.util.find_spec(module) is not None:
                    out[name] = target
            except ModuleNotFoundError:
                continue
        return out

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self._available()))

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        target = self._available().get(name)
        if target is None:
            return None
        import importlib

        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum, _frame):
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--data-dir", type=click.Path(path_type=Path), help="local state (default .sitewatch or $SW_DATA_DIR)")
@click.option("--mqtt-port", type=int, help="MQTT broker port (default 1883 or $SW_MQTT_PORT)")
@click.option("--kafka", "kafka_bootstrap", help="Kafka bootstrap host:port (default 127.0.0.1:9092 or $SW_KAFKA_BOOTSTRAP)")
@click.option("--db", "db_url", help="backlog database URL (default SQLite in the data dir, or $SW_DB_URL)")
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
@click.pass_context
def main(ctx, data_dir, mqtt_port, kafka_bootstrap, db_url, verbose):
    """SiteWatch: construction-site safety monitoring on MQTT, Kafka and Faust.

    \b
    Quick start:   sitewatch demo           (whole pipeline, local brokers, simulator)
    Pieces:        sitewatch up | bridge | worker | simulate
    Inspect:       sitewatch tickets

    Every option can also be set in the environment as SW_<NAME> (see sitewatch/settings.py).
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT)
    for noisy in ("kafka", "aiokafka", "faust", "mode", "httpx"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
    overrides = {k: v for k, v in dict(data_dir=data_dir, mqtt_port=mqtt_port, kafka_bootstrap=kafka_bootstrap,
                                       db_url=db_url).items() if v is not None}
    ctx.obj = {"settings": Settings(**overrides), "api_extensions": [_commands_api]}


@main.command()
@click.option("--partitions", type=int, default=None, help="partitions per topic (default 4)")
@click.pass_context
def up(ctx, partitions):
    """Start the local MQTT broker and Kafka-compatible broker, create the topics, and the command service
    (signing key made in the data dir on first start); Ctrl-C stops them."""
    from app.localstack import LocalStack

    s = _settings(ctx)
    stack = LocalStack(s.data_dir, s.mqtt_port, int(s.kafka_bootstrap.rsplit(":", 1)[1]),
                       partitions or s.kafka_partitions, commands=True, db_url=s.backlog_url).start()
    click.echo(f"MQTT   mqtt://127.0.0.1:{s.mqtt_port}\nKafka  {stack.bootstrap}\nlogs   {s.log_dir}\n"
               f"commands: service running; gateways verify with {stack.command_public_key} "
               f"(sitewatch simulate --command-key …, docs/commands.md)\nCtrl-C to stop.")
    stop = threading.Event()
    _stop_on_signals(stop)
    try:
        while not stop.wait(1.0):
            for p in stack.procs:
                if not p.running:
                    raise click.ClickException(f"{p.name} exited unexpectedly:\n{p.tail()}")
    finally:
        # Kafka is in memory here: give a worker still consuming from it the chance to finish (bounded); a bridge
        # running against this stack should be stopped first (what `sitewatch demo` does itself).
        from app.localstack import drain

        click.echo("stopping: waiting (at most 30 s) for a running worker to drain Kafka")
        left = drain(stack.bootstrap, s.worker_id, timeout=30)
        if left:
            click.echo(f"{left} record(s) were still unconsumed: lost with the in-memory Kafka")
        stack.stop()
        click.echo("stack stopped")


@main.command()
@click.option("--instance", "--client-id", "instance", metavar="ID",
              help="MQTT client id of this instance, i.e. the broker session it resumes after a crash ($SW_BRIDGE_ID; "
                   "default: the first free sitewatch-bridge-<host>-<n>, reserved by a lock file in the data dir)")
@click.option("--group", metavar="NAME",
              help="share group: bridges in one group split the messages ($SW_BRIDGE_GROUP, default "
                   "sitewatch-bridges; '' subscribes plain sw/#, every bridge then gets everything)")
@click.option("--session-expiry", type=int, metavar="SECONDS",
              help="how long the broker keeps this instance's session and queues its share while it is down "
                   "($SW_BRIDGE_SESSION_EXPIRY_S, default 604800 = 7 days)")
@click.option("--drain", is_flag=True,
              help="retire an instance: resume its session without subscribing, write what it holds to Kafka, "
                   "then end the session and exit")
@click.pass_context
def bridge(ctx, instance, group, session_expiry, drain):
    """Run the MQTT → Kafka bridge: MQTT v5, QoS 1, shared subscription $share/<group>/sw/#, persistent session,
    PUBACK only after Kafka acknowledged the write.

    Run several (same group, different instances) to split one broker's load; see docs/bridge.md.
    """
    from ingest.bridge import Bridge, InstanceTaken, claim_instance

    s = _settings(ctx)
    try:
        client_id, _lock = claim_instance(s.data_dir, instance or s.bridge_id)
    except InstanceTaken as e:
        raise click.ClickException(str(e)) from None
    b = Bridge(s.mqtt_host, s.mqtt_port, s.kafka_bootstrap, client_id, s.mqtt_username, s.mqtt_password,
               kafka_options=s.kafka_options(), group=s.bridge_group if group is None else group,
               session_expiry_s=s.bridge_session_expiry_s if session_expiry is None else session_expiry, drain=drain,
               delivery_timeout_s=s.bridge_delivery_timeout_s)
    stop = threading.Event()
    _stop_on_signals(stop)
    b.run(stop)


@main.command()
@click.option("--rules", type=click.Path(exists=True, path_type=Path), help="rules directory (default built-in)")
@click.option("--webhook-url", help="deliver alerts to this webhook (or $SW_WEBHOOK_URL)")
@click.pass_context
def worker(ctx, rules, webhook_url):
    """Run the Faust stream worker: validate → detect → tickets → alerts."""
    import faust

    from app.worker import build_worker

    s = _settings(ctx)
    if rules:
        s.rules_path = rules
    if webhook_url:
        s.webhook_url = webhook_url
    pipe = build_worker(s)
    # override_logging=False keeps our log format and levels (library chatter at WARNING, see main()).
    w = faust.Worker(pipe.app, quiet=True, override_logging=False, redirect_stdouts=False)
    w.execute_from_commandline()


@main.command()
@click.option("--sites", default=2, show_default=True, help="number of sites")
@click.option("--devices", default=2, show_default=True, help="devices per family per site")
@click.option("--interval", default=1.0, show_default=True, help="seconds between readings of one sensor")
@click.option("--scenario", default="crane-overload", show_default=True,
              help="hazard/fault to inject, or a field scenario (pit-cadence, crane-nightly, gateway-outage, "
                   "buffered-flush, field-mix); --list shows them")
@click.option("--at", "at_s", default=30.0, show_default=True, help="seconds into the run when the scenario starts")
@click.option("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C / the end)")
@click.option("--mode", type=click.Choice(["gateway", "single"]), default="gateway", show_default=True,
              help="gateway: one frame per site per tick; single: one MQTT message per reading")
@click.option("--speed", type=float, default=None,
              help="field scenario: arrival times compressed by this factor (60: an hour in a minute); "
                   "live scenarios: ramps and holds compressed [default 1]")
@click.option("--fast", is_flag=True, help="field scenario: publish as fast as the broker takes it")
@click.option("--seed", default=7, show_default=True, help="random seed (field scenarios are byte-identical per seed)")
@click.option("--span", help="field scenario length in event time, e.g. 6h, 3d (default: the scenario's own)")
@click.option("--start", "start", help="field scenario start, RFC 3339 or epoch ms (default: so that every "
              "timestamp is already past when it is sent)")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="field scenario parameter, e.g. --param crane_interval_s=10 (repeatable)")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="field scenario: write the arrival events as a capture (JSON lines, for backtest --capture) and "
                   "the manifest next to it, instead of publishing")
@click.option("--command-key", envvar="SW_COMMAND_PUBLIC_KEY", type=click.Path(exists=True, dir_okay=False),
              help="the command service's public key: the simulated gateways then verify, act on and acknowledge "
                   "commands (sitewatch up makes one in <data dir>/keys/command.pub.pem) [$SW_COMMAND_PUBLIC_KEY]")
@click.option("--list", "list_scenarios", is_flag=True, help="list scenarios and exit")
@click.pass_context
def simulate(ctx, sites, devices, interval, scenario, at_s, duration, mode, speed, fast, seed, span, start, params,
             out_path, command_key, list_scenarios):
    """Publish simulated site sensor readings over MQTT, with a scenario injected on cue.

    \b
    Live scenarios run on the wall clock (readings stamped now). Field scenarios replay a realistic site in
    fast-forwarded event time with real arrival behaviour (cadence changes, nights off, gateway outages, late
    out-of-order flushes):
      sitewatch simulate --scenario buffered-flush --speed 600     # 10 h outage + flush in about 5 minutes
      sitewatch simulate --scenario field-mix --fast
      sitewatch simulate --scenario crane-nightly --param interval_s=10 --out crane.jsonl
    """
    from ingest.fieldstreams import describe as field_describe
    from ingest.fieldstreams import scenario_names as field_names
    from ingest.simulator import SimConfig, Simulator, describe_scenario, scenario_names

    if list_scenarios:
        click.echo("live (wall clock):")
        for name in scenario_names():
            click.echo(f"  {name:16} {describe_scenario(name, at_s)}")
        click.echo("field (event time fast-forwarded; --speed K | --fast, --span, --seed, --param):")
        for name in field_names():
            click.echo(f"  {name:16} {field_describe(name)}")
        return
    s = _settings(ctx)
    stop = threading.Event()
    _stop_on_signals(stop)
    if scenario in field_names():
        _simulate_field(s, scenario, speed, fast, seed, span, start, params, out_path, duration, stop)
        return
    if fast or out_path or span or start or params:
        raise click.UsageError("--fast, --out, --span, --start and --param go with field scenarios (see --list)")
    try:
        sim = Simulator(SimConfig(sites, devices, interval, scenario, at_s, mode, seed=seed, speed=speed or 1.0,
                                  command_key=command_key))
    except ValueError as e:
        raise click.BadParameter(f"{e} (or a field scenario: {', '.join(field_names())})",
                                 param_hint="--scenario") from None
    click.echo(f"simulating {sites} sites × {devices} devices/family, {len(sim.rows) / interval:.0f} readings/s; "
               f"scenario: {describe_scenario(scenario, at_s)}"
               + (f"; gateways take commands signed by {command_key}" if command_key else ""))
    sim.run(s.mqtt_host, s.mqtt_port, duration, stop, s.mqtt_username, s.mqtt_password)
    click.echo(f"sent {sim.sent_readings} readings in {sim.sent_messages} messages")


def _simulate_field(s: Settings, scenario, speed, fast, seed, span, start, params, out_path, duration, stop) -> None:
    """Generate a field scenario, then publish it (paced by arrival time, or --fast) or write it as a capture."""
    from ingest.fieldstreams import anchored_start, generate, publish_scenario
    from ingest.fieldstreams.scenarios import SCENARIOS
    from tuning.backtest import _parse_time, parse_params, parse_span

    if fast and speed:
        raise click.UsageError("--fast or --speed, not both")
    pace = None if (fast or out_path) else (speed or 1.0)
    span_ms = parse_span(span) or SCENARIOS[scenario].default_duration_ms
    start_ms = _parse_time(start, "--start") if start else anchored_start(span_ms, pace)
    try:
        fs = generate(scenario, start_ms=start_ms, duration_ms=span_ms, seed=seed, **parse_params(params))
    except TypeError as e:
        raise click.BadParameter(str(e), param_hint="--param") from None
    m = fs.manifest
    click.echo(f"{scenario}: {m.readings:,} readings → {len(fs):,} messages, event time "
               f"{_fmt_iso(m.start_ms)} .. {_fmt_iso(m.end_ms)} (seed {seed}); {len(m.hazards)} hazard(s), "
               f"{len(m.outages)} gateway outage(s), {len(m.silences)} genuine silence(s), "
               f"{m.late_readings:,} late readings, {m.duplicate_readings:,} duplicates")
    for h in m.hazards:
        click.echo(f"  truth: {h.kind} at {h.site}/{h.device} {_fmt_iso(h.start_ms)}, peak {h.peak_value:g} at "
                   f"{_fmt_iso(h.peak_ts)}" + (" — buffered, arrives late" if h.buffered else ""))
    if out_path:
        fs.write_capture(out_path)
        click.echo(f"wrote {len(fs):,} messages to {out_path} and the manifest to {out_path}.manifest.json")
        return
    wall = (fs.last_arrival_ms - fs.first_arrival_ms) / 1000 / pace if pace and len(fs) else None
    click.echo(f"publishing to mqtt://{s.mqtt_host}:{s.mqtt_port} "
               + (f"at speed {pace:g} (~{wall:,.0f} s)" if wall is not None else "as fast as possible"))
    events = fs.events
    if duration is not None and pace and len(fs):
        cut = fs.first_arrival_ms + duration * 1000 * pace
        events = [e for e in events if e.arrival_ms <= cut]
    t0 = time.monotonic()

    def progress(sent, total, arrival):
        click.echo(f"  [{time.monotonic() - t0:6.0f} s] {sent:,}/{total:,} messages ({100 * sent / max(total, 1):.0f} %),"
                   f" arrival clock {_fmt_iso(arrival)}")

    n = publish_scenario(s.mqtt_host, s.mqtt_port, events, pace, stop=stop, cues=m.cues,
                         on_cue=lambda text: click.echo(f"  ▶ {text}"), progress=progress,
                         username=s.mqtt_username, password=s.mqtt_password)
    click.echo(f"sent {n:,} of {len(events):,} messages in {time.monotonic() - t0:.1f} s")


def _fmt_iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms / 1000))


@main.command()
@click.option("--site", help="only this site")
@click.option("--events", is_flag=True, help="show each ticket's history")
@click.pass_context
def tickets(ctx, site, events):
    """List hazard and fault tickets in the backlog."""
    from backlog.store import Backlog

    b = Backlog(_settings(ctx).backlog_url)
    rows = b.tickets(site=site)
    if not rows:
        click.echo("no tickets")
    for t in rows:
        click.echo(_ticket_line(t))
        if events:
            for e in b.events(t.id):
                click.echo(f"      {_fmt_ms(e.at_ms)} {e.actor:9} {e.action:18} {e.from_level} → {e.to_level}")


LEVEL_COLOURS = {0: "green", 1: "yellow", 2: "bright_red", 3: "red"}
LEVEL_NAMES = {0: "CLEAR", 1: "YELLOW", 2: "ORANGE", 3: "RED"}


def _fmt_ms(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000))


def _ticket_line(t) -> str:
    level = click.style(f"{LEVEL_NAMES.get(t.peak_level, t.peak_level):6}", fg=LEVEL_COLOURS.get(t.peak_level), bold=True)
    major = click.style(" MAJOR/stop-work", fg="red", bold=True) if t.major else ""
    late = click.style(" LATE (back-dated)", fg="yellow") if getattr(t, "late", False) else ""
    return (f"#{t.id:<4} {level} {t.category:6} {t.site}/{t.device} {t.kind:24} peak {t.metric}={t.peak_value:.2f} "
            f"(threshold {t.threshold:.2f}) ×{t.count} {t.status}{major}{late}")


@main.command()
@click.option("--scenario", default="crane-overload", show_default=True, help="hazard to inject (see simulate --list)")
@click.option("--at", "at_s", default=20.0, show_default=True, help="seconds after start when the scenario begins")
@click.option("--sites", default=3, show_default=True)
@click.option("--devices", default=2, show_default=True, help="devices per family per site")
@click.option("--interval", default=1.0, show_default=True, help="seconds between readings of one sensor")
@click.option("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
@click.option("--webhook-url", help="send alerts here instead of the built-in local receiver")
@click.option("--influx-port", type=int, default=8086, show_default=True,
              help="port of the demo's InfluxDB (readings for Grafana); 0 = run without it")
@click.pass_context
def demo(ctx, scenario, at_s, sites, devices, interval, duration, webhook_url, influx_port):
    """Run everything locally: brokers, bridge, worker, simulator, webhook receiver — and show it live."""
    from app.demo import Demo

    s = _settings(ctx)
    demo_dir = s.data_dir / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)  # the demo's brokers are in memory: start its backlog fresh too
    s.data_dir = demo_dir
    d = Demo(s, scenario=scenario, at_s=at_s, sites=sites, devices=devices, interval=interval,
             webhook_url=webhook_url, influx_port=influx_port or None, echo=click.echo, ticket_line=_ticket_line)
    stop = threading.Event()
    _stop_on_signals(stop)
    try:
        d.run(stop, duration)
    except Exception as e:  # a service that fails to start: say which and where its log is
        raise click.ClickException(str(e)) from None
    sys.exit(0)


_PASSWD_OPT = click.option("--passwd-file", type=click.Path(dir_okay=False, path_type=Path),
                           default="/etc/mosquitto/sitewatch.passwd", show_default=True,
                           envvar="SW_MQTT_PASSWD_FILE", help="mosquitto password file ($SW_MQTT_PASSWD_FILE)")
_ACL_OPT = click.option("--acl-file", type=click.Path(dir_okay=False, path_type=Path),
                        default="/etc/mosquitto/sitewatch.acl", show_default=True,
                        envvar="SW_MQTT_ACL_FILE", help="mosquitto ACL file ($SW_MQTT_ACL_FILE)")
_SECRET_OUT = click.option("--password-out", type=click.Path(dir_okay=False, path_type=Path),
                           help="write the password to this new file (mode 0600) instead of printing it")


def _hand_over_password(who: str, password: str, out: Path | None) -> None:
    """The only time the password exists in clear: printed once, or put in a file only its owner can read."""
    import os

    if out is not None:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        click.echo(f"password of {who} written to {out} (mode 0600)")
    else:
        click.echo(f"username: {who}\npassword: {password}\n(shown once: put it into the gateway's config now)")


def _provisioning(fn):
    """ProvisionError -> a one-line refusal, not a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ingest.provision import ProvisionError

        try:
            return fn(*args, **kwargs)
        except (ProvisionError, FileExistsError, PermissionError) as e:
            raise click.ClickException(str(e)) from None

    return wrapper


@main.group()
def gateway():
    """Gateway accounts of the production MQTT broker (password file + per-gateway ACL), see deploy/README.md.

    Edits the files only; reload mosquitto afterwards (systemctl reload mosquitto).
    """


@gateway.command("add")
@click.option("--site", required=True, help="site id (contract id rules)")
@click.option("--gateway", "gateway_id", required=True, help="gateway id, unique within the site")
@_PASSWD_OPT
@_ACL_OPT
@_SECRET_OUT
@_provisioning
def gateway_add(site, gateway_id, passwd_file, acl_file, password_out):
    """Create a gateway account: random password, password-file hash, ACL block for its own site."""
    from ingest.provision import RELOAD_HINT, add_gateway

    if password_out is not None and password_out.exists():
        raise click.ClickException(f"{password_out} exists: refusing to overwrite a secret")
    gw, password = add_gateway(site, gateway_id, passwd_file, acl_file)
    _hand_over_password(gw.username, password, password_out)
    click.echo(RELOAD_HINT)


@gateway.command("rotate")
@click.option("--site", required=True)
@click.option("--gateway", "gateway_id", required=True)
@_PASSWD_OPT
@_ACL_OPT
@_SECRET_OUT
@_provisioning
def gateway_rotate(site, gateway_id, passwd_file, acl_file, password_out):
    """New password for a gateway (the old one stops working at the reload)."""
    from ingest.provision import RELOAD_HINT, Gateway, rotate_password

    user = Gateway(site, gateway_id).username
    if password_out is not None and password_out.exists():
        raise click.ClickException(f"{password_out} exists: refusing to overwrite a secret")
    _hand_over_password(user, rotate_password(user, passwd_file, acl_file), password_out)
    click.echo(RELOAD_HINT)


@gateway.command("remove")
@click.option("--site", required=True)
@click.option("--gateway", "gateway_id", required=True)
@_PASSWD_OPT
@_ACL_OPT
@_provisioning
def gateway_remove(site, gateway_id, passwd_file, acl_file):
    """Revoke a gateway: password and ACL block removed; the reload disconnects it."""
    from ingest.provision import RELOAD_HINT, remove_gateway

    click.echo(f"removed {remove_gateway(site, gateway_id, passwd_file, acl_file).username}")
    click.echo(RELOAD_HINT)


@gateway.command("list")
@_PASSWD_OPT
@_ACL_OPT
@_provisioning
def gateway_list(passwd_file, acl_file):
    """Site, gateway and username of every gateway account."""
    from ingest.provision import has_password, list_gateways

    for gw in list_gateways(acl_file):
        missing = "" if has_password(gw.username, passwd_file) else "  (no password: cannot log in)"
        click.echo(f"{gw.site}\t{gw.gateway}\t{gw.username}{missing}")


@gateway.command("sync")
@_PASSWD_OPT
@_ACL_OPT
@_provisioning
def gateway_sync(passwd_file, acl_file):
    """Re-write every gateway's ACL block from this release's topic contract (after an upgrade)."""
    from ingest.provision import RELOAD_HINT, sync_acl

    click.echo(f"{len(sync_acl(passwd_file, acl_file))} gateway blocks written")
    click.echo(RELOAD_HINT)


@gateway.command("service-password")
@click.argument("user", type=click.Choice(["sitewatch-bridge", "sitewatch-command"]))
@_PASSWD_OPT
@_ACL_OPT
@_SECRET_OUT
@_provisioning
def gateway_service_password(user, passwd_file, acl_file, password_out):
    """Set (or rotate) the password of a service account declared in the ACL: the bridge or the command service."""
    from ingest.provision import RELOAD_HINT, rotate_password

    if password_out is not None and password_out.exists():
        raise click.ClickException(f"{password_out} exists: refusing to overwrite a secret")
    _hand_over_password(user, rotate_password(user, passwd_file, acl_file, create=True), password_out)
    click.echo(RELOAD_HINT)


if __name__ == "__main__":  # pragma: no cover
    main()
