"""``sitewatch bench all``: every benchmark in one run, and the README's benchmark table rewritten from it.

Each figure stands beside the ceiling or baseline measured in the same run on the same machine, and the machine
is described above the table, so a reader can tell a slow machine from a slow change. The table sits between
two markers in README.md; everything else in the README is left alone.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import click

BEGIN, END = "<!-- bench:begin (sitewatch bench all writes this table) -->", "<!-- bench:end -->"


@dataclass
class Row:
    what: str
    result: str
    baseline: str


def machine() -> str:
    """CPU model, cores, memory, OS and Python: what the figures below were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.1f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    load = ""
    try:
        load = f"; load average at the start {os.getloadavg()[0]:.1f}"
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}, "
            f"Python {sys.version.split()[0]}{load}")


def n(x: float, unit: str = "") -> str:
    """Readings per second and the like, rounded to what a noisy 2-core machine can tell apart."""
    if x >= 100_000:
        s = f"{round(x, -3):,.0f}"
    elif x >= 1_000:
        s = f"{round(x, -2):,.0f}"
    else:
        s = f"{x:,.1f}" if x < 10 else f"{x:,.0f}"
    return f"{s} {unit}".strip()


def table(rows: list[Row], header: str) -> str:
    out = [header, "", "| what | result | baseline or ceiling (same run) |", "|---|---|---|"]
    out += [f"| {r.what} | {r.result} | {r.baseline} |" for r in rows]
    return "\n".join(out)


def rewrite_readme(readme: Path, block: str) -> None:
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise click.ClickException(f"{readme}: markers {BEGIN!r} … {END!r} not found; add them where the table goes")
    readme.write_text(pattern.sub(lambda _: f"{BEGIN}\n{block}\n{END}", text), encoding="utf-8")


def run_all(steps: list[tuple[str, Callable[[], list[Row]]]], echo=click.echo) -> list[Row]:
    """Run each step, keep going when one fails (its row says so), and report progress with elapsed time."""
    rows: list[Row] = []
    t0 = time.monotonic()
    for i, (name, step) in enumerate(steps, 1):
        echo(click.style(f"\n[{i}/{len(steps)}] {name}  (+{time.monotonic() - t0:.0f} s)", bold=True))
        try:
            rows += step()
        except Exception as e:  # noqa: BLE001 - one broken benchmark must not lose the others' figures
            echo(click.style(f"  {name} failed: {e}", fg="red"))
            rows.append(Row(name, f"failed: {str(e).splitlines()[0][:80]}", "—"))
    echo(f"\nall benchmarks done in {time.monotonic() - t0:.0f} s")
    return rows


def _pct(p: dict, name: str) -> str:
    if f"{name}_p50_ms" not in p:
        return "no alarm arrived"
    return (f"p50 {n(p[f'{name}_p50_ms'])} / p95 {n(p[f'{name}_p95_ms'])} / p99 {n(p[f'{name}_p99_ms'])} / "
            f"max {n(p[f'{name}_max_ms'])} ms")


def steps(quick: bool) -> list[tuple[str, Callable[[], list[Row]]]]:
    """The benchmarks and how each becomes table rows. ``quick``: smaller inputs (a smoke run, not for the README)."""
    from app.bench.chain import bench_chain_worker
    from app.bench.command import bench_command
    from app.bench.detect import bench_deadman, bench_detect
    from app.bench.latency import bench_latency
    from app.bench.scale import bench_scale
    from app.bench.worker import bench_worker

    k = 10 if quick else 1

    def detect() -> list[Row]:
        r = bench_detect(100_000 // k, [2_000, 10_000], 5 if quick else 7, memory_devices=100_000 // k)
        data = (("random arrival: ~80 % of devices open an outage per batch", "sizes"),
                ("a healthy fleet: periodic frames with jitter", "periodic"))
        rows = [Row(f"detect engine, {what}, batches of {100_000 // k:,} readings, {d:,} devices, one core",
                    f"{n(s['engine_rps'])} readings/s ({n(s['engine_cpu_rps'])} per CPU-second)",
                    f"scalar reference detector {n(s['reference_rps'])} readings/s, same findings "
                    f"({'yes' if s['same_findings'] else 'NO'}) → ×{s['ratio']:.1f} (×{s['ratio_cpu']:.1f} by CPU); "
                    f"goals ×10 and 1M readings/s")
                for what, key in data for d, s in r[key].items()]
        m = r.get("memory")
        if m:
            rows.append(Row(f"detector state per device ({m['devices']:,} devices)",
                            f"{n(m['state_json_bytes'])} B of JSON (Faust table)",
                            f"{n(m['state_heap_bytes'])} B of worker heap; goal ≤ 1,024 B (the stage's deadline "
                            f"index and checkpoint clock: {n(m['bookkeeping_heap_bytes'])} B more)"))
        return rows

    def deadman() -> list[Row]:
        r = bench_deadman(100_000 // k, 100, 5)
        return [Row(f"deadman tick, {100_000 // k:,} devices, 100 falling silent", f"{r['index_ms']:.2f} ms (deadline index)",
                    f"{r['walk_ms']:.0f} ms walking every device's state")]

    def worker() -> list[Row]:
        # three interleaved repeats (take, worker, take, …): one run's ratio moves by ±10 points on a shared machine
        r = bench_worker(1_000_000 // k, 200_000 // k, repeat=1 if quick else 3, fleet_readings=300_000 // k)
        rows = []
        for key, what in (("gateway", "gateway frames of 200 readings, 1,000 devices"),
                          ("single", "one reading per MQTT message, 1,000 devices"),
                          ("fleet", f"gateway frames, {r.get('fleet_devices', 0):,} devices (one run; 12 readings "
                                    "per device, so each device's state round costs a write per 12 readings)")):
            if f"{key}_worker_rps" in r:
                each = r[f"{key}_worker_vs_take_each"]
                med = f"median of {len(each)}: " + ", ".join(f"{x:.0%}" for x in each) + "; " if len(each) > 1 else ""
                rows.append(Row(f"one worker draining sw.raw, {what}",
                                f"{n(r[f'{key}_worker_rps'])} readings/s ({r[f'{key}_worker_cpu_us_per_reading']:.1f} "
                                f"CPU-µs/reading = {n(1e6 / r[f'{key}_worker_cpu_us_per_reading'])} per CPU-second)",
                                f"bare Faust take() {n(r[f'{key}_faust_take_rps'])} readings/s "
                                f"({r[f'{key}_worker_vs_take']:.0%} of it by wall time "
                                f"({med}goal {'≥ 80 %' if key == 'single' else '≥ 100k readings/s'}), "
                                f"{r[f'{key}_worker_vs_take_cpu']:.0%} by CPU); kafka-python "
                                f"{n(r[f'{key}_kafka_python_rps'])}"))
        return rows

    def latency() -> list[Row]:
        r = bench_latency(10_000 // k, alarms=200 // k, baseline_alarms=50 // k)
        load = r.get("load", {})
        idle = r.get("idle", {})
        return [Row(f"MQTT publish → ticket under {n(r.get('load_achieved_rps', 0))} readings/s "
                    f"({load.get('tickets', 0)}/{load.get('alarms', 0)} alarms)", _pct(load, "ticket"),
                    f"idle: {_pct(idle, 'ticket')}"),
                Row(f"MQTT publish → webhook under {n(r.get('load_achieved_rps', 0))} readings/s "
                    f"({load.get('webhooks', 0)}/{load.get('alarms', 0)} alarms)", _pct(load, "webhook"),
                    f"idle: {_pct(idle, 'webhook')}; goal p99 < 1 s: "
                    f"{'met' if r.get('goal_p99_under_1s_met') else 'NOT met'}")]

    def scale() -> list[Row]:
        r = bench_scale(2_000_000 // k, (1, 2, 3))
        base = r["rounds"][1]
        return [Row(f"{w} worker(s) in one group, {r['partitions']} partitions, {r['cores']} cores",
                    f"{n(x['rps'])} readings/s, {x['cores_used']:.2f} cores busy",
                    "baseline of this row set" if w == 1 else
                    f"×{x['speedup']:.2f} of 1 worker ({n(base['rps'])}); work per CPU-second "
                    f"{x['per_core_vs_base']:.0%} of 1 worker's")
                for w, x in r["rounds"].items()]

    def chain() -> list[Row]:
        # 1M readings and 3 pairs (the standalone default): with 500k and 2 the runs were ~3 s, a few 1 s record
        # windows each, and the off runs alone spread up to 12 % — the A/B could not resolve a 5 % goal
        r = bench_chain_worker(1_000_000 // k, pairs=3)
        share = r.get("record_share_pct")
        shares = ", ".join(f"{x:.1f}" for x in r.get("record_shares_pct") or [])
        verdict = {True: "met", False: "NOT met", None: "not sampled"}[r.get("goal_met_share")]
        ab = ("inside the noise" if not r.get("ab_resolved") else "resolved")
        return [Row(f"tamper-evident record, the real worker on {r['readings']:,} readings of {r['sites']} sites "
                    f"(record on/off interleaved, {r['pairs']} pairs)",
                    (f"{share:.1f} % of the worker's CPU samples (py-spy, median of {shares} %)" if share is not None
                     else "not sampled") + f"; goal ≤ {r['goal_pct']:.0f} %: {verdict}",
                    f"record off, same data, same run: {r['cost_cpu_pct']:+.1f} % CPU per reading (median on "
                    f"{r['on_cpu_us_per_reading']:.2f} vs off {r['off_cpu_us_per_reading']:.2f} µs; {ab}: the off "
                    f"runs alone spread {r['noise_pct']:.0f} %)")]

    def command() -> list[Row]:
        r = bench_command(50 // k if not quick else 10)
        dev, led, rtt = r["to_device"], r["to_ledger"], r["mqtt_rtt"]
        return [Row(f"command request → device done / → ledger done ({r['commands']} dangerous commands, service "
                    f"tick {r['tick_s'] or 0.5} s)",
                    f"p50 {dev['p50_ms']:.0f} / {led['p50_ms']:.0f} ms, max {dev['max_ms']:.0f} / "
                    f"{led['max_ms']:.0f} ms",
                    f"MQTT QoS 1 round trip p50 {rtt['p50_ms']:.1f} ms; goal ≤ 2 s: "
                    + ("met" if r["within_2s"] else "NOT met"))]

    return [("detect", detect), ("deadman", deadman), ("worker", worker), ("latency under load", latency),
            ("scale-out", scale), ("tamper-evident record", chain), ("commands", command)]


@click.command("all")
@click.option("--quick", is_flag=True, help="a tenth of the inputs: a smoke run (the README is not rewritten)")
@click.option("--readme", type=click.Path(dir_okay=False, path_type=Path), default=Path("README.md"),
              show_default=True, help="the README whose benchmark table is rewritten")
def all_cmd(quick: bool, readme: Path) -> None:
    """Every benchmark, then the README's benchmark table rewritten with the figures of this run (10–20 min)."""
    rows = run_all(steps(quick))
    header = f"Measured by `sitewatch bench all` on {time.strftime('%Y-%m-%d')}: {machine()}."
    block = table(rows, header)
    click.echo("\n" + block)
    if quick:
        click.echo("\n(--quick: README left as it is)")
        return
    rewrite_readme(readme, block)
    click.echo(f"\n{readme} updated")
