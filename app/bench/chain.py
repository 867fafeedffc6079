"""``bench chain``: what keeping the tamper-evident record costs the worker, beside the work it records.

Per reading batch the worker would (1) digest the batch per site (``blackbox.readings.ReadingLog``) and
(2) append one ``readings`` entry per site (``Recorder.record``: hashes, head locks, executemany). Both are
timed on the same synthetic batches the detector engine processes in the same run (``bench detect``'s
``synthetic_batch``, 100 devices per site), and reported as a share of the engine's time — the engine alone is
faster than a whole worker (decode, Kafka, state), so the share of worker throughput is at most this.

With a window (``SW_BLACKBOX_READINGS_EVERY_S``, default 1 s) both run once per window over the window's
readings; per batch the worker only keeps references to the columns. Both are printed, as measured totals
and as the timed components. The findings path too: findings applied by the backlog with and without the record.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from pathlib import Path

import click
import numpy as np

GOAL_PCT = 5.0


def _dict_encoded(batch):
    """The batch as the detect stage decodes ``sw.readings`` records: a device table and an index per reading."""
    index: dict[tuple, int] = {}
    d = np.fromiter((index.setdefault((s, dv, f), len(index)) for s, dv, f in
                     zip(batch.site.tolist(), batch.device.tolist(), batch.family.tolist())), np.int64, len(batch))
    return list(index), d


def _findings_cost(n: int, repeat: int, tmp: Path) -> tuple[float, float]:
    """Median seconds to apply ``n`` new findings, backlog without and with the record."""
    from backlog.store import Backlog
    from sitewatch.findings import Finding, Level

    def batch(k: int) -> list[Finding]:
        return [Finding(site=f"s-{i % 50:03d}", device=f"d-{k}-{i}", family="crane", kind="crane.load",
                        category="hazard", level=Level.ORANGE, ts=1_790_000_000_000 + k, metric="load", value=9.5,
                        threshold=9.0, rule="load >= 9", source="bench") for i in range(n)]

    out = []
    for record in (False, True):
        b = Backlog(f"sqlite:///{tmp / f'backlog-{record}.db'}")
        b.blackbox = record
        b.apply_findings(batch(0))  # warm-up
        times = []
        for k in range(1, repeat + 1):
            fs = batch(k)
            t0 = time.perf_counter()
            b.apply_findings(fs)
            times.append(time.perf_counter() - t0)
        b.engine.dispose()
        out.append(statistics.median(times))
    return out[0], out[1]


def _with_sites(batch, sites: int):
    """The same readings with the fleet spread over ``sites`` sites (device ``d-N`` on site ``N % sites``)."""
    site_of = {dv: f"s-{int(dv[2:]) % sites:04d}" for dv in set(batch.device.tolist())}
    return type(batch)(np.array([site_of[dv] for dv in batch.device.tolist()], dtype=object), batch.device,
                       batch.family, batch.metric, batch.ts, batch.value)


def _run_variant(variant: str, readings: int, devices: int, sites: int, repeat: int, db_url: str | None,
                 window_batches: int, tmp: str) -> dict[str, float]:
    """One worker-like process: its own warm engine, ``repeat`` batches, with or without the record."""
    from app.bench.detect import _shifted, synthetic_batch
    from blackbox.chain import Recorder
    from blackbox.readings import ReadingLog
    from detectors import DetectorEngine, RuleSet

    batch = _with_sites(synthetic_batch(readings, devices), sites)
    devs, d = _dict_encoded(batch)
    eng, st = DetectorEngine(RuleSet.default()), {}
    eng.process(batch, st)
    rec = log = None
    if not variant.startswith("baseline"):
        rec = Recorder(db_url or f"sqlite:///{Path(tmp) / f'{variant}.db'}")
        log = ReadingLog(rec, every_s=0)
        log.add(devs, d, batch.metric, batch.ts, batch.value)
        log.flush()  # warm-up: heads exist, statements prepared
    clock = time.process_time  # CPU time of this process: other processes on the machine do not count
    total, dig_t, app_t, win_t = 0.0, [], [], 0.0
    for k in range(1, repeat + 1):
        b = _shifted(batch, k)
        t0 = clock()
        eng.process(b, st)
        gc.collect(1)  # the engine's young garbage, collected here in every variant, not in whoever allocates next
        if log is not None:
            log.add(devs, d, b.metric, b.ts, b.value)  # keeps references: the hot path's share
            if variant == "per-batch" or k % window_batches == 0:
                t1 = clock()
                entries = log.take(int(time.time() * 1000))
                t2 = clock()
                rec.record(entries)  # type: ignore[union-attr]
                if variant == "per-batch":
                    dig_t.append(t2 - t1)
                    app_t.append(clock() - t2)
                else:
                    win_t += clock() - t1
        total += clock() - t0
    if rec is not None:
        rec.close()
    return {"total": total, "digest": statistics.median(dig_t) if dig_t else 0.0,
            "append": statistics.median(app_t) if app_t else 0.0,
            "window_per_batch": win_t / repeat, "sites": len({dv[0] for dv in devs})}


def bench_chain(readings: int = 100_000, devices: int = 10_000, sites: int = 1000, repeat: int = 6,
                db_url: str | None = None, window_batches: int = 5, findings: int = 200,
                echo=click.echo) -> dict[str, float]:
    """Worker batches through the detector engine without the record (twice: the noise floor) and with it
    (an entry per site per batch, and per window); returns the figures.

    Each variant is a process of its own, run one after the other on the same batches, with Python's GC on as in
    the worker: the engine's state churn triggers full collections that land wherever the threshold is crossed,
    so a variant's whole time over all its batches is compared, and variants do not pay for each other's heaps.
    Times are the process's CPU time, so other work on a shared machine does not count (waits for the disk
    do not either: SQLite in WAL with synchronous=NORMAL does not wait at commit)."""
    import multiprocessing

    variants = ("baseline", "per-batch", "windowed", "baseline-2")
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="sw-bench-chain-") as tmp, ctx.Pool(1, maxtasksperchild=1) as pool:
        res = {v: pool.apply(_run_variant, (v, readings, devices, sites, repeat, db_url, window_batches, tmp))
               for v in variants}
        fin_off, fin_on = _findings_cost(findings, repeat, Path(tmp)) if findings else (0.0, 0.0)
    base = (res["baseline"]["total"] + res["baseline-2"]["total"]) / 2
    pct = {v: (res[v]["total"] / base - 1) * 100 for v in variants}
    e = base / repeat
    g, a, n_sites = res["per-batch"]["digest"], res["per-batch"]["append"], res["per-batch"]["sites"]
    fin_pct = (fin_on - fin_off) / fin_off * 100 if fin_off else 0.0
    where = "SQLite" if db_url is None else db_url.split(":")[0]
    echo(f"record upkeep: {repeat} worker batches of {readings:,} readings, {devices:,} devices on {n_sites} sites "
         f"(one process per variant, CPU time, record on {where}, GC on):")
    echo(f"  detector engine (baseline)     {e * 1000:8.1f} ms/batch   {readings / e:10,.0f} readings/s")
    echo(f"  two baseline runs differ by    {abs(pct['baseline'] - pct['baseline-2']):8.1f} %  (noise floor)")
    echo(f"  digest per site (median)       {g * 1000:8.1f} ms   {g / e * 100:5.1f} % of a batch")
    echo(f"  append {n_sites} entries (median)  {a * 1000:8.1f} ms   {a / e * 100:5.1f} % of a batch "
         f"({n_sites / a:,.0f} entries/s)")
    w = res["windowed"]["window_per_batch"]
    echo(f"  windowed digest + append, per batch {w * 1000:6.1f} ms   {w / e * 100:5.1f} % of a batch")
    for v, label in (("per-batch", "an entry per site per batch"),
                     ("windowed", f"an entry per site per {window_batches} batches")):
        loss = -pct[v] / (1 + pct[v] / 100)
        verdict = "met" if -loss <= GOAL_PCT else "NOT met"
        echo(f"  with the record, {label:<32} {pct[v]:+6.1f} % time, {loss:+.1f} % throughput "
             f"(goal: at most {GOAL_PCT:.0f} % less: {verdict})")
    if findings:
        echo(f"  findings: {findings} applied by the backlog {fin_off * 1000:.1f} ms without the record, "
             f"{fin_on * 1000:.1f} ms with it ({fin_pct:+.1f} %)")
    return {"readings": readings, "devices": devices, "sites": n_sites, "batches": repeat,
            "engine_ms": e * 1000, "noise_pct": abs(pct["baseline"] - pct["baseline-2"]), "digest_ms": g * 1000,
            "append_ms": a * 1000, "upkeep_pct": pct["per-batch"], "upkeep_windowed_pct": pct["windowed"],
            "windowed_component_pct": w / e * 100,
            "window_batches": window_batches, "findings": findings, "findings_ms_without": fin_off * 1000,
            "findings_ms_with": fin_on * 1000, "findings_overhead_pct": fin_pct, "goal_pct": GOAL_PCT}


@click.command("chain")
@click.option("--readings", default=100_000, show_default=True, help="readings per batch")
@click.option("--devices", default=10_000, show_default=True, help="devices")
@click.option("--sites", default=1000, show_default=True, help="sites the devices are spread over")
@click.option("--repeat", default=6, show_default=True, help="batches per variant")
@click.option("--db", "db_url", help="database of the record (default: a temporary SQLite file)")
@click.option("--window-batches", default=5, show_default=True, help="batches per readings window (1 s / 0.2 s)")
@click.option("--findings", default=200, show_default=True, help="findings per backlog batch (0: skip)")
def chain_cmd(readings, devices, sites, repeat, db_url, window_batches, findings):
    """Tamper-evident record upkeep per reading batch, as a share of the detector engine's time."""
    bench_chain(readings, devices, sites, repeat, db_url, window_batches, findings)
