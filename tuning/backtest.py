"""``sitewatch backtest``: replay recorded readings through a candidate rule set and say what would have fired.

Why this exists: ops tune a detector by asking "if this rule had been live last week, how many tickets would the
site have had, and which real alarms would we have lost?". Answering that on history — not on a live site — is
the only safe way to raise a threshold. So the replay runs the *same* ``DetectorEngine`` as the worker, twice
(baseline = the current config, candidate = the proposed one), over the same time-ordered batches, and compares
the tickets.

Shape of a run::

    load_csv / load_parquet / load_kafka  ->  Recording (columns, sorted by ts, rejects counted by reason)
    replay(recording, {"baseline": rules, "candidate": rules})
        per clock step: engine.process(batch) for each config, then engine.tick(step end)  (silent sensors)
        findings -> TicketBook (episodes raise..clear per site/device/kind, flaps, first alarm)
    diff(baseline book, candidate book)  ->  new / suppressed / level changes / first alarm earlier or later
    render_text(report) or JSON

A *ticket* here is one episode from a raise to its clear for one site/device/kind (the backlog's dedup key); a
*flap* is a ticket that opens again less than ``flap_window`` after the previous ticket of the same key opened,
i.e. a raise -> clear -> raise cycle inside the window — the thing hysteresis and hold exist to prevent.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Iterator

import click
import numpy as np

from detectors.engine import DetectorEngine
from sitewatch.findings import Finding, Level
from detectors.model import ReadingBatch
from sitewatch.contracts import (FAMILIES, GATEWAY, MAX_FUTURE_SKEW_MS, MIN_TS_MS, SCHEMA_VERSION, TOPIC_READINGS,
                                 GatewayStatus, InvalidReading, now_ms, parse_ts, reading_topic, unpack_readings,
                                 validate_message)
from sitewatch.rules import RuleSet, RulesError, load_rules

from sitewatch.contracts import DeviceStatus

LEVELS = ("yellow", "orange", "red")
CSV_COLUMNS = ("site", "device", "family", "metric", "ts", "value")
DEFAULT_BATCH = 50_000
DEFAULT_TICK_S = 60.0
DEFAULT_FLAP_S = 600.0
DEFAULT_LATE_AFTER_MS = 60_000  # a reading that reaches the pipeline later than this after its ts is "late"
KAFKA_SLACK_MS = 10 * 60 * 1000  # records reach sw.readings after their readings were taken: read this much around


# ================================================================================================ recording
@dataclass
class Recording:
    """Readings as parallel columns sorted by ``ts`` (values in canonical units), plus what was rejected and why.

    Columns rather than ``Reading`` objects: a day of a large site is millions of rows, and the engine wants
    numpy arrays anyway.
    """

    site: np.ndarray
    device: np.ndarray
    family: np.ndarray
    metric: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    source: str
    rows_read: int = 0
    rejected: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first example, for the report
    statuses: list[GatewayStatus] = field(default_factory=list)
    device_statuses: list = field(default_factory=list)  # DeviceStatus (power off/on announcements)
    # Arrival information, when the source has it (capture, generated scenario, Kafka, CSV with arrival_ms):
    rx: np.ndarray | None = None  # per row: when it reached the broker / the pipeline (epoch ms)
    msg: np.ndarray | None = None  # per row: the message (MQTT message / Kafka record) that carried it
    pos: np.ndarray | None = None  # per row: its position in the input (order inside a message)
    status_arrivals: list = field(default_factory=list)  # (rx, msg, GatewayStatus | DeviceStatus)
    messages: int = 0

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @property
    def has_arrivals(self) -> bool:
        return self.rx is not None

    def batch(self, lo: int, hi: int) -> ReadingBatch:
        return ReadingBatch(self.site[lo:hi], self.device[lo:hi], self.family[lo:hi], self.metric[lo:hi],
                            self.ts[lo:hi], self.value[lo:hi])

    def summary(self) -> dict[str, Any]:
        devices = {f"{s}/{d}" for s, d in zip(self.site.tolist(), self.device.tolist())}
        return {
            "source": self.source, "rows_read": self.rows_read, "rows_valid": len(self),
            "rejected": dict(sorted(self.rejected.items())), "rejected_examples": self.examples,
            "devices": len(devices), "gateway_statuses": len(self.statuses),
            "device_statuses": len(self.device_statuses), "messages": self.messages or None,
            "from_ms": int(self.ts[0]) if len(self) else None, "to_ms": int(self.ts[-1]) if len(self) else None,
        }


class _Columns:
    """Accumulates rows column-wise while validating; strings are interned so a long file shares them."""

    def __init__(self, source: str):
        self.source = source
        self.cols: dict[str, list] = {c: [] for c in CSV_COLUMNS}
        self.rows_read = 0
        self.rejected: Counter = Counter()
        self.examples: dict[str, str] = {}
        self.statuses: list[GatewayStatus] = []
        self.device_statuses: list = []
        self.status_arrivals: list = []
        self.rx: list[int] = []
        self.msg: list[int] = []
        self.messages = 0
        self._combo: dict[tuple, tuple[float, str | None, str]] = {}
        self._intern: dict[str, str] = {}
        self._now = now_ms()

    def reject(self, reason: str, where: str, detail: str) -> None:
        self.rejected[reason] += 1
        self.examples.setdefault(reason, f"{where}: {detail}")

    def factor(self, site: str, device: str, family: str, metric: str,
               unit: str | None) -> tuple[float, str | None, str]:
        """Unit factor to the canonical unit, or the contract's rejection reason, judged once per combination.

        The judgement is made by ``sitewatch.contracts.validate_message`` itself (on a probe reading of value 1),
        so the backtest accepts exactly what the live pipeline accepts — and does it once per (site, device,
        family, metric, unit), not once per row.
        """
        key = (site, device, family, metric, unit)
        got = self._combo.get(key)
        if got is not None:
            return got
        if family == GATEWAY or "/" in f"{site}{device}{family}{metric}":
            got = (math.nan, "unknown_family" if family == GATEWAY else "bad_identifier",
                   f"{site}/{device} {family}.{metric} is not a sensor reading")
        else:
            unit = unit or FAMILIES.get(family, {}).get(metric)
            body = {"ts": self._now, "value": 1.0, "unit": unit}
            v = validate_message(reading_topic(site, family, device, metric), json.dumps(body).encode(), self._now)
            got = ((v.readings[0].value, None, "") if v.readings
                   else (math.nan, v.rejected[0].reason, v.rejected[0].detail))
        self._combo[key] = got
        return got

    def s(self, x: str) -> str:
        return self._intern.setdefault(x, x)

    def add(self, where: str, site: str, device: str, family: str, metric: str, ts: Any, value: Any,
            unit: str | None, rx: int | None = None, msg: int | None = None) -> None:
        """One row through the contract's rules; a bad row is counted with its reason, never fatal."""
        self.rows_read += 1
        factor, reason, detail = self.factor(site, device, family, metric, unit)
        if reason:
            self.reject(reason, where, detail)
            return
        try:
            t = _ts(ts)
            v = _value(value)
        except InvalidReading as e:
            self.reject(e.reason, where, e.detail)
            return
        if t > self._now + MAX_FUTURE_SKEW_MS:
            self.reject("future_timestamp", where, f"ts {t} is in the future")
            return
        if t < MIN_TS_MS:
            self.reject("bad_timestamp", where, f"ts {t} is before 2000-01-01")
            return
        c = self.cols
        c["site"].append(self.s(site))
        c["device"].append(self.s(device))
        c["family"].append(self.s(family))
        c["metric"].append(self.s(metric))
        c["ts"].append(t)
        c["value"].append(v * factor)
        if rx is not None:
            self.rx.append(rx)
            self.msg.append(msg if msg is not None else self.messages)

    def add_valid(self, r, rx: int, msg: int) -> None:
        """A reading the contract already accepted (``validate_message`` on the original MQTT bytes)."""
        self.rows_read += 1
        c = self.cols
        c["site"].append(self.s(r.site))
        c["device"].append(self.s(r.device))
        c["family"].append(self.s(r.family))
        c["metric"].append(self.s(r.metric))
        c["ts"].append(r.ts)
        c["value"].append(r.value)
        self.rx.append(rx)
        self.msg.append(msg)

    def add_status(self, st, rx: int | None = None, msg: int | None = None) -> None:
        (self.statuses if isinstance(st, GatewayStatus) else self.device_statuses).append(st)
        if rx is not None:
            self.status_arrivals.append((int(rx), int(msg if msg is not None else self.messages), st))

    def recording(self, t_from: int | None = None, t_to: int | None = None) -> Recording:
        c = self.cols
        ts = np.asarray(c["ts"], dtype=np.int64)
        keep = np.ones(ts.shape[0], dtype=bool)
        if t_from is not None:
            keep &= ts >= t_from
        if t_to is not None:
            keep &= ts < t_to
        idx = np.flatnonzero(keep)
        order = idx[np.argsort(ts[idx], kind="stable")]
        obj = {k: np.asarray(c[k], dtype=object)[order] for k in ("site", "device", "family", "metric")}
        inside = lambda s: (t_from is None or s.ts >= t_from) and (t_to is None or s.ts < t_to)  # noqa: E731
        statuses = sorted((s for s in self.statuses if inside(s)), key=lambda s: s.ts)
        dev_statuses = sorted((s for s in self.device_statuses if inside(s)), key=lambda s: s.ts)
        arrived = len(self.rx) == ts.shape[0] and (ts.shape[0] > 0 or bool(self.status_arrivals))
        rec = Recording(obj["site"], obj["device"], obj["family"], obj["metric"], ts[order],
                        np.asarray(c["value"], dtype=np.float64)[order], self.source, self.rows_read,
                        self.rejected, self.examples, statuses, dev_statuses)
        if arrived:
            rec.rx = np.asarray(self.rx, dtype=np.int64)[order] if self.rx else np.empty(0, np.int64)
            rec.msg = np.asarray(self.msg, dtype=np.int64)[order] if self.msg else np.empty(0, np.int64)
            rec.pos = order.astype(np.int64)
            rec.status_arrivals = sorted((a for a in self.status_arrivals if inside(a[2])), key=lambda a: a[:2])
            rec.messages = self.messages
        return rec


def _ts(raw: Any) -> int:
    """Epoch ms (also as text, as CSV delivers it) or RFC 3339, exactly as the MQTT contract allows."""
    if isinstance(raw, str):
        s = raw.strip()
        try:
            number = float(s)
        except ValueError:
            return parse_ts(s)  # RFC 3339, or the contract's bad_timestamp
        return parse_ts(number)
    if isinstance(raw, datetime):
        if raw.tzinfo is None:
            raise InvalidReading("bad_timestamp", f"ts has no time zone: {raw!r}")
        return int(raw.timestamp() * 1000)
    return parse_ts(raw)


def _value(raw: Any) -> float:
    if isinstance(raw, str):
        try:
            raw = float(raw)
        except ValueError:
            raise InvalidReading("non_numeric_value", f"value must be a number, got {raw!r}") from None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise InvalidReading("non_numeric_value", f"value must be a number, got {raw!r}")
    if not math.isfinite(raw):
        raise InvalidReading("non_finite_value", f"value is {raw!r}")
    return float(raw)


def load_csv(path: str | Path, t_from: int | None = None, t_to: int | None = None) -> Recording:
    """A CSV export: ``site,device,family,metric,ts,value[,unit]``; no unit column means canonical units."""
    cols = _Columns(str(path))
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise click.UsageError(f"{path}: CSV needs columns {','.join(CSV_COLUMNS)}[,unit]; missing {missing}")
        arrival = "arrival_ms" in (reader.fieldnames or [])
        has_msg = "msg" in (reader.fieldnames or [])
        for line, row in enumerate(reader, start=2):
            rx = msg = None
            if arrival:
                try:
                    rx = _ts(row["arrival_ms"])
                except InvalidReading as e:
                    cols.rows_read += 1
                    cols.reject("bad_arrival", f"{path}:{line}", e.detail)
                    continue
                msg = int(row["msg"]) if has_msg and row.get("msg") not in (None, "") else rx
            cols.add(f"{path}:{line}", row["site"], row["device"], row["family"], row["metric"], row["ts"],
                     row["value"], row.get("unit") or None, rx, msg)
        if arrival:
            cols.messages = len(set(cols.msg))
    return cols.recording(t_from, t_to)


def load_events(events: Iterable, source: str, t_from: int | None = None, t_to: int | None = None) -> Recording:
    """Arrival events ``(arrival_ms, topic, payload)`` — a capture or a generated field stream — through the live
    pipeline's validation (``validate_message`` with the clock at each message's arrival), keeping the arrival
    time and message of every reading so the replay can follow arrival order."""
    cols = _Columns(source)
    for seq, (rx, topic, payload) in enumerate(events):
        rx = int(rx)
        cols.messages += 1
        v = validate_message(topic, payload, rx)
        for st in v.device_statuses:
            cols.add_status(st, rx, seq)
        for r in v.readings:
            cols.add_valid(r, rx, seq)
        for st in v.statuses:
            cols.add_status(st, rx, seq)
        for rej in v.rejected:
            cols.rows_read += 1
            cols.reject(rej.reason, f"{source} message {seq} ({topic})", rej.detail)
    return cols.recording(t_from, t_to)


def load_capture(path: str | Path, t_from: int | None = None, t_to: int | None = None) -> Recording:
    """JSON lines ``{"rx", "topic", "payload"}``: MQTT messages as they arrived (``sitewatch simulate --out``)."""
    from ingest.fieldstreams import read_capture

    try:
        return load_events(read_capture(path), str(path), t_from, t_to)
    except (ValueError, KeyError) as e:
        raise click.UsageError(f"{path}: not a capture (JSON lines with rx, topic, payload): {e}") from None


def load_parquet(path: str | Path, t_from: int | None = None, t_to: int | None = None) -> Recording:
    """Same columns as the CSV. pyarrow is optional: imported only here, with a clear message when absent."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise click.UsageError("reading Parquet needs pyarrow: pip install pyarrow (or export to CSV and use "
                               "--csv)") from None
    table = pq.read_table(path)
    names = set(table.column_names)
    missing = [c for c in CSV_COLUMNS if c not in names]
    if missing:
        raise click.UsageError(f"{path}: Parquet needs columns {','.join(CSV_COLUMNS)}[,unit]; missing {missing}")
    data = {c: table.column(c).to_pylist() for c in (*CSV_COLUMNS, *(("unit",) if "unit" in names else ()))}
    cols = _Columns(str(path))
    units = data.get("unit") or [None] * table.num_rows
    for i in range(table.num_rows):
        ts = data["ts"][i]
        if isinstance(ts, datetime) and ts.tzinfo is None:  # Parquet timestamps without zone are UTC by convention
            ts = ts.replace(tzinfo=timezone.utc)
        cols.add(f"{path}:row {i}", data["site"][i], data["device"][i], data["family"][i], data["metric"][i], ts,
                 data["value"][i], units[i])
    return cols.recording(t_from, t_to)


def load_kafka(bootstrap: str, topic: str, t_from: int, t_to: int, slack_ms: int = KAFKA_SLACK_MS,
               idle_s: float = 2.0, timeout_s: float = 600.0, kafka_options: dict | None = None) -> Recording:
    """Read the packed ``sw.readings`` records of a time range, without a consumer group (nothing is committed).

    Partitions are positioned with ``offsets_for_times(from - slack)`` — a record is written after its readings
    were taken, so the range is widened by ``slack_ms`` on both sides and readings are then kept by their own
    ``ts``. A partition is done when its record timestamps pass ``to + slack`` or it has nothing more to give
    (some Kafka-compatible brokers answer ``offsets_for_times`` with offset 0: the filter keeps that correct).
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=int(idle_s * 1000),
                             **(kafka_options or {}))
    cols = _Columns(f"kafka://{bootstrap}/{topic}")
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise click.UsageError(f"topic {topic!r} does not exist on {bootstrap}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        starts = consumer.offsets_for_times({tp: max(0, t_from - slack_ms) for tp in tps})
        live = [tp for tp in tps if starts.get(tp) is not None]
        if not live:
            return cols.recording(t_from, t_to)
        consumer.assign(live)
        for tp in live:
            consumer.seek(tp, starts[tp].offset)
        _drain(consumer, set(live), cols, t_to + slack_ms, idle_s, timeout_s)
    finally:
        consumer.close()
    return cols.recording(t_from, t_to)


def _drain(consumer, live: set, cols: _Columns, stop_after_ms: int, idle_s: float, timeout_s: float) -> None:
    """Poll until every partition passed the end of the range, or nothing arrived for ``idle_s``."""
    deadline = time.monotonic() + timeout_s
    idle_since = time.monotonic()
    while live and time.monotonic() < deadline:
        got = consumer.poll(timeout_ms=300, max_records=5000)
        if not got:
            if time.monotonic() - idle_since >= idle_s:
                return
            continue
        idle_since = time.monotonic()
        for tp, records in got.items():
            for r in records:
                if r.timestamp > stop_after_ms:
                    live.discard(tp)
                    consumer.pause(tp)
                    break
                _add_record(cols, f"{tp.topic}[{tp.partition}]@{r.offset}", r.value, r.timestamp)


def _add_record(cols: _Columns, where: str, raw: bytes, record_ms: int | None = None) -> None:
    """One packed ``sw.readings`` record: a device's readings (re-checked against the contract) or a status.

    Each record is one arrival batch: its ``rx`` (when the bridge received the messages; else the record's
    timestamp) is the arrival time ``--arrival-order`` replays by."""
    msg = cols.messages
    cols.messages += 1
    try:
        rec = json.loads(raw)
        if rec.get("v") != SCHEMA_VERSION:
            raise ValueError(f"schema version {rec.get('v')!r}, expected {SCHEMA_VERSION}")
        rx = int(rec.get("rx") or record_ms or 0)
        if rec.get("type") == "status":
            cols.add_status(GatewayStatus(rec["site"], rec["gateway"], int(rec["ts"]), bool(rec["online"]),
                                          rec.get("detail") or {}), rx, msg)
            return
        if rec.get("type") == "dstatus":  # a device's power announcement (sitewatch.contracts.pack_device_status)
            cols.add_status(DeviceStatus(rec["site"], rec["family"], rec["device"], int(rec["ts"]),
                                         bool(rec["online"]), str(rec.get("reason") or "")), rx, msg)
            return
        readings = unpack_readings(rec)
    except (ValueError, KeyError, TypeError) as e:
        cols.rows_read += 1
        cols.reject("bad_record", where, str(e))
        return
    for r in readings:
        cols.add(where, r.site, r.device, r.family, r.metric, r.ts, r.value, None, rx, msg)


# ================================================================================================ tickets
@dataclass
class Ticket:
    """One episode raise -> clear of one site/device/kind, as the backlog would see it."""

    site: str
    device: str
    family: str
    kind: str
    category: str
    opened_ms: int
    level: int  # level it opened at
    peak_level: int
    major: bool
    peak_value: float
    threshold: float
    rule: str
    cleared_ms: int | None = None
    changes: list[tuple[int, int]] = field(default_factory=list)  # (ts, level) each time the level moved
    flap: bool = False  # opened < flap_window after the previous ticket of this key opened
    late: bool = False  # opened by a finding the engine marked late (evidence.late): raised back-dated

    @property
    def key(self) -> str:
        return f"{self.site}/{self.device}/{self.kind}"

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "device": self.device, "family": self.family, "kind": self.kind,
                "category": self.category, "opened_ms": self.opened_ms, "cleared_ms": self.cleared_ms,
                "level": LEVELS[self.level - 1], "peak_level": LEVELS[self.peak_level - 1], "major": self.major,
                "peak_value": _num(self.peak_value), "threshold": _num(self.threshold), "rule": self.rule,
                "level_changes": len(self.changes), "flap": self.flap, "late": self.late}


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)


class TicketBook:
    """Turns a config's findings into tickets, the way the backlog deduplicates them."""

    def __init__(self, flap_window_ms: int):
        self.flap_window_ms = flap_window_ms
        self.tickets: list[Ticket] = []
        self.open: dict[str, Ticket] = {}
        self.last_open_ms: dict[str, int] = {}
        self.findings = 0
        self.late_findings = 0

    def add(self, findings: Iterable[Finding]) -> None:
        for f in findings:
            self.findings += 1
            if f.evidence and f.evidence.get("late"):
                self.late_findings += 1
            t = self.open.get(f.dedup_key)
            if t is None:
                if f.level > 0:
                    self._open(f)
                continue
            if f.level == Level.CLEAR:
                t.cleared_ms = f.ts
                del self.open[f.dedup_key]
                continue
            if int(f.level) != (t.changes[-1][1] if t.changes else t.level):
                t.changes.append((f.ts, int(f.level)))
            if f.level > t.peak_level or (f.level == t.peak_level and abs(f.value) > abs(t.peak_value)):
                t.peak_level, t.peak_value, t.threshold, t.rule = int(f.level), f.value, f.threshold, f.rule
            t.major = t.major or f.major

    def _open(self, f: Finding) -> None:
        key = f.dedup_key
        prev = self.last_open_ms.get(key)
        t = Ticket(f.site, f.device, f.family, f.kind, f.category, f.ts, int(f.level), int(f.level), f.major,
                   f.value, f.threshold, f.rule,
                   flap=prev is not None and f.ts - prev <= self.flap_window_ms,
                   late=bool(f.evidence and f.evidence.get("late")))
        self.last_open_ms[key] = f.ts
        self.open[key] = t
        self.tickets.append(t)


# ================================================================================================ replay
@dataclass
class Replay:
    """Everything a replay produced, per config name."""

    recording: Recording
    rules: dict[str, RuleSet]
    books: dict[str, TicketBook]
    start_ms: int
    end_ms: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    delivery: dict[str, Any] = field(default_factory=dict)  # order, messages, engine batches, late / duplicates


@dataclass
class _Devices:
    """Per-device view of a recording: which device each row belongs to, and its gaps between readings."""

    code: np.ndarray  # device number per row
    names: list[str]  # "site/device" per device number
    first_row: np.ndarray  # a row of each device (for its site / device / family)
    gap_from: np.ndarray  # per gap: the device, the reading before it and the next reading (or None: the end)
    gap_dev: np.ndarray
    gap_to: np.ndarray

    @classmethod
    def of(cls, rec: Recording) -> "_Devices":
        names, first_row, code = np.unique(rec.site + "/" + rec.device, return_index=True, return_inverse=True)
        order = np.lexsort((rec.ts, code))
        d, t = code[order], rec.ts[order]
        last = np.r_[d[1:] != d[:-1], True]  # a device's last reading: its gap runs to the end of the recording
        nxt = np.r_[t[1:], 0]
        return cls(code, names.tolist(), first_row, t, d, np.where(last, np.iinfo(np.int64).max, nxt))

    def silent_ms(self, rec: Recording, engines: Iterable[DetectorEngine]) -> np.ndarray:
        """Each device's shortest possible deadman over the configs (a tick only one config needs is harmless).

        An engine that learns each device's cadence bounds its deadman below by the plan's ``silent_floor_ms``:
        that bound, not the deadman at the default interval, decides which clock steps can matter."""
        out = np.full(len(self.names), np.iinfo(np.int64).max, dtype=np.int64)
        for eng in engines:
            for i, r in enumerate(self.first_row.tolist()):
                fam = rec.family[r]
                if fam in FAMILIES:
                    p = eng.plan(rec.site[r], rec.device[r], fam)
                    out[i] = min(out[i], p.silent_ms, getattr(p, "silent_floor_ms", None) or p.silent_ms)
        return out


def tick_times(dev: _Devices, silent: np.ndarray, start: int, end: int, step_ms: int) -> np.ndarray:
    """The clock steps at which some device is past its deadman; a tick anywhere else changes nothing.

    ``engine.tick(T)`` acts only on devices whose last reading is older than ``T - deadman``, so ticking the
    whole grid (start + k * step) and ticking only these steps give the same findings — but batches can then run
    to ``batch_size`` rows instead of stopping at every step (the engine costs ~10 ms per call, whatever its size).
    """
    if step_ms <= 0 or not dev.gap_from.size:
        return np.empty(0, dtype=np.int64)
    lo_t = dev.gap_from + silent[dev.gap_dev]  # silent strictly after this ...
    hi_t = np.minimum(dev.gap_to, end + 1)  # ... and strictly before the next reading (or up to the end)
    ok = lo_t < hi_t
    k_lo = (lo_t[ok] - start) // step_ms + 1
    k_hi = -((start - hi_t[ok]) // step_ms) - 1  # ceil((hi - start) / step) - 1
    k_hi = np.minimum(k_hi, (end - start) // step_ms)
    m = k_hi >= k_lo
    k_lo, k_hi = k_lo[m], k_hi[m]
    if not k_lo.size:
        return np.empty(0, dtype=np.int64)
    counts = k_hi - k_lo + 1
    ks = np.repeat(k_lo - np.cumsum(np.r_[0, counts[:-1]]), counts) + np.arange(int(counts.sum()))
    return start + np.unique(ks) * step_ms


def _steps(ts: np.ndarray, ticks: np.ndarray, batch: int) -> Iterator[tuple[int, int, int | None]]:
    """(lo, hi, tick_at) slices of the time-sorted rows: batches of up to ``batch`` rows that end on each tick.

    A batch must end on a tick so the tick at T sees every reading up to T and none after — otherwise a device
    that went quiet and came back inside one batch would never be judged silent.
    """
    n = ts.shape[0]
    lo = 0
    for at in ticks.tolist():
        hi = int(np.searchsorted(ts, at, side="right"))
        while hi - lo > batch:
            yield lo, lo + batch, None
            lo += batch
        yield lo, hi, at
        lo = hi
    while lo < n:
        yield lo, min(n, lo + batch), None
        lo += batch


def replay(rec: Recording, rules: dict[str, RuleSet], batch_size: int = DEFAULT_BATCH,
           tick_step_s: float = DEFAULT_TICK_S, flap_window_s: float = DEFAULT_FLAP_S,
           progress: Callable[[int, int, float], None] | None = None, every_step: bool = False,
           until_ms: int | None = None, arrival_order: bool = False,
           late_after_ms: int = DEFAULT_LATE_AFTER_MS) -> Replay:
    """Run every rule set over the same batches with its own engine and state, collecting tickets.

    ``every_step`` ticks the whole clock grid instead of only the steps where a deadman can pass: slower,
    same findings (the tests hold the fast path to that). ``until_ms`` runs the clock on to that time (``--to``),
    so a device that stops before the end of the range is still judged silent. ``arrival_order`` replays the
    readings batch by batch as they arrived (needs ``rec.rx``), with the clock running in arrival time — what the
    live worker sees; otherwise rows are replayed sorted by measurement time.
    """
    engines = {name: DetectorEngine(r) for name, r in rules.items()}
    states: dict[str, dict] = {name: {} for name in rules}
    books = {name: TicketBook(int(flap_window_s * 1000)) for name in rules}
    n = len(rec)
    t0 = time.perf_counter()
    step_ms = int(tick_step_s * 1000)
    if arrival_order:
        if not rec.has_arrivals:
            raise ValueError("arrival order needs arrival times: a capture, a generated scenario, Kafka, or a CSV "
                             "with an arrival_ms column")
        return _replay_arrivals(rec, rules, engines, states, books, batch_size, step_ms, until_ms, every_step,
                                late_after_ms, progress, t0)
    if n == 0:
        return Replay(rec, rules, books, 0, 0, 0.0, ["no valid readings to replay"])
    start, end = int(rec.ts[0]), int(rec.ts[-1])
    if until_ms is not None:
        end = max(end, int(until_ms))
    devs = _Devices.of(rec)
    silent = devs.silent_ms(rec, engines.values())
    if every_step and step_ms > 0:
        ticks = start + step_ms * np.arange(1, (end - start) // step_ms + 1, dtype=np.int64)
    else:
        ticks = tick_times(devs, silent, start, end, step_ms)
    statuses = sorted([*rec.statuses, *rec.device_statuses], key=lambda s: s.ts)
    status_i = 0
    last_report = t0
    batches = 0
    for lo, hi, tick_at in _steps(rec.ts, ticks, batch_size):
        batch = rec.batch(lo, hi) if hi > lo else None
        upto = tick_at if tick_at is not None else int(rec.ts[hi - 1])
        st_hi = status_i
        while st_hi < len(statuses) and statuses[st_hi].ts <= upto:
            st_hi += 1
        batches += batch is not None
        for name, eng in engines.items():
            if batch is not None:
                books[name].add(eng.process(batch, states[name]))
            for st in statuses[status_i:st_hi]:
                books[name].add(_on_status(eng, st, states[name]))
            if tick_at is not None:
                books[name].add(eng.tick(tick_at, states[name]))
        status_i = st_hi
        if progress and time.perf_counter() - last_report >= 2.0:
            last_report = time.perf_counter()
            progress(hi, n, last_report - t0)
    for name, eng in engines.items():  # statuses after the last reading
        for st in statuses[status_i:]:
            books[name].add(_on_status(eng, st, states[name]))
    out = Replay(rec, rules, books, start, end, time.perf_counter() - t0)
    out.warnings += _coarse_warning(devs, silent, step_ms)
    out.delivery = {"order": "measurement time", "engine_batches": batches, **_delivery_stats(rec, late_after_ms),
                    "device_statuses_replayed": _device_statuses_supported(engines.values(), rec)}
    return out


def _on_status(eng: DetectorEngine, st, states: dict) -> list[Finding]:
    """A gateway status, or a device power announcement when the engine knows them (else nothing)."""
    if isinstance(st, GatewayStatus):
        return eng.on_status(st, states)
    return eng.on_device_status(st, states)


def _device_statuses_supported(engines: Iterable[DetectorEngine], rec: Recording) -> bool | None:
    if not rec.device_statuses:
        return None
    return all(hasattr(e, "on_device_status") for e in engines)


def _group_codes(*cols: np.ndarray) -> np.ndarray:
    key = cols[0]
    for c in cols[1:]:
        key = key + "/" + c
    return np.unique(key, return_inverse=True)[1].astype(np.int64) if key.shape[0] else np.empty(0, np.int64)


def _prev_max_in_group(code: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per row (rows in processing order): the largest ``x`` of earlier rows of the same group (int64 min if none)."""
    n = x.shape[0]
    out = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    if not n:
        return out
    order = np.lexsort((np.arange(n), code))
    c, v = code[order], x[order]
    base = int(v.min())
    span = int(v.max()) - base + 1
    run = np.maximum.accumulate((v - base) + c * span)  # monotone across groups: codes dominate
    first = np.r_[True, c[1:] != c[:-1]]
    prev = np.r_[0, run[:-1]]
    res = np.where(first, np.iinfo(np.int64).min, prev - c * span + base)
    out[order] = res
    return out


@dataclass
class _ArrivalView:
    """The recording's rows in arrival order, per-message slices and what arrived late or twice."""

    perm: np.ndarray
    rx: np.ndarray
    late: np.ndarray  # per row (arrival order)
    out_of_order: np.ndarray
    duplicate: np.ndarray
    msg_lo: np.ndarray
    msg_hi: np.ndarray
    msg_rx: np.ndarray
    msg_seq: np.ndarray
    msg_late: np.ndarray

    @classmethod
    def of(cls, rec: Recording, late_after_ms: int) -> "_ArrivalView":
        perm = np.lexsort((rec.pos, rec.msg, rec.rx))
        rx, ts, msg = rec.rx[perm], rec.ts[perm], rec.msg[perm]
        series = _group_codes(rec.site[perm], rec.device[perm], rec.metric[perm])
        newest_before = _prev_max_in_group(series, ts)
        out_of_order = ts < newest_before  # a newer reading of this sensor had already arrived
        late = ((rx - ts) > late_after_ms) | out_of_order
        n = ts.shape[0]
        dup = np.zeros(n, dtype=bool)
        if n:
            o = np.lexsort((np.arange(n), rec.value[perm], ts, series))
            same = np.r_[False, (series[o][1:] == series[o][:-1]) & (ts[o][1:] == ts[o][:-1])
                         & (rec.value[perm][o][1:] == rec.value[perm][o][:-1])]
            dup[o] = same
        cuts = np.flatnonzero(np.r_[True, msg[1:] != msg[:-1]]) if n else np.empty(0, np.int64)
        hi = np.r_[cuts[1:], n] if n else np.empty(0, np.int64)
        msg_late = np.logical_or.reduceat(late | dup, cuts) if n else np.empty(0, bool)
        return cls(perm, rx, late, out_of_order, dup, cuts, hi, rx[cuts] if n else rx, msg[cuts] if n else msg,
                   msg_late)

    def ticks(self, rec: Recording, silent_by_dev: np.ndarray, dev_code: np.ndarray, start: int, end: int,
              step_ms: int) -> np.ndarray:
        """Clock steps (arrival time) at which some device can be past its deadman: after an arrival, a device
        is silent from ``max(arrival, newest ts so far + deadman)`` until its next arrival."""
        code = dev_code[self.perm]
        ts = rec.ts[self.perm]
        n = ts.shape[0]
        if not n or step_ms <= 0:
            return np.empty(0, dtype=np.int64)
        newest = np.maximum(_prev_max_in_group(code, ts), ts)
        order = np.lexsort((np.arange(n), code))
        c = code[order]
        last = np.r_[c[1:] != c[:-1], True]
        nxt = np.r_[self.rx[order][1:], 0]
        sil = silent_by_dev[c]
        gap_from = np.maximum(newest[order], self.rx[order] - sil)
        gaps = SimpleNamespace(gap_from=gap_from, gap_dev=c, gap_to=np.where(last, np.iinfo(np.int64).max, nxt))
        return tick_times(gaps, silent_by_dev, start, end, step_ms)


def _delivery_stats(rec: Recording, late_after_ms: int, view: _ArrivalView | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": rec.messages or None, "gateway_statuses": len(rec.statuses),
                           "device_statuses": len(rec.device_statuses), "late_after_s": late_after_ms / 1000}
    if not rec.has_arrivals:
        out.update({"late_readings": None, "out_of_order_readings": None, "duplicate_readings": None})
        return out
    view = view or _ArrivalView.of(rec, late_after_ms)
    out.update({"late_readings": int(view.late.sum()), "out_of_order_readings": int(view.out_of_order.sum()),
                "duplicate_readings": int(view.duplicate.sum())})
    return out


def _replay_arrivals(rec: Recording, rules, engines, states, books, batch_size: int, step_ms: int,
                     until_ms: int | None, every_step: bool, late_after_ms: int, progress, t0: float) -> Replay:
    """Messages in arrival order; consecutive on-time messages share an engine batch (as the live stages batch
    them), a message with a late or repeated reading is a batch of its own, statuses go in between, and the
    deadman clock runs in arrival time."""
    view = _ArrivalView.of(rec, late_after_ms)
    n = len(rec)
    st_arr = rec.status_arrivals
    firsts = [int(view.rx[0])] if n else []
    lasts = [int(view.rx[-1])] if n else []
    if st_arr:
        firsts.append(st_arr[0][0])
        lasts.append(st_arr[-1][0])
    if not firsts:
        return Replay(rec, rules, books, 0, 0, 0.0, ["no valid readings to replay"])
    start, end = min(firsts), max(lasts)
    if until_ms is not None:
        end = max(end, int(until_ms))
    cols = {k: getattr(rec, k)[view.perm] for k in ("site", "device", "family", "metric", "ts", "value")}
    if n:
        devs = _Devices.of(rec)
        silent = devs.silent_ms(rec, engines.values())
        if every_step and step_ms > 0:
            ticks = start + step_ms * np.arange(1, (end - start) // step_ms + 1, dtype=np.int64)
        else:
            ticks = view.ticks(rec, silent, devs.code, start, end, step_ms)
    else:
        devs, silent, ticks = None, None, np.empty(0, np.int64)
    # one timeline: (rx, seq, kind, payload); kind 0 = a message's rows, 1 = a status
    timeline = [(int(r), int(q), 0, (int(lo), int(hi), bool(lt))) for r, q, lo, hi, lt in
                zip(view.msg_rx.tolist(), view.msg_seq.tolist(), view.msg_lo.tolist(), view.msg_hi.tolist(),
                    view.msg_late.tolist())]
    timeline += [(rx, q, 1, st) for rx, q, st in st_arr]
    timeline.sort(key=lambda e: (e[0], e[1], e[2]))
    tick_list = ticks.tolist()
    ti = 0
    stats = {"batches": 0}
    cur = [None, None, False]  # lo, hi, late
    last_report = t0

    def flush():
        lo, hi, _ = cur
        if lo is None or hi <= lo:
            cur[:] = [None, None, False]
            return
        batch = ReadingBatch(*(cols[k][lo:hi] for k in ("site", "device", "family", "metric", "ts", "value")))
        stats["batches"] += 1
        for name, eng in engines.items():
            books[name].add(eng.process(batch, states[name]))
        cur[:] = [None, None, False]

    def tick(at: int):
        for name, eng in engines.items():
            books[name].add(eng.tick(at, states[name]))

    for rx, _, kind, x in timeline:
        while ti < len(tick_list) and tick_list[ti] < rx:
            flush()
            tick(tick_list[ti])
            ti += 1
        if kind == 1:
            flush()
            for name, eng in engines.items():
                books[name].add(_on_status(eng, x, states[name]))
            continue
        lo, hi, late = x
        if cur[0] is not None and (late or cur[2] or cur[1] != lo or hi - cur[0] > batch_size):
            flush()
        if cur[0] is None:
            cur[:] = [lo, hi, late]
        else:
            cur[1] = hi
        if progress and time.perf_counter() - last_report >= 2.0:
            last_report = time.perf_counter()
            progress(hi, n, last_report - t0)
    flush()
    for at in tick_list[ti:]:
        tick(at)
    out = Replay(rec, rules, books, start, end, time.perf_counter() - t0)
    if devs is not None:
        out.warnings += _coarse_warning(devs, silent, step_ms)
    out.delivery = {"order": "arrival", "engine_batches": stats["batches"], **_delivery_stats(rec, late_after_ms, view),
                    "device_statuses_replayed": _device_statuses_supported(engines.values(), rec)}
    return out


def _coarse_warning(dev: _Devices, silent: np.ndarray, step_ms: int) -> list[str]:
    """A recording sparser than a device's deadman cannot tell silence from sampling: say so, don't hide it."""
    if step_ms <= 0:
        return []
    inner = dev.gap_to != np.iinfo(np.int64).max
    gaps = dev.gap_to[inner] - dev.gap_from[inner]
    gdev = dev.gap_dev[inner]
    coarse = []
    for d in np.unique(gdev).tolist():
        g = gaps[gdev == d]
        med = float(np.median(g[g > 0])) if (g > 0).any() else 0.0
        if med > silent[d]:
            coarse.append((dev.names[d], med / 1000, silent[d] / 1000))
    if not coarse:
        return []
    name, med, sil = coarse[0]
    return [f"{len(coarse)} device(s) are recorded more coarsely than their deadman (e.g. {name}: every {med:g} s, "
            f"deadman {sil:g} s): silent-sensor faults are then judged only at clock steps ({step_ms / 1000:g} s) "
            f"that fall between readings; --tick-step 0 switches the clock off"]


# ================================================================================================ report
def book_summary(book: TicketBook, start_ms: int) -> dict[str, Any]:
    """Per-config numbers: tickets per level / kind / device, first alarm per device and kind, flaps."""
    by_level = Counter(LEVELS[t.peak_level - 1] for t in book.tickets)
    by_kind: dict[str, Counter] = {}
    by_device: dict[str, dict] = {}
    first: dict[str, Ticket] = {}
    flaps = Counter()
    for t in book.tickets:
        by_kind.setdefault(t.kind, Counter())[LEVELS[t.peak_level - 1]] += 1
        dk = f"{t.site}/{t.device}"
        d = by_device.setdefault(dk, {"site": t.site, "device": t.device, "family": t.family, "tickets": 0,
                                      "peak_level": 0, "by_level": Counter(), "flaps": 0})
        d["tickets"] += 1
        d["peak_level"] = max(d["peak_level"], t.peak_level)
        d["by_level"][LEVELS[t.peak_level - 1]] += 1
        d["flaps"] += int(t.flap)
        if t.key not in first:
            first[t.key] = t
        if t.flap:
            flaps[t.key] += 1
    by_category: dict[str, Counter] = {}
    for t in book.tickets:
        by_category.setdefault(t.category, Counter())[t.kind] += 1
    return {
        "findings": book.findings,
        "late_findings": book.late_findings,
        "late_tickets": sum(t.late for t in book.tickets),
        "by_category": {c: dict(sorted(k.items())) for c, k in sorted(by_category.items())},
        "tickets": {"total": len(book.tickets), "by_level": _levels_dict(by_level),
                    "hazard": sum(t.category == "hazard" for t in book.tickets),
                    "fault": sum(t.category == "fault" for t in book.tickets),
                    "major": sum(t.major for t in book.tickets), "open_at_end": len(book.open)},
        "by_kind": {k: {**_levels_dict(c), "total": sum(c.values())} for k, c in sorted(by_kind.items())},
        "by_device": [{**d, "peak_level": LEVELS[d["peak_level"] - 1], "by_level": _levels_dict(d["by_level"])}
                      for _, d in sorted(by_device.items())],
        "first_alarm": [{"site": t.site, "device": t.device, "kind": t.kind, "ts": t.opened_ms,
                         "after_s": (t.opened_ms - start_ms) / 1000, "level": LEVELS[t.level - 1]}
                        for _, t in sorted(first.items())],
        "flapping": {"total": sum(flaps.values()), "by_key": dict(sorted(flaps.items()))},
        "tickets_list": [t.to_dict() for t in book.tickets],
    }


def _levels_dict(c: Counter) -> dict[str, int]:
    return {lv: int(c.get(lv, 0)) for lv in LEVELS}


def _overlaps(a: Ticket, b: Ticket) -> bool:
    """Still open at the end of the replay counts as open for ever."""
    a_end = a.cleared_ms if a.cleared_ms is not None else math.inf
    b_end = b.cleared_ms if b.cleared_ms is not None else math.inf
    return a.opened_ms <= b_end and b.opened_ms <= a_end


def diff_books(base: TicketBook, cand: TicketBook) -> dict[str, Any]:
    """Match tickets of the same key that overlap in time; the rest are new (candidate only) or suppressed.

    Matching by overlap rather than by count, so "the candidate still fires at 10:02 but no longer at 14:30"
    shows as one suppressed ticket, not as an unchanged total.
    """
    b_by: dict[str, list[Ticket]] = {}
    c_by: dict[str, list[Ticket]] = {}
    for t in base.tickets:
        b_by.setdefault(t.key, []).append(t)
    for t in cand.tickets:
        c_by.setdefault(t.key, []).append(t)
    new, suppressed, changed, first = [], [], [], []
    for key in sorted(set(b_by) | set(c_by)):
        bs, cs = b_by.get(key, []), c_by.get(key, [])
        used: set[int] = set()
        for b in bs:
            j = next((j for j, c in enumerate(cs) if j not in used and _overlaps(b, c)), None)
            if j is None:
                suppressed.append(b.to_dict())
                continue
            used.add(j)
            c = cs[j]
            if c.peak_level != b.peak_level or c.major != b.major:
                changed.append({**c.to_dict(), "baseline_peak_level": LEVELS[b.peak_level - 1],
                                "candidate_peak_level": LEVELS[c.peak_level - 1], "baseline_major": b.major,
                                "candidate_major": c.major, "opened_ms": b.opened_ms})
        new += [c.to_dict() for j, c in enumerate(cs) if j not in used]
        first.append(_first_alarm_delta(key, bs, cs))
    first = [f for f in first if f["change"] != "same"]
    return {
        "summary": {"new": len(new), "suppressed": len(suppressed), "level_changes": len(changed),
                    "first_alarm_earlier": sum(f["change"] == "earlier" for f in first),
                    "first_alarm_later": sum(f["change"] == "later" for f in first),
                    "tickets_baseline": len(base.tickets), "tickets_candidate": len(cand.tickets),
                    "flaps_baseline": sum(t.flap for t in base.tickets),
                    "flaps_candidate": sum(t.flap for t in cand.tickets)},
        "new": new, "suppressed": suppressed, "level_changes": changed, "first_alarm": first,
    }


def _first_alarm_delta(key: str, bs: list[Ticket], cs: list[Ticket]) -> dict[str, Any]:
    b = bs[0].opened_ms if bs else None
    c = cs[0].opened_ms if cs else None
    if b is None:
        change = "new"
    elif c is None:
        change = "none"  # the candidate never alarms for this device/kind
    else:
        change = "same" if b == c else ("earlier" if c < b else "later")
    return {"key": key, "baseline_ms": b, "candidate_ms": c, "change": change,
            "delta_s": (c - b) / 1000 if b is not None and c is not None else None}


def build_report(r: Replay, settings: dict[str, Any]) -> dict[str, Any]:
    configs = {name: {"rules": rs.origin, "fingerprint": rs.fingerprint, **book_summary(r.books[name], r.start_ms)}
               for name, rs in r.rules.items()}
    out: dict[str, Any] = {
        "v": 1, "input": r.recording.summary(), "settings": settings,
        "replay": {"seconds": round(r.seconds, 3), "rows_per_s": round(len(r.recording) / r.seconds) if r.seconds
                   else None, "start_ms": r.start_ms, "end_ms": r.end_ms},
        "warnings": r.warnings, "configs": configs, "delivery": r.delivery,
    }
    if "baseline" in r.books and "candidate" in r.books:
        out["diff"] = diff_books(r.books["baseline"], r.books["candidate"])
    return out


# ================================================================================================ text output
def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _dur(s: float | None) -> str:
    if s is None:
        return "-"
    sign = "-" if s < 0 else "+"
    s = abs(s)
    if s >= 3600:
        return f"{sign}{s / 3600:.1f} h"
    if s >= 60:
        return f"{sign}{s / 60:.1f} min"
    return f"{sign}{s:g} s"


def table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """A plain aligned table: ops read these in a terminal or paste them into a ticket."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [fmt(cells[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells[1:]]


def render_text(rep: dict[str, Any], limit: int = 20) -> str:
    inp = rep["input"]
    lines = [f"input     {inp['source']}: {inp['rows_read']} rows read, {inp['rows_valid']} replayed, "
             f"{inp['devices']} devices, {_iso(inp['from_ms'])} .. {_iso(inp['to_ms'])}"]
    if inp["rejected"]:
        lines.append("rejected  " + ", ".join(f"{k} {v}" for k, v in inp["rejected"].items()))
        lines += [f"          e.g. {k}: {v}" for k, v in inp["rejected_examples"].items()]
    dl = rep.get("delivery") or {}
    if dl:
        parts = [f"order {dl['order']}", f"{dl['engine_batches']} engine batches"]
        if dl.get("messages"):
            parts.append(f"{dl['messages']} messages")
        if dl.get("late_readings") is not None:
            parts.append(f"{dl['late_readings']} readings delivered late (> {dl['late_after_s']:g} s or out of order: "
                         f"{dl['out_of_order_readings']}), {dl['duplicate_readings']} duplicates")
        parts.append(f"statuses {dl['gateway_statuses']} gateway, {dl['device_statuses']} device"
                     + (" (not replayed: the engine has no on_device_status)"
                        if dl.get("device_statuses_replayed") is False else ""))
        lines.append("delivery  " + "; ".join(parts))
    for w in rep["warnings"]:
        lines.append(f"warning   {w}")
    for name, c in rep["configs"].items():
        lines += ["", f"== {name}: {c['rules']} (fingerprint {c['fingerprint']})"]
        t = c["tickets"]
        lines.append(f"tickets   {t['total']} ({t['hazard']} hazard, {t['fault']} fault, {t['major']} major, "
                     f"{t['open_at_end']} still open at the end); flaps {c['flapping']['total']}; "
                     f"findings {c['findings']}; late findings {c['late_findings']} "
                     f"({c['late_tickets']} tickets opened late)")
        for cat, kinds in c["by_category"].items():
            lines.append(f"{cat:9} " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
        if c["by_kind"]:
            lines += table(["kind", "yellow", "orange", "red", "total"],
                           [[k, v["yellow"], v["orange"], v["red"], v["total"]] for k, v in c["by_kind"].items()])
        if c["by_device"]:
            lines.append("")
            rows = [[f"{d['site']}/{d['device']}", d["family"], d["tickets"], d["by_level"]["yellow"],
                     d["by_level"]["orange"], d["by_level"]["red"], d["peak_level"], d["flaps"]]
                    for d in sorted(c["by_device"], key=lambda d: -d["tickets"])[:limit]]
            lines += table(["device", "family", "tickets", "yellow", "orange", "red", "peak", "flaps"], rows)
        if c["first_alarm"]:
            lines.append("")
            rows = [[f"{f['site']}/{f['device']}", f["kind"], f["level"], _iso(f["ts"]), _dur(f["after_s"])]
                    for f in c["first_alarm"][:limit]]
            lines += table(["device", "kind", "level", "first alarm", "after start"], rows)
    if "diff" in rep:
        lines += _render_diff(rep["diff"], limit)
    return "\n".join(lines)


def _render_diff(d: dict[str, Any], limit: int) -> list[str]:
    s = d["summary"]
    lines = ["", "== diff candidate vs baseline",
             f"tickets {s['tickets_baseline']} -> {s['tickets_candidate']}: {s['new']} new, {s['suppressed']} "
             f"suppressed, {s['level_changes']} level changes; first alarm {s['first_alarm_earlier']} earlier, "
             f"{s['first_alarm_later']} later; flaps {s['flaps_baseline']} -> {s['flaps_candidate']}"]
    for title, items in (("suppressed (baseline fired, candidate would not)", d["suppressed"]),
                         ("new (candidate fires, baseline did not)", d["new"])):
        if items:
            lines += ["", title]
            lines += table(["device", "kind", "peak", "opened", "cleared", "value", "rule"],
                           [[f"{t['site']}/{t['device']}", t["kind"], t["peak_level"], _iso(t["opened_ms"]),
                             _iso(t["cleared_ms"]), t["peak_value"], t["rule"]] for t in items[:limit]])
            if len(items) > limit:
                lines.append(f"... {len(items) - limit} more (--json for all)")
    if d["level_changes"]:
        lines += ["", "level changes"]
        lines += table(["device", "kind", "opened", "baseline", "candidate"],
                       [[f"{t['site']}/{t['device']}", t["kind"], _iso(t["opened_ms"]), t["baseline_peak_level"],
                         t["candidate_peak_level"]] for t in d["level_changes"][:limit]])
    moved = [f for f in d["first_alarm"] if f["change"] in ("earlier", "later")]
    if moved:
        lines += ["", "first alarm moved"]
        lines += table(["device/kind", "baseline", "candidate", "change"],
                       [[f["key"], _iso(f["baseline_ms"]), _iso(f["candidate_ms"]), _dur(f["delta_s"])]
                        for f in moved[:limit]])
    return lines


# ================================================================================================ simulated day
def generate_day(out: str | Path, day: str = "2024-05-06", interval_s: float = 60.0, scenario: str = "pit-creep",
                 at_s: float = 10 * 3600, sites: int = 1, devices: int = 1, seed: int = 7) -> int:
    """Write a recorded day of simulated readings (CSV) with a hazard episode; returns the number of rows.

    Uses the live simulator's signals and scenarios, so tuning is shown on the same data the demo produces.
    The simulator draws its daily cycle from the wall clock; here that clock is pinned to the simulated time
    of each step, so the file has a real 24-hour cycle and the same seed always writes the same file.
    """
    import ingest.simulator as simmod

    start_ms = int(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp() * 1000)
    sim = simmod.Simulator(simmod.SimConfig(sites=sites, devices_per_family=devices, interval_s=interval_s,
                                            scenario=scenario, scenario_at_s=at_s, seed=seed))
    labels = [(sim.site_ids[s], sim.device_id(fam, d), fam, metric, FAMILIES[fam][metric])
              for s, fam, d, metric, *_ in sim.rows]
    steps = int(round(86400 / interval_s))
    clock = _PinnedClock()
    real_time, simmod.time = simmod.time, clock
    n = 0
    try:
        with open(out, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow([*CSV_COLUMNS, "unit"])
            for k in range(steps):
                t = k * interval_s
                ts = start_ms + int(round(t * 1000))
                clock.now = ts / 1000
                values, mask = sim.values_at(t)
                for (site, dev, fam, metric, unit), v, on in zip(labels, values.tolist(), mask.tolist()):
                    if on:
                        w.writerow([site, dev, fam, metric, ts, f"{v:.3f}", unit])
                        n += 1
    finally:
        simmod.time = real_time
    return n


class _PinnedClock:
    """Stands in for the ``time`` module inside the simulator while a day is generated (see ``generate_day``)."""

    def __init__(self):
        self.now = 0.0

    def time(self) -> float:
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


# ================================================================================================ command
def _settings(ctx: click.Context):
    obj = ctx.find_root().obj if ctx else None
    if isinstance(obj, dict) and obj.get("settings") is not None:
        return obj["settings"]
    from sitewatch.settings import Settings

    return Settings()


def current_rules_dir(settings) -> Path | None:
    """The config the workers run: $SW_RULES_PATH, else ./config/rules, else none (built-in defaults)."""
    if settings.rules_path:
        return Path(settings.rules_path)
    p = Path("config/rules")
    return p if p.exists() else None


def _load(path: Path | None, what: str) -> RuleSet:
    if path is None:
        return RuleSet.default()
    try:
        return load_rules(path)
    except RulesError as e:
        click.echo(f"{what} rules {path} are invalid:", err=True)
        for line in str(e).splitlines():
            click.echo(f"  {line}", err=True)
        raise SystemExit(1) from None


def _parse_time(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return _ts(value)
    except InvalidReading as e:
        raise click.BadParameter(f"{e.detail} (use RFC 3339 like 2024-05-06T08:00:00Z, or epoch ms)",
                                 param_hint=name) from None


def parse_span(text: str | None) -> int | None:
    """``90s``, ``15m``/``15min``, ``6h``, ``3d`` or plain seconds → milliseconds."""
    if text is None:
        return None
    t = text.strip().lower()
    for suffix, ms in (("min", 60_000), ("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)):
        if t.endswith(suffix):
            try:
                return int(float(t[: -len(suffix)]) * ms)
            except ValueError:
                break
    try:
        return int(float(t) * 1000)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use e.g. 90s, 15m, 6h, 3d", param_hint="--span") from None


def parse_params(items) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values read as JSON when they parse (numbers, true/false, lists), else text."""
    out: dict[str, Any] = {}
    for it in items or ():
        k, sep, v = it.partition("=")
        if not sep or not k:
            raise click.BadParameter(f"{it!r}: use KEY=VALUE", param_hint="--param")
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def generate_scenario(name: str, seed: int, start: str | int, span: str | None, params) -> Any:
    """A field scenario (``ingest.fieldstreams``) from command-line style arguments."""
    from ingest.fieldstreams import generate, scenario_names

    if name not in scenario_names():
        raise click.BadParameter(f"{name!r} is not a field scenario; choose from {', '.join(scenario_names())} "
                                 "(live simulator scenarios go with --generate-day)", param_hint="--scenario")
    start_ms = start if isinstance(start, int) else _parse_time(start, "--start")
    try:
        return generate(name, start_ms=start_ms, duration_ms=parse_span(span), seed=seed,
                        **(params if isinstance(params, dict) else parse_params(params)))
    except TypeError as e:
        raise click.BadParameter(str(e), param_hint="--param") from None


def _progress(done: int, total: int, seconds: float) -> None:
    rate = done / seconds if seconds else 0
    click.echo(f"backtest: {done:,}/{total:,} rows ({100 * done / max(total, 1):.0f} %), {rate:,.0f} rows/s", err=True)


@click.command()
@click.option("--csv", "csv_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="recorded readings: site,device,family,metric,ts,value[,unit]")
@click.option("--parquet", "parquet_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="same columns as Parquet (needs pyarrow)")
@click.option("--kafka-topic", help=f"replay a time range of packed readings from this topic (e.g. {TOPIC_READINGS})")
@click.option("--capture", "capture_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="MQTT messages as they arrived, JSON lines {rx, topic, payload} (sitewatch simulate --out)")
@click.option("--from", "t_from", help="start of the range (RFC 3339 or epoch ms); required with --kafka-topic")
@click.option("--to", "t_to", help="end of the range, exclusive; required with --kafka-topic. The deadman clock runs "
              "on to it, so a sensor that stops before --to is reported silent")
@click.option("--bootstrap", help="Kafka bootstrap servers (default: the settings' kafka_bootstrap)")
@click.option("--rules", "rules_dir", type=click.Path(exists=True, path_type=Path),
              help="candidate rules directory (required)")
@click.option("--baseline", "baseline_dir", type=click.Path(exists=True, path_type=Path),
              help="rules to compare with (default: $SW_RULES_PATH, ./config/rules or the built-in defaults)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable report on stdout")
@click.option("--batch-size", default=DEFAULT_BATCH, show_default=True, help="rows per engine batch")
@click.option("--tick-step", default=DEFAULT_TICK_S, show_default=True,
              help="simulated clock step in seconds for silent-sensor judgement; 0 = no clock")
@click.option("--flap-window", default=DEFAULT_FLAP_S, show_default=True,
              help="a raise→clear→raise inside this many seconds counts as a flap")
@click.option("--limit", default=20, show_default=True, help="rows per table in the text report")
@click.option("--generate-day", "generate_out", type=click.Path(dir_okay=False, path_type=Path),
              help="instead of a backtest: write a simulated recorded day to this CSV and exit")
@click.option("--scenario", default=None,
              help="a field scenario to generate and backtest (pit-cadence, crane-nightly, gateway-outage, "
                   "buffered-flush, field-mix); with --generate-day: the hazard episode [pit-creep]")
@click.option("--seed", default=7, show_default=True, help="field scenario seed")
@click.option("--start", "scenario_start", default="2024-05-06T00:00:00Z", show_default=True,
              help="field scenario start (event time, RFC 3339 or epoch ms)")
@click.option("--span", help="field scenario length, e.g. 6h, 3d (default: the scenario's own)")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="field scenario parameter, e.g. --param crane_interval_s=10 (repeatable)")
@click.option("--arrival-order/--ts-order", "arrival_order", default=None,
              help="replay in ARRIVAL order (batches as they arrived, late flushes included, clock in arrival "
                   "time) — what the live worker sees; default for --scenario/--capture. --ts-order sorts by "
                   "measurement time (default for CSV/Parquet/Kafka)")
@click.option("--late-after", default=DEFAULT_LATE_AFTER_MS / 1000, show_default=True,
              help="seconds after its ts from which a reading counts as delivered late")
@click.option("--every-step", is_flag=True, help="tick the deadman clock at every --tick-step, not only where a "
              "configured deadman can pass (slower; use when the engine learns per-device cadences)")
@click.option("--interval", default=60.0, show_default=True, help="seconds between readings for --generate-day")
@click.option("--day", default="2024-05-06", show_default=True, help="UTC date for --generate-day")
@click.pass_context
def backtest(ctx, csv_path, parquet_path, kafka_topic, capture_path, t_from, t_to, bootstrap, rules_dir, baseline_dir,
             as_json, batch_size, tick_step, flap_window, limit, generate_out, scenario, seed, scenario_start, span,
             params, arrival_order, late_after, every_step, interval, day):
    """Replay recorded readings through candidate rules and report what would have fired, vs the current rules.

    \b
    Examples:
      sitewatch backtest --generate-day day.csv
      sitewatch backtest --csv day.csv --rules /tmp/candidate
      sitewatch backtest --kafka-topic sw.readings --from 2024-05-06T00:00:00Z --to 2024-05-07T00:00:00Z \\
                         --rules /tmp/candidate --json
      sitewatch backtest --scenario buffered-flush --rules /tmp/candidate          # arrival order
      sitewatch backtest --capture site.jsonl --rules /tmp/candidate --to 2024-05-09T00:00:00Z
    """
    if generate_out is not None:
        scenario = scenario or "pit-creep"
        n = generate_day(generate_out, day=day, interval_s=interval, scenario=scenario)
        click.echo(f"wrote {n} readings ({scenario}, every {interval:g} s on {day}) to {generate_out}")
        return
    settings = _settings(ctx)
    sources = [x for x in (csv_path, parquet_path, kafka_topic, capture_path, scenario) if x]
    if len(sources) != 1:
        raise click.UsageError("give exactly one of --csv, --parquet, --kafka-topic, --capture, --scenario "
                               "(or --generate-day)")
    if rules_dir is None:
        raise click.UsageError("--rules DIR (the candidate config) is required")
    if batch_size < 1:
        raise click.BadParameter("must be >= 1", param_hint="--batch-size")
    lo, hi = _parse_time(t_from, "--from"), _parse_time(t_to, "--to")
    if kafka_topic and (lo is None or hi is None):
        raise click.UsageError("--kafka-topic needs --from and --to")
    if lo is not None and hi is not None and hi <= lo:
        raise click.BadParameter("--to must be after --from", param_hint="--to")
    candidate = _load(rules_dir, "candidate")
    base_dir = baseline_dir or current_rules_dir(settings)
    baseline = _load(base_dir, "baseline")
    t0 = time.perf_counter()
    until = hi
    manifest = None
    if csv_path:
        rec = load_csv(csv_path, lo, hi)
    elif parquet_path:
        rec = load_parquet(parquet_path, lo, hi)
    elif capture_path:
        rec = load_capture(capture_path, lo, hi)
    elif scenario:
        fs = generate_scenario(scenario, seed, scenario_start, span, params)
        manifest = fs.manifest
        rec = load_events(fs.events, f"scenario {scenario} (seed {seed})", lo, hi)
        until = until if until is not None else max(manifest.end_ms, fs.last_arrival_ms or 0)
    else:
        rec = load_kafka(bootstrap or settings.kafka_bootstrap, kafka_topic, lo, hi,
                         kafka_options=settings.kafka_options())
    if arrival_order is None:
        arrival_order = bool(capture_path or scenario)
    if arrival_order and not rec.has_arrivals:
        raise click.UsageError(f"{rec.source} has no arrival times: --arrival-order needs --capture, --scenario, "
                               "--kafka-topic or a CSV with an arrival_ms column")
    click.echo(f"backtest: loaded {len(rec):,} readings from {rec.source} in {time.perf_counter() - t0:.1f} s",
               err=True)
    r = replay(rec, {"baseline": baseline, "candidate": candidate}, batch_size, tick_step, flap_window, _progress,
               every_step=every_step, until_ms=until, arrival_order=arrival_order,
               late_after_ms=int(late_after * 1000))
    click.echo(f"backtest: replayed {len(rec):,} readings x 2 configs in {r.seconds:.1f} s "
               f"({len(rec) / r.seconds if r.seconds else 0:,.0f} rows/s)", err=True)
    rep = build_report(r, {"batch_size": batch_size, "tick_step_s": tick_step, "flap_window_s": flap_window,
                           "baseline": str(base_dir) if base_dir else "built-in defaults",
                           "candidate": str(rules_dir), "arrival_order": bool(arrival_order),
                           "clock_until_ms": until})
    if manifest is not None:
        rep["scenario"] = {"name": manifest.scenario, "seed": manifest.seed, "start_ms": manifest.start_ms,
                           "end_ms": manifest.end_ms, "hazards": [h.__dict__ for h in manifest.hazards],
                           "silences": [x.__dict__ for x in manifest.silences],
                           "outages": [{k: v for k, v in o.__dict__.items() if k != "devices"} | {"devices": len(o.devices)}
                                       for o in manifest.outages]}
    if as_json:
        click.echo(json.dumps(rep, indent=1, ensure_ascii=False))
    else:
        click.echo(render_text(rep, limit))


if __name__ == "__main__":  # pragma: no cover
    backtest()
