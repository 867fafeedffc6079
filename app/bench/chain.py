"""``bench chain``: what keeping the tamper-evident record costs the worker, beside the work it records.

Per reading batch the worker would (1) digest the batch per site (``blackbox.readings.ReadingLog``) and
(2) append one ``readings`` entry per site (``Recorder.record``: hashes, head locks, executemany). Both are
timed on the same synthetic batches the detector engine processes in the same run (``bench detect``'s
``synthetic_batch``, 100 devices per site), and reported as a share of the engine's time — the engine alone is
faster than a whole worker (decode, Kafka, state), so the share of worker throughput is at most this.

With a window (``SW_BLACKBOX_READINGS_EVERY_S``, default 1 s) both run once per window over the window's
readings; per batch the worker only keeps references to the columns. Both are printed, as measured totals
and as the timed components. The findings path too: findings applied by the backlog with and without the record.

Those components explain the cost; the goal ("upkeep ≤ 5 % of worker throughput") is judged end to end by
``bench_chain_worker``: the real ``sitewatch worker`` drains the same preloaded ``sw.raw`` with the record on
(production default) and off (``SW_BLACKBOX_RECORD=false``), interleaved, and the worker process's CPU time
per reading is compared.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import statistics
import sys
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


# ---------------------------------------------------------------------------------------------- end to end
def _record_totals(db_url: str) -> tuple[int, int]:
    """(readings entries, readings they cover) in a worker's record database."""
    from sqlalchemy import create_engine, select

    from blackbox.schema import entries

    eng = create_engine(db_url)
    try:
        with eng.connect() as c:
            rows = c.execute(select(entries.c.payload).where(entries.c.kind == "readings")).scalars().all()
    finally:
        eng.dispose()
    return len(rows), sum(int((json.loads(p) if isinstance(p, str) else p)["readings"]) for p in rows)


def record_share(path: Path) -> tuple[float, int, dict[str, int]]:
    """Share of a py-spy collapsed-stacks file's (non-idle) samples spent in the record — any frame in
    ``blackbox/`` (digests, appends on the record thread, entries staged for findings) — its sample count, and
    the record's top self frames. Measured inside one run, so the machine's load shifts both sides alike."""
    from app.bench.worker import collapsed_stacks

    total = inside = 0
    top: dict[str, int] = {}
    for frames, count in collapsed_stacks(path):
        total += count
        hit = [f for f in frames if "blackbox/" in f]
        if hit:
            inside += count
            leaf = frames[-1].split(" (")[0] + " (" + frames[-1].rsplit("/", 1)[-1].split(":")[0] + ")"
            top[leaf] = top.get(leaf, 0) + count
    return (inside / total if total else float("nan")), total, dict(sorted(top.items(), key=lambda x: -x[1])[:8])


def _worker_run(label: str, record: bool, records, readings: int, partitions: int, every_s: float,
                tail_s: float, profile: Path | None, keep: bool = False, batch_within_s: float | None = None) -> dict:
    """One fresh local stack, ``sw.raw`` preloaded, one ``sitewatch worker`` timed from its ready line until its
    group has no lag on ``sw.raw`` and ``sw.readings``, plus ``tail_s`` (the record's last window is appended on
    a timer: a run stopped at zero lag would leave it out of the "on" figure). CPU time from /proc."""
    import signal
    import subprocess

    from app.bench.pipeline import GroupLag
    from app.bench.worker import BENCH_RULES, _cpu_s, _preload
    from app.localstack import LocalStack, ManagedProcess, free_port, sitewatch_argv
    from sitewatch.contracts import TOPIC_RAW, TOPIC_READINGS

    tmp = Path(tempfile.mkdtemp(prefix=f"sitewatch-bench-chain-{label}-"))
    stack = LocalStack(tmp, free_port(), free_port(), partitions=partitions).start()
    proc = spy = lag = None
    try:
        rules = tmp / "bench-rules.yaml"
        rules.write_text(BENCH_RULES)
        db_url = f"sqlite:///{tmp / 'backlog.db'}"
        env = {"SW_DATA_DIR": str(tmp), "SW_MQTT_PORT": str(stack.mqtt_port), "SW_KAFKA_BOOTSTRAP": stack.bootstrap,
               "SW_RULES_PATH": str(rules), "SW_KAFKA_PARTITIONS": str(partitions), "SW_DB_URL": db_url,
               "SW_WORKER_ID": "bench-chain", "SW_BLACKBOX_RECORD": "true" if record else "false",
               "SW_BLACKBOX_READINGS_EVERY_S": str(every_s),
               **({"SW_BATCH_WITHIN_S": str(batch_within_s)} if batch_within_s is not None else {})}
        _preload(stack.bootstrap, records)
        lag = GroupLag(stack.bootstrap, "bench-chain", (TOPIC_RAW, TOPIC_READINGS))
        proc = ManagedProcess("worker", sitewatch_argv("worker"), tmp / "logs" / "worker.log", env).start()
        deadline = time.monotonic() + 120
        while "worker ready" not in proc.tail(200):
            if time.monotonic() > deadline or not proc.running:
                raise click.ClickException(f"worker ({label}) did not start:\n{proc.tail()}")
            time.sleep(0.05)
        spy_bin = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if profile is not None and spy_bin:
            spy = subprocess.Popen([spy_bin, "record", "--pid", str(proc.proc.pid), "--format", "raw", "--rate",
                                    "200", "--nonblocking", "--threads", "-o", str(profile)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid = proc.proc.pid
        t0, c0 = time.perf_counter(), _cpu_s(pid)
        deadline = time.monotonic() + 900
        last, moved = None, time.monotonic()
        while (left := lag()) > 0:
            if left != last:
                last, moved = left, time.monotonic()
            # A crashed agent leaves the process up and idle: say so instead of waiting out the deadline.
            stalled = time.monotonic() - moved > 60 or "Crashed reason=" in proc.tail(400)
            if time.monotonic() > deadline or not proc.running or stalled:
                crash = [ln for ln in proc.tail(100_000).splitlines() if "Crashed reason=" in ln]
                raise click.ClickException(f"worker ({label}) stopped draining its input with {left} records left "
                                           f"(logs in {tmp / 'logs'}):\n" + "\n".join(crash[:3] or [proc.tail()]))
            time.sleep(0.1)
        wall = time.perf_counter() - t0
        time.sleep(tail_s)
        cpu = _cpu_s(pid) - c0
        load1 = os.getloadavg()[0]
        # A rebalance or a re-read during the run would be extra work that is not the record's: counted, shown.
        readies = proc.tail(100_000).count("worker ready")
        produced = sum(lag.end_offsets().get(tp, 0) for tp in lag.tps if tp.topic == TOPIC_READINGS)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            spy.wait(30)
        if lag is not None:
            lag.close()
        if proc is not None:
            proc.stop(30)  # the worker appends what is left of its last window as it stops
        stack.stop()
    n_entries, covered = _record_totals(db_url)
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"label": label, "record": record, "wall_s": wall, "cpu_s": cpu, "load1": load1,
            "cpu_us_per_reading": 1e6 * cpu / readings, "rps": readings / wall, "entries": n_entries,
            "readings_recorded": covered, "rebalances": readies, "readings_records": produced, "dir": str(tmp)}


def bench_chain_worker(readings: int = 1_000_000, sites: int = 50, pairs: int = 3, every_s: float | None = None,
                       partitions: int | None = None, tail_s: float = 1.5, profile: str | None = "auto",
                       verbose_profile: bool = False, batch_within_s: float | None = None, echo=click.echo) -> dict:
    """The record's cost end to end: the real worker on the same preloaded ``sw.raw``, record off / on / off /
    on … (``pairs`` of each, interleaved because the machine is shared), each run on a fresh local stack and
    database. The figure compared is the worker process's CPU-µs per reading (other processes do not count);
    wall-clock readings/s is printed beside it. Each "on" run must have recorded every reading it drained.

    Why a second figure: the worker's CPU per reading moves by tens of percent between identical runs on a
    shared machine (the take() batches come out larger or smaller with the load, and per-batch costs follow —
    the number of ``sw.readings`` records each run wrote shows it), so the A/B medians need many runs to
    resolve 5 %. With ``profile`` (default: a temporary folder, if py-spy is installed) the "on" runs are also
    sampled with py-spy, threads included (the record's appends run on one), and the share of samples inside
    ``blackbox/`` is the record's share of that same run's CPU — load moves both sides of that ratio alike.
    Collapsed stacks in ``PROFILE/worker-on-N.txt``."""
    from app.bench.pipeline import stop_on_sigterm
    from app.bench.worker import gateway_envelopes, profile_summary
    from sitewatch.settings import Settings

    stop_on_sigterm()
    s = Settings()
    parts = partitions or s.kafka_partitions
    window = s.blackbox_readings_every_s if every_s is None else every_s
    records, n = gateway_envelopes(readings, sites, per_frame=200, frames_per_envelope=10, partitions=parts)
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if profile == "auto":
        profile = tempfile.mkdtemp(prefix="sitewatch-bench-chain-profiles-") if spy else None
    elif profile and not spy:
        raise click.ClickException("--profile needs py-spy (pip install py-spy)")
    if profile:
        Path(profile).mkdir(parents=True, exist_ok=True)
    echo(f"record upkeep end to end: `sitewatch worker` draining {n:,} readings ({len(records):,} sw.raw records of "
         f"gateway frames, {sites} sites, {parts} partitions), record off/on interleaved, {pairs} run(s) each, "
         f"readings window {window:g} s, take() window "
         f"{s.batch_within_s if batch_within_s is None else batch_within_s:g} s; "
         f"{os.cpu_count()} cores shared with Tansu and whatever else runs "
         f"(load average now {os.getloadavg()[0]:.2f})")
    runs: list[dict] = []
    for i in range(pairs):
        for record in (False, True):
            label = f"{'on' if record else 'off'}-{i + 1}"
            prof = (Path(profile).resolve() / f"worker-{label}.txt") if profile else None  # both: symmetric
            r = _worker_run(label, record, records, n, parts, window, tail_s, prof, batch_within_s=batch_within_s)
            runs.append(r)
            check = (f"{r['entries']} entries cover {r['readings_recorded']:,} readings"
                     if record else f"{r['entries']} readings entries")
            echo(f"  record {label:<6} {r['cpu_us_per_reading']:6.2f} CPU-µs/reading  {r['rps']:9,.0f} readings/s "
                 f"({r['wall_s']:5.2f} s wall, {r['cpu_s']:6.2f} s CPU, load {r['load1']:.2f}, "
                 f"{r['readings_records']} sw.readings records, {r['rebalances']} assignment)  {check}")
            if prof is not None and prof.exists():
                share, samples, top = record_share(prof)
                r.update(record_share_pct=100 * share, samples=samples)
                echo(f"    py-spy: the record is {100 * share:.1f} % of the worker's {samples} non-idle samples "
                     f"in this run; its top frames: " + ", ".join(f"{k} {v}" for k, v in list(top.items())[:4]))
                if verbose_profile:
                    echo(profile_summary(prof))
    off = [r["cpu_us_per_reading"] for r in runs if not r["record"]]
    on = [r["cpu_us_per_reading"] for r in runs if r["record"]]
    off_rps = [r["rps"] for r in runs if not r["record"]]
    on_rps = [r["rps"] for r in runs if r["record"]]
    m_off, m_on = statistics.median(off), statistics.median(on)
    cost = (m_on / m_off - 1) * 100  # extra CPU per reading
    loss = (1 - m_off / m_on) * 100  # throughput per CPU-second given up
    wall_loss = (1 - statistics.median(on_rps) / statistics.median(off_rps)) * 100
    spread = (max(off) - min(off)) / m_off * 100
    complete = all(r["readings_recorded"] == n for r in runs if r["record"])
    resolved = abs(cost) > spread
    verdict = ("met" if loss <= GOAL_PCT else "NOT met") if resolved else \
        "not resolved: the difference is inside the noise floor"
    echo(f"  median: off {m_off:.2f}, on {m_on:.2f} CPU-µs/reading → the record costs {cost:+.1f} % CPU per reading "
         f"= {loss:+.1f} % of worker throughput per CPU-second (goal: at most {GOAL_PCT:.0f} %: {verdict}); "
         f"wall-clock throughput loss {wall_loss:+.1f} % (noisier); the off runs alone spread {spread:.1f} % "
         f"(noise floor); sw.readings records per run (take() batches): off "
         f"{statistics.median(r['readings_records'] for r in runs if not r['record']):.0f}, on "
         f"{statistics.median(r['readings_records'] for r in runs if r['record']):.0f} (median)")
    # CPU per reading follows the number of take() batches a run happened to form (per-batch costs), and that
    # moves with the machine's load: least squares over all runs, CPU/reading = a + b·batches + c·(record on),
    # separates the record's effect c from it (with its standard error: how far the A/B can see).
    adj = adj_se = None
    if len(runs) >= 4 and len({r["readings_records"] for r in runs}) > 1:
        X = np.array([[1.0, r["readings_records"], float(r["record"])] for r in runs])
        y = np.array([r["cpu_us_per_reading"] for r in runs])
        coef = np.linalg.lstsq(X, y, rcond=None)[0]
        resid = y - X @ coef
        dof = max(1, len(y) - 3)
        cov = (resid @ resid / dof) * np.linalg.pinv(X.T @ X)
        base_cpu = coef[0] + coef[1] * X[:, 1].mean()
        adj, adj_se = 100 * coef[2] / base_cpu, 100 * float(np.sqrt(max(cov[2, 2], 0.0))) / base_cpu
        echo(f"  controlling for the take() batches of each run (least squares over the {len(runs)} runs): the record "
             f"adds {adj:+.1f} % ± {adj_se:.1f} % (1 s.e.) CPU per reading")
    shares = [r["record_share_pct"] for r in runs if r["record"] and "record_share_pct" in r]
    off_shares = [r["record_share_pct"] for r in runs if not r["record"] and "record_share_pct" in r]
    share = statistics.median(shares) if shares else None
    if share is not None:
        echo(f"  py-spy, inside the 'on' runs: the record is {share:.1f} % of the worker's CPU (median of "
             f"{', '.join(f'{x:.1f}' for x in shares)} %; goal: at most {GOAL_PCT:.0f} %: "
             f"{'met' if share <= GOAL_PCT else 'NOT met'}; the 'off' runs: "
             f"{max(off_shares, default=float('nan')):.1f} % at most); profiles in {profile}")
    echo(f"  every reading drained by an 'on' run is on its record: {'yes' if complete else 'NO'}")
    return {"record_share_pct": share, "record_shares_pct": shares, "cost_cpu_pct_batch_adjusted": adj,
            "cost_cpu_pct_batch_adjusted_se": adj_se, "readings": n, "sites": sites, "partitions": parts, "window_s": window, "pairs": pairs,
            "runs": runs, "off_cpu_us_per_reading": m_off, "on_cpu_us_per_reading": m_on, "cost_cpu_pct": cost,
            "throughput_loss_pct": loss, "wall_throughput_loss_pct": wall_loss, "noise_pct": spread,
            "goal_pct": GOAL_PCT, "ab_resolved": resolved, "goal_met_ab": loss <= GOAL_PCT if resolved else None,
            "goal_met_share": share <= GOAL_PCT if share is not None else None,
            "all_readings_recorded": complete}


@click.command("chain")
@click.option("--readings", default=1_000_000, show_default=True, help="readings the worker drains per run")
@click.option("--sites", default=50, show_default=True, help="sites the readings come from")
@click.option("--pairs", default=3, show_default=True, help="runs with the record off and on each (interleaved)")
@click.option("--every-s", type=float, default=None, help="readings window (default $SW_BLACKBOX_READINGS_EVERY_S)")
@click.option("--profile", default="auto", show_default=True,
              help="folder for py-spy profiles of every run ('auto': a temporary one; '': no profiling)")
@click.option("--profile-summary", is_flag=True, help="print each profile's top functions")
@click.option("--batch-within-s", type=float, default=None,
              help="the worker's take() window for every run (default: the setting; larger = fuller batches, "
                   "steadier CPU per reading, and a cheaper worker — so the record's share is larger, not smaller)")
@click.option("--components", is_flag=True, help="also time the record's components against the detector engine")
@click.option("--db", "db_url", help="with --components: database of the record (default: a temporary SQLite file)")
def chain_cmd(readings, sites, pairs, every_s, profile, profile_summary, batch_within_s, components, db_url):
    """What the tamper-evident record costs the real worker: record on vs off on the same preloaded sw.raw."""
    bench_chain_worker(readings, sites, pairs, every_s, profile=profile or None, verbose_profile=profile_summary,
                       batch_within_s=batch_within_s)
    if components:
        bench_chain(db_url=db_url)
