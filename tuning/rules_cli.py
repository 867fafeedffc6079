"""``sitewatch rules``: validate, list, explain and publish the detector rules.

Why a command and not just the YAML: a safety officer asking "why did crane TC-01 go yellow at 7.2 t?" needs the
effective line, where it came from (the standard's default, the site's scheme, the crane's own rating) and how it
clears — without reading three files and merging them in their head. ``explain`` answers exactly that, from the
same ``build_plan`` the engine uses, so the answer cannot drift from what the detectors do.

``publish`` is the one I/O edge here (kafka-python, imported inside the command): the design keeps detectors free
of Kafka, and this module is a command-line edge that the ``sitewatch`` CLI imports lazily.
"""

from __future__ import annotations

import getpass
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import click

from detectors.plan import explain as plan_explain
from sitewatch.contracts import FAMILIES, TOPIC_CONFIG
from sitewatch.rules import RuleSet, RulesError, bundle_text, load_rules

LEVELS = ("yellow", "orange", "red")
_NO_DEVICE = "\x00no-device"  # a device name no site file can contain: resolves to the site's family rules
_NO_SITE = "\x00no-site"


# ------------------------------------------------------------------------------------------------ helpers
def _settings(ctx: click.Context):
    obj = ctx.find_root().obj
    if isinstance(obj, dict) and obj.get("settings") is not None:
        return obj["settings"]
    from sitewatch.settings import Settings

    return Settings()


def rules_dir(ctx: click.Context, given: Path | None) -> Path:
    """The directory the workers would load: the argument, else $SW_RULES_PATH, else ./config/rules."""
    if given is not None:
        return Path(given)
    s = _settings(ctx)
    return Path(s.rules_path) if s.rules_path else Path("config/rules")


def _load_or_exit(path: Path) -> RuleSet:
    """Every problem, one ``file:line: field: message`` per line, then exit 1: fix them all in one go."""
    try:
        return load_rules(path)
    except RulesError as e:
        click.echo(f"{path}: {len(e.problems)} problem(s)", err=True)
        for line in str(e).splitlines():
            click.echo(line, err=True)
        raise SystemExit(1) from None


def _g(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6g}"


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [fmt(cells[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells[1:]]


# ------------------------------------------------------------------------------------------------ provenance
def _checks_by_id(items: list[dict]) -> dict[tuple[str, str], dict]:
    return {(c["kind"], c["metric"]): c for c in items if c["kind"] not in ("sensor", "fault.silent")}


def explain_with_sources(rules: RuleSet, site: str, device: str, family: str) -> list[dict]:
    """``detectors.plan.explain`` plus, for every value, whether it is the default, the site's or the device's.

    Provenance is found by resolving the same check three times — defaults only, the site's family rules, the
    device's own — and naming the innermost layer that changed the value. That also catches values derived
    from an override (a crane's rated load moves all three load lines).
    """
    site_file = rules.sites[site].file if site in rules.sites else None
    layers = {
        "default": _checks_by_id(plan_explain(RuleSet(defaults=rules.defaults), _NO_SITE, _NO_DEVICE, family)),
        "site": _checks_by_id(plan_explain(rules, site, _NO_DEVICE, family)),
    }
    labels = {"default": f"default ({rules.origin}/defaults.yaml)" if rules.origin != "built-in defaults"
              else "default (built-in)",
              "site": f"site file ({site_file} family_overrides.{family})",
              "device": f"device override ({site_file} devices.{device})"}
    out = []
    for c in plan_explain(rules, site, device, family):
        if c["kind"] in ("sensor", "fault.silent"):
            out.append(c)
            continue
        key = (c["kind"], c["metric"])
        src: dict[str, str] = {}
        fields = [("levels", lv) for lv in LEVELS] + [(f, None) for f in ("hold_count", "hold_s", "clear_ratio",
                                                                            "major_from", "window_s", "consecutive")]
        for name, sub in fields:
            if name not in c and sub is None:
                continue
            val = _field(c, name, sub)
            if val is None and sub is not None:
                continue
            if val != _field(layers["site"].get(key), name, sub):
                where = "device"
            elif val != _field(layers["default"].get(key), name, sub):
                where = "site"
            else:
                where = "default"
            src[sub or name] = labels[where]
        out.append({**c, "clear_lines": {lv: c["clear_ratio"] * x for lv, x in c["levels"].items()},
                    "value_sources": src})
    return out


def _layer_rank(label: str) -> int:
    """Device beats site beats default: the innermost layer is the one to edit."""
    return 2 if label.startswith("device") else 1 if label.startswith("site") else 0


def _field(c: dict | None, name: str, sub: str | None):
    if c is None:
        return None
    v = c.get(name)
    return v.get(sub) if sub is not None and isinstance(v, dict) else v


# ------------------------------------------------------------------------------------------------ commands
@click.group()
def rules():
    """Validate, list, explain and publish the detector rules (defaults.yaml + sites/*.yaml).

    \b
    The rules directory is the argument or --rules, else $SW_RULES_PATH, else ./config/rules.
    Tune a rule on history first:  sitewatch backtest --csv day.csv --rules <candidate dir>
    """


@rules.command()
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.pass_context
def validate(ctx, directory):
    """Check a rules directory; print every problem as file:line: field: message (exit 1), or a summary."""
    path = rules_dir(ctx, directory)
    rs = _load_or_exit(path)
    devices = rs.configured_devices()
    fams = sorted({f"{s.site}:{f}" for s in rs.sites.values() for f in s.families})
    click.echo(f"OK {path}: {len(rs.sites)} site(s) {', '.join(sorted(rs.sites)) or '-'}; "
               f"{len(devices)} device(s) overridden; {len(fams)} family override(s); "
               f"fingerprint {rs.fingerprint}")
    for site, dev, fam in devices:
        click.echo(f"  {site}/{dev} ({fam})")
    for f in fams:
        click.echo(f"  {f.replace(':', ' family_overrides.')}")


@rules.command("list")
@click.option("--rules", "directory", type=click.Path(path_type=Path), help="rules directory")
@click.option("--site", help="effective rules for this site (its family overrides applied) and its devices")
@click.option("--family", type=click.Choice(sorted(FAMILIES)), help="only this family")
@click.pass_context
def list_(ctx, directory, site, family):
    """Effective rules per family, and what each site and device overrides."""
    rs = _load_or_exit(rules_dir(ctx, directory))
    if site is not None and site not in rs.sites:
        click.echo(f"(site {site!r} has no site file: the defaults apply)")
    fams = [family] if family else list(FAMILIES)
    where = site if site is not None else _NO_SITE
    for fam in fams:
        checks = [c for c in plan_explain(rs, where, _NO_DEVICE, fam) if "levels" in c]
        title = f"{fam}" + (f" @ {site}" if site else " (defaults)")
        click.echo(f"\n{title} — {rs.family(where, fam).source}")
        click.echo("\n".join(_table(["check", "metric", "yellow", "orange", "red", "unit", "hold", "clear", "major"],
                                    [_check_row(c) for c in checks])))
    sites = [rs.sites[site]] if site in rs.sites else ([] if site else list(rs.sites.values()))
    for s in sites:
        _echo_site_overrides(rs, s, fams)


def _check_row(c: dict) -> list:
    lv = c["levels"]
    hold = f"{c['hold_count']}x/{c['hold_s']:g}s"
    if c["mode"] == "rate":
        hold += f" win {c['window_s']:g}s x{c['consecutive']}"
    return [c["kind"], c["metric"], _g(lv.get("yellow")), _g(lv.get("orange")), _g(lv.get("red")), c["unit"],
            hold, f"{c['clear_ratio']:g}", c["major_from"] or "none"]


def _echo_site_overrides(rs: RuleSet, s, fams: list[str]) -> None:
    """Only what differs from the layer below: the defaults for a family override, the site for a device."""
    click.echo(f"\nsite {s.site} ({s.file}){' — ' + s.source if s.source else ''}")
    for fam in fams:
        if fam in s.families:
            for line in _changed(plan_explain(RuleSet(defaults=rs.defaults), _NO_SITE, _NO_DEVICE, fam),
                                 plan_explain(rs, s.site, _NO_DEVICE, fam)):
                click.echo(f"  family_overrides.{fam}: {line}")
    for dev, (fam, _) in sorted(s.devices.items()):
        if fam not in fams:
            continue
        lines = _changed(plan_explain(rs, s.site, _NO_DEVICE, fam), plan_explain(rs, s.site, dev, fam))
        click.echo(f"  device {dev} ({fam}): " + ("; ".join(lines) if lines else "no effective change"))


def _changed(before: list[dict], after: list[dict]) -> list[str]:
    b = _checks_by_id(before)
    out = []
    for key, c in _checks_by_id(after).items():
        old = b.get(key)
        if old is None:
            out.append(f"{key[0]} {key[1]} switched on")
            continue
        if old["levels"] != c["levels"]:
            was = "/".join(_g(old["levels"].get(lv)) for lv in LEVELS)
            now = "/".join(_g(c["levels"].get(lv)) for lv in LEVELS)
            out.append(f"{key[0]} {key[1]} {now} {c['unit']} (was {was})")
        for f in ("hold_count", "hold_s", "clear_ratio", "major_from", "window_s", "consecutive"):
            if old.get(f) != c.get(f):
                out.append(f"{key[0]} {key[1]} {f} {c.get(f)} (was {old.get(f)})")
    out += [f"{k[0]} {k[1]} switched off" for k in b if k not in _checks_by_id(after)]
    return out


@rules.command("explain")
@click.option("--rules", "directory", type=click.Path(path_type=Path), help="rules directory")
@click.option("--site", required=True, help="site id, e.g. cz-0412")
@click.option("--device", required=True, help="device id, e.g. tc-01")
@click.option("--family", type=click.Choice(sorted(FAMILIES)),
              help="sensor family (default: the family the site file gives the device)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def explain_cmd(ctx, directory, site, device, family, as_json):
    """Every active check of one device: its lines, hold, clear line, major level — and where each came from."""
    rs = _load_or_exit(rules_dir(ctx, directory))
    if family is None:
        dev = rs.sites.get(site).devices.get(device) if site in rs.sites else None
        if dev is None:
            raise click.UsageError(f"{site}/{device} is not in a site file: give --family")
        family = dev[0]
    items = explain_with_sources(rs, site, device, family)
    dr = rs.device(site, device, family)
    if as_json:
        click.echo(json.dumps({"site": site, "device": device, "family": family, "fingerprint": rs.fingerprint,
                               "overridden_by": list(dr.overridden_by), "checks": items}, indent=1,
                              ensure_ascii=False))
        return
    click.echo(f"{site}/{device} ({family}) — rules {rs.origin}, fingerprint {rs.fingerprint}")
    click.echo("overridden by: " + (", ".join(dr.overridden_by) or "nothing (defaults)"))
    for c in items:
        if c["kind"] not in ("sensor", "fault.silent"):
            click.echo("")
        elif c["kind"] == "sensor" and c["metric"] == next(x["metric"] for x in items if x["kind"] == "sensor"):
            click.echo("\nsensor faults (reported as faults; a faulty reading never raises or clears a hazard)")
        click.echo("\n".join(_explain_block(c)))


def _explain_block(c: dict) -> list[str]:
    if c["kind"] == "fault.silent":
        out = [f"  silent: no reading for {c['after_s']:g} s until its cadence is learned"]
        if c.get("rule"):
            out.append(f"    {c['rule']}")
        if c.get("gateway"):
            out.append(f"    behind gateway {c['gateway']} (its offline fault inhibits this device's silence)")
        return out
    if c["kind"] == "sensor":
        rng = f"range [{c['range'][0]:g}, {c['range'][1]:g}]" if c["range"] else "no range"
        return [f"  {c['metric']}: {rng}, spike step {_g(c['spike_step'])}, "
                f"flatline after {_g(c['flatline_after_s'])} s"]
    src = c["value_sources"]
    head = f"{c['kind']}  {c['metric']}  ({c['mode']})  source: {c['source']}"
    rows = []
    rules_by_level = dict(zip([lv for lv in LEVELS if lv in c["levels"]], c["rules"]))
    for lv in LEVELS:
        if lv in c["levels"]:
            rows.append([lv, f"{_g(c['levels'][lv])} {c['unit']}", f"< {_g(c['clear_lines'][lv])} {c['unit']}",
                         rules_by_level.get(lv, ""), src.get(lv, "")])
    lines = [head] + ["  " + x for x in _table(["level", "line", "clears", "rule", "from"], rows)]
    hold_src = max((src.get("hold_count", ""), src.get("hold_s", "")), key=_layer_rank)
    knobs = [("hold", f"{c['hold_count']} reading(s) and {c['hold_s']:g} s", hold_src),
             ("clear ratio", f"{c['clear_ratio']:g} x the line", src.get("clear_ratio")),
             ("major hazard from", c["major_from"] or "never", src.get("major_from"))]
    if "window_s" in c:
        knobs.append(("rate window", f"{c['window_s']:g} s, {c['consecutive']} consecutive", src.get("window_s")))
    lines += [f"  {k}: {v}   [{s or ''}]" for k, v, s in knobs]
    return lines


@rules.command()
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option("--bootstrap", help="Kafka bootstrap servers (default: the settings' kafka_bootstrap)")
@click.option("--dry-run", is_flag=True, help="validate and print the record instead of sending it")
@click.pass_context
def publish(ctx, directory, bootstrap, dry_run):
    """Validate, then publish the rules to sw.config; running workers hot-reload them. Invalid rules are not sent."""
    path = rules_dir(ctx, directory)
    _load_or_exit(path)
    text = bundle_text(path)
    try:  # what the workers will parse is the bundle, not the directory: check that too
        rs = RuleSet.from_yaml_text(text, filename=f"{path} (bundle)")
    except RulesError as e:
        click.echo(f"{path}: the bundle does not parse back:", err=True)
        click.echo(str(e), err=True)
        raise SystemExit(1) from None
    record = config_record(rs, text)
    if dry_run:
        click.echo(json.dumps({**record, "text": f"<{len(text)} chars>"}, indent=1))
        return
    server = bootstrap or _settings(ctx).kafka_bootstrap
    meta = send_config(server, record, kafka_options=_settings(ctx).kafka_options())
    click.echo(f"published rules {path} fingerprint {rs.fingerprint} to {TOPIC_CONFIG} at {server} "
               f"(partition {meta.partition}, offset {meta.offset})")


def config_record(rs: RuleSet, text: str) -> dict[str, Any]:
    """The ``sw.config`` value: the whole bundle, so a worker that starts later needs only the last record."""
    return {"v": 1, "fingerprint": rs.fingerprint, "text": text, "published_ms": int(time.time() * 1000),
            "author": os.environ.get("USER") or _user()}


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in a container: still publish, but say who is unknown
        return "unknown"


def send_config(bootstrap: str, record: dict[str, Any], timeout_s: float = 30.0, kafka_options: dict | None = None):
    """One acknowledged write (acks=all) keyed ``rules``: the config topic is a single ordered log."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=3,
                                 request_timeout_ms=int(timeout_s * 1000), max_block_ms=int(timeout_s * 1000),
                                 **(kafka_options or {}))
    except KafkaError as e:
        raise click.ClickException(f"cannot reach Kafka at {bootstrap}: {e}") from None
    try:
        fut = producer.send(TOPIC_CONFIG, key=b"rules",
                            value=json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode())
        return fut.get(timeout=timeout_s)
    except KafkaError as e:
        raise click.ClickException(f"publishing to {TOPIC_CONFIG} at {bootstrap} failed: {e}") from None
    finally:
        producer.close(timeout=5)
