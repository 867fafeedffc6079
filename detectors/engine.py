"""The detector engine: one call per batch, numpy over rows, Python only per device / per finding.

Flow of ``process``:

1. rows are tagged with a device number and a fixed (family, metric) code, sorted by (device, metric, ts);
   exact duplicates (at-least-once redelivery) are dropped, and readings not newer than the last processed
   reading of their series are set aside for the *late lane* (step 5) — so a late reading can neither corrupt
   a live rate nor clear a live alarm;
2. sensor faults (range, spike, flatline) are judged per series; faulty readings are withheld from hazards;
3. every check of the registry runs over the rows of its metric, all devices at once, producing a level per row
   (hysteresis and hold included);
4. per (device, kind) the levels of the kind's metrics are combined (the worst current one wins), and a finding
   is emitted where that level changes, or every ``reassert`` of reading time while it stays raised; each
   finding carries its episode (peak value and time, first and last breach, worst level);
5. late readings (a gateway's buffer flushed after an outage) that fall in a *gap* of the device's covered event
   time (``detectors.coverage``) are evaluated in measurement-time order on a late lane: a fresh state seeded
   with the device's baselines and the rate history from before the gap. Its findings are back-dated, marked
   late with the arrival delay and the outage window; its clears never clear what live readings hold. Late
   readings inside covered time are duplicates and change nothing (counted in ``stats``).

State per device is a small JSON-able dict (see ``_new_state``); its size does not grow with the reading rate.
The per-series part is columnar: ``m = [ints, floats]``, one fixed block per metric of the device's family (in
``FAMILIES`` order), so a batch gathers and scatters it with a handful of array operations instead of a Python
loop per series. Devices whose effective rules are the same (no device-level override) share one parameter row:
the numbers a check compares against are gathered from per-plan numpy tables by fancy indexing.

In the worker the engine is *resident*: what it keeps per device between batches lives in ``detectors.store``
(series blocks and pools of check states, gaps, covered time, kind states and outage records, as arrays).
"""

from __future__ import annotations

import gc
import math
from bisect import bisect_left
from dataclasses import dataclass, replace
from itertools import chain, compress, count
from operator import attrgetter, not_
from typing import Any

import numpy as np

from detectors import coverage, deadman
from detectors.calendar import Calendar
from detectors.faults import SeriesCarry, sensor_faults
from detectors.grouped import ffill_index, group_layout, prev_in_group
from detectors.hysteresis import HystCarry, graded_levels, held
from sitewatch.findings import Finding, Level
from detectors.model import ReadingBatch
from detectors.plan import (CHECKS, FAM_CODE, FAULT_KINDS, FM_CODE, FM_LIST, FM_SLOT, KIND_CODE,
                            KIND_SLOTS, KINDS, MAX_SLOTS, DevicePlan, build_plan)
from detectors.store import (_EMPTY_F, _EMPTY_I, _FAM_NM, _KF, _KI, _NAN, _NC, _NF, _NI, _NK, _NM_BY_CODE, _NO_TS,
                              _SeriesStore, _block_rows, _f, _nullable)
from detectors.rate import hist_arrays, hist_lists, windowed_rate
from detectors.families.electrical import PHASES
from sitewatch.contracts import FAMILIES, DeviceStatus, GatewayStatus
from sitewatch.rules import LEVEL_NAMES, RuleSet

# v2: series state is columnar per device (``m = [ints, floats]``). A v1 state (``m = {metric: [13 values]}``)
# is converted when read, so an upgrade keeps every latch, baseline and late-reading guard.
STATE_VERSION = 2
_READABLE = (1, 2)
_NFM = len(FM_LIST)
_LEVELS = tuple(Level)
_LNAMES = ("clear",) + tuple(LEVEL_NAMES)


class _Codes(dict):
    """Names to codes, -1 for a name not in it: a batch looks up every row's metric with ``__getitem__`` (a map
    over one list, ~20 % faster than ``get`` with a default)."""

    def __missing__(self, key: Any) -> int:
        return -1


_METRIC_CODE = _Codes({m: i for i, m in enumerate(sorted({m for ms in FAMILIES.values() for m in ms}))})
_FM_TABLE = np.full((len(FAMILIES) + 1, len(_METRIC_CODE) + 1), -1, dtype=np.int64)  # [-1] row/col: unknown
for _i, (_fam, _m) in enumerate(FM_LIST):
    _FM_TABLE[FAM_CODE[_fam], _METRIC_CODE[_m]] = _i
_FM_SLOT = np.array(FM_SLOT, dtype=np.int64)
_KIND_SLOT_CHECK: dict[tuple[str, int], int] = {(c.kind, c.slot): c.index for c in CHECKS}
_CHECKS_BY_FM: dict[int, list[int]] = {}
for _c in CHECKS:
    if _c.metric != "*":
        _CHECKS_BY_FM.setdefault(FM_CODE[f"{_c.family}/{_c.metric}"], []).append(_c.index)
_PHASE_FM = [FM_CODE[f"electrical/{p}"] for p in PHASES]
_IMBALANCE = next(c.index for c in CHECKS if c.mode == "imbalance")
_PHASE_SKEW_MS = 120_000  # phase currents measured further apart than this (one before an outage, one after) are not compared
_NO_HIST: list = [[], []]  # read-only: a rate check without samples yet
_LEVEL, _CHANGE, _RATE, _CHARGING, _IMBAL = range(5)
_MODE_CODE = {"level": _LEVEL, "change": _CHANGE, "rate": _RATE, "charging": _CHARGING, "imbalance": _IMBAL}
_FAULT_BITS = ("fault.out_of_range", "fault.spike", "fault.flatline")
# device health, as shown on the API, the ledger and the dashboards: off (announced, or outside working time
# for a calendar device), silent (a deadman fault), faulty (a sensor fault raised), ok
HEALTH = ("ok", "off", "silent", "faulty")
_OK, _OFF, _SILENT, _FAULTY = range(4)
_FAULT_KIND_NAMES = frozenset(_FAULT_BITS)
_FAULT_KC = np.array(sorted(KIND_CODE[k] for k in _FAULT_BITS), dtype=np.int64)
_FINDING_ORDER = attrgetter("ts", "site", "device", "kind")  # a batch's findings: by time, then device and kind


def _j(x: float) -> float | None:
    """JSON has no NaN: a missing number is stored as null."""
    x = float(x)
    return None if math.isnan(x) else x


# The values of an idle device, shared by every state that holds them (~200 B of heap per device): a state's lists
# are never changed in place — every writer puts a new list in (``ns["sil"] = [...]``) — so sharing is safe.
_SIL0: list = [0, 0, 0]
_HS0: list = [_OK, 0]
_NONE0: list = []
_K0: dict = {}  # no kind raised; ``_emit`` copies a state's kinds before it writes (this one, or a batch's old ones)


def _new_state(family: str) -> dict:
    nm = _FAM_NM[family]
    # lt: newest reading; dl: silent deadline; due: when the clock must look again; sil: [level, since, last
    # assert]; cad: last gaps (ms) for the learned cadence; cov: covered event time (detectors.coverage); og:
    # outages heard live [last before, first after]; via: the gateway it was last heard through; off: announced power-off time; offat: off-hours start; hs: [health,
    # since]; sx: last silent episode [quiet from, resumed at, raised at] so buffered data can retract it
    return {"v": STATE_VERSION, "fam": family, "lt": None, "dl": None, "due": None, "sil": _SIL0,
            "cad": _NONE0, "cov": _NONE0, "via": None, "og": _NONE0, "off": None, "offat": None, "hs": _HS0, "sx": None,
            "m": [_EMPTY_I * nm, _EMPTY_F * nm], "c": {}, "k": _K0}


def _upgrade(st: Any) -> dict | None:
    """A stored state in the current layout, or None (treated as a fresh device) if it cannot be read."""
    if not isinstance(st, dict) or st.get("fam") not in FAMILIES:
        return None
    v = st.get("v")
    if v == STATE_VERSION:
        m = st.get("m")
        nm = _FAM_NM[st["fam"]]
        if isinstance(m, list) and len(m) == 2 and len(m[0]) == nm * _NI and len(m[1]) == nm * _NF:
            return st
        return None
    if v == 1:  # m: {metric: [t, p1, p2, p1_ts, sus, frun, fstart, oor_bit, oor_good, spk_bit, spk_good, flat_bit,
        #                     baseline]}
        ints: list = []
        flts: list = []
        old = st.get("m") or {}
        for metric in FAMILIES[st["fam"]]:
            ms = old.get(metric)
            if ms:
                ints += [int(ms[0])] + [int(x) for x in ms[3:12]]
                flts += [ms[1], ms[2], ms[12]]
            else:
                ints += _EMPTY_I
                flts += _EMPTY_F
        ns = dict(st)
        ns["v"] = STATE_VERSION
        ns["m"] = [ints, flts]
        return ns
    return None


class IdleState:
    """A resident device's state while it holds nothing but its times — ``v fam lt dl due``, every other field at
    its default or in the store: a healthy device between batches, nearly the whole fleet. A slotted object of
    64 B instead of a 184 B dict, because the worker keeps one state per device for as long as it owns the
    partition (docs/performance.md, "heap per device"). The resident engine hands it back for such a device
    and takes it wherever it takes a resident state; ``export_state`` (and ``as_dict``) give the dict."""

    __slots__ = ("fam", "lt", "dl", "due")

    def __init__(self, fam: str, lt: int | None, dl: int | None, due: int | None):
        self.fam, self.lt, self.dl, self.due = fam, lt, dl, due

    def as_dict(self) -> dict:
        return {"v": STATE_VERSION, "fam": self.fam, "lt": self.lt, "dl": self.dl, "due": self.due}

    def __repr__(self) -> str:
        return f"IdleState({self.as_dict()!r})"


_IDLE_KEYS = frozenset(("v", "fam", "lt", "dl", "due"))


def _idled(ns: dict) -> Any:
    """A state dict holding nothing but ``v`` (the current one), ``fam``, ``lt``, ``dl`` and ``due``, as an
    ``IdleState``; any other dict as it is."""
    if len(ns) == 5 and ns.keys() == _IDLE_KEYS and ns["v"] == STATE_VERSION:
        return IdleState(ns["fam"], ns["lt"], ns["dl"], ns["due"])
    return ns


def _as_dict(st: Any) -> Any:
    """A state as a dict (an ``IdleState`` expanded; anything else as it is)."""
    return st.as_dict() if type(st) is IdleState else st


class _SharedPlan:
    """A device's plan and its place in the engine's tables — the one context entry the engine keeps per device:
    its site and name, and the plan it shares (of its family with the built-in rules, of its (site, family) with
    a site's family block, or its own with a device block) for everything else.

    One ``DevicePlan`` (and ``DeviceRules``) per device was ~1.7 KB of heap per device at fleet size, one per
    (site, family) still ~0.4 KB at 100 devices per site; this is one small object. The fields read per device on
    the hot path are copied; the rest is looked up on the plan (site and name are read off the key: a finding's
    fields). ``fc``: family code; ``pid``: parameter-table row; ``row``: its block in the resident store (the
    store's key → row map is these objects, not a dict of its own)."""

    __slots__ = ("_p", "key", "family", "gateway", "fc", "pid", "row")

    def __init__(self, base: DevicePlan, key: str, gateway: str | None, pid: int, row: int = -1):
        self._p = base
        self.row = row  # the first row of its block in the resident store, -1 without one
        self.key, self.family = key, base.family  # key: site + "/" + device, the string the caches share
        self.gateway = gateway
        self.fc, self.pid = FAM_CODE[base.family], pid

    @property
    def site(self) -> str:
        return self.key.partition("/")[0]

    @property
    def device(self) -> str:
        return self.key.partition("/")[2]

    @property
    def follows_calendar(self) -> bool:
        return self._p.follows_calendar

    @property
    def nm(self) -> int:
        return _FAM_NM[self.family]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._p, name)


def _episodes_at(rows, ep_lo, agg, first_idx, grp, carry_l, has_ks, k_at, k_i, k_f, peak_at, worst_at, e_ts, x_e,
                 v_e) -> list[dict | None]:
    """``_emit``'s ``episode`` for these rows (resident: the stored episodes are rows of the kinds pool), with array
    operations: the episode a row is in (or, for a clear, the one it ends) up to and including it — the stored one
    where it goes on (peak, last breach and worst merged with the rows'), else the rows' own, else None."""
    n = rows.shape[0]
    if not n:
        return []
    lo = ep_lo[rows]
    hi = np.where(agg[rows] > 0, rows + 1, rows)
    q = np.maximum(hi - 1, 0)
    own = (hi > lo) & (agg[q] > 0)  # raised rows of its own in this batch
    g = grp[rows]
    go_on = (lo == first_idx[rows]) & (carry_l[g] > 0) & has_ks[g]
    j = np.where(go_on, k_at[g], 0)
    if k_i.shape[0]:
        go_on &= k_i[j, 3] != 0
    pk = peak_at[q]
    # start, peak, peak_ts, peak_reading, first_breach, last_breach, worst (the state's key order)
    i_c = np.column_stack([e_ts[lo], e_ts[pk], e_ts[lo], e_ts[q], worst_at[q]])
    f_c = np.column_stack([x_e[pk], v_e[pk]])
    w = np.flatnonzero(go_on)
    if w.shape[0]:
        jw = j[w]
        o_i = k_i[jw][:, [4, 5, 6, 7, 8]]
        o_f = k_f[jw, MAX_SLOTS:].copy()
        mw = own[w]
        better = mw & (np.where(np.isnan(f_c[w, 0]), -np.inf, f_c[w, 0]) > np.where(np.isnan(o_f[:, 0]), -np.inf,
                                                                                    o_f[:, 0]))
        o_f[better] = f_c[w[better]]
        o_i[better, 1] = i_c[w[better], 1]
        o_i[mw, 3] = i_c[w[mw], 3]
        o_i[mw, 4] = np.maximum(o_i[mw, 4], i_c[w[mw], 4])
        i_c[w], f_c[w] = o_i, o_f
    out: list[dict | None] = []
    for has, (st, pts, fb, lb, wo), (pk_, pr) in zip((own | go_on).tolist(), i_c.tolist(), f_c.tolist()):
        out.append({"start": st, "peak": None if pk_ != pk_ else pk_, "peak_ts": pts,
                    "peak_reading": None if pr != pr else pr, "first_breach": fb, "last_breach": lb,
                    "worst": wo} if has else None)
    return out


def _base_plan(p: Any) -> DevicePlan:
    """The ``DevicePlan`` behind a device's context (or the plan itself)."""
    return p._p if type(p) is _SharedPlan else p


@dataclass
class _Res:
    """Output of one check (or one fault kind) over its rows, kept until findings are written."""

    check: int  # check index, or -1 - fault kind code for faults
    rows: np.ndarray  # indices into the sorted batch arrays
    level: np.ndarray
    x: np.ndarray
    lines: np.ndarray | None = None  # (n, 3)
    extra: dict | None = None


class _Tables:
    """Per-plan parameters as arrays: row ``pid`` of each table belongs to one distinct effective rule set."""

    def __init__(self, plans: list[DevicePlan]):
        P = len(plans)
        self.lo = np.full((P, _NFM), np.nan)
        self.hi = np.full((P, _NFM), np.nan)
        self.step = np.full((P, _NFM), np.nan)
        self.flat_ms = np.full((P, _NFM), np.nan)
        self.eps = np.zeros((P, _NFM))
        self.cag = np.zeros(P, np.int64)
        self.flvl = np.zeros((len(_FAULT_BITS), P), np.int8)
        self.reassert = np.ones(P, np.int64)
        self.on = np.zeros((P, _NC), bool)
        self.lines = np.full((P, _NC, 3), np.nan)
        self.clear = np.full((P, _NC, 3), np.nan)
        self.hold_n = np.ones((P, _NC), np.int64)
        self.hold_ms = np.zeros((P, _NC), np.int64)
        self.direction = np.zeros((P, _NC), np.int64)
        self.baseline = np.full((P, _NC), np.nan)  # NaN: the first reading received is the zero
        self.window_ms = np.zeros((P, _NC), np.int64)
        self.bucket_ms = np.ones((P, _NC), np.int64)
        self.consecutive = np.ones((P, _NC), np.int64)
        self.per_ms = np.ones((P, _NC))
        self.min_load = np.zeros((P, _NC))
        # cadence and deadman
        self.min_gaps = np.array([p.min_gaps for p in plans], dtype=np.int64)
        self.def_iv = np.array([p.default_interval_ms for p in plans], dtype=np.int64)
        self.silent_after = np.array([p.silent_after for p in plans], dtype=np.float64)
        self.floor_ms = np.array([p.silent_floor_ms for p in plans], dtype=np.float64)
        self.ceiling_ms = np.array([p.silent_ceiling_ms for p in plans], dtype=np.float64)
        self.gw_grace = np.array([p.gateway_grace_ms for p in plans], dtype=np.int64)
        self.follows_cal = np.array([bool(p.follows_calendar) for p in plans], dtype=bool)
        for i, p in enumerate(plans):
            for metric, s in p.sensors.items():
                fm = FM_CODE[f"{p.family}/{metric}"]
                self.lo[i, fm], self.hi[i, fm], self.step[i, fm] = s.lo, s.hi, s.step
                self.flat_ms[i, fm], self.eps[i, fm] = s.flat_ms, s.eps
            self.cag[i] = p.clear_after_good
            for k, kind in enumerate(_FAULT_BITS):
                self.flvl[k, i] = p.fault_levels[kind]
            self.reassert[i] = p.reassert_ms
            for ci, prm in p.checks.items():
                self.on[i, ci] = True
                self.lines[i, ci] = prm.lines
                self.clear[i, ci] = prm.clear_lines
                self.hold_n[i, ci] = prm.hold_count
                self.hold_ms[i, ci] = prm.hold_ms
                self.direction[i, ci] = prm.direction
                if prm.baseline is not None:
                    self.baseline[i, ci] = prm.baseline
                self.window_ms[i, ci] = prm.window_ms
                self.bucket_ms[i, ci] = prm.bucket_ms
                self.consecutive[i, ci] = prm.consecutive
                self.per_ms[i, ci] = prm.per_ms
                self.min_load[i, ci] = prm.min_load


def _code(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes 0..U-1 in order of first appearance, and the row where each code first appears. One pass of dict
    lookups (``setdefault`` gives each value's first row; those rows, in order, number the codes), ~20 % less than
    a pass to collect the distinct values and one to look them up.

    Where the values come in runs (a device's frame: a reading per metric, one after the other; ~5 rows per run
    in the periodic bench), each run is looked up once (half the time there); a sample of the first rows decides,
    so values without runs (random arrivals) pay the comparison of 1,000 rows, not of every row."""
    n = values.shape[0]
    k = min(n, 1024)
    if n > 2 * k and 3 * np.count_nonzero(values[1:k] != values[:k - 1]) < 2 * k:
        head = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        code, first = _code(values[head])
        return np.repeat(code, np.diff(np.r_[head, n])), head[first]
    seen: dict = {}
    at = np.fromiter(map(seen.setdefault, values.tolist(), count()), np.int64, n)
    first = np.fromiter(seen.values(), np.int64, len(seen))
    code = np.empty(len(values), dtype=np.int64)
    code[first] = np.arange(first.shape[0])
    return code[at], first


def _sorted_pairs(d: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (device, time) pairs of the rows in (device, time) order. One key ``d × span + t``: a stable sort of
    int64 keys is a merge of the runs the rows already come in (each series in time order), several times
    faster than a lexsort; the lexsort where the key would not fit."""
    if not d.shape[0]:
        return d, t
    t0 = int(t.min())
    span = int(t.max()) - t0 + 1
    if (int(d.max()) + 1) * span >= 1 << 62 or int(d.min()) < 0:
        o = np.lexsort((t, d))
        return d[o], t[o]
    k = np.sort(d * span + (t - t0), kind="stable")
    return k // span, k % span + t0


def _row_order(d: np.ndarray, fm: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``np.lexsort((t, fm, d))`` (the same permutation: ties keep their order). A series' readings nearly always
    arrive in time order: a stable sort by series alone — radix sorts of the two 16-bit halves of its number — is
    then that permutation (checked: times non-decreasing within each series); ~4x faster than the stable argsort
    of one int64 key on random arrivals, which is the fallback (and the lexsort where that key would not fit)."""
    if not d.shape[0]:
        return np.zeros(0, dtype=np.int64)
    sk = d * _NFM + fm
    top = int(sk.max())
    if top < 1 << 32:
        o = np.argsort((sk & 0xFFFF).astype(np.uint16), kind="stable")
        if top >= 1 << 16:
            o = o[np.argsort((sk[o] >> 16).astype(np.uint16), kind="stable")]
        s, ts = sk[o], t[o]
        if ((s[1:] != s[:-1]) | (ts[1:] >= ts[:-1])).all():
            return o
    t0 = int(t.min())
    span = int(t.max()) - t0 + 1
    if (int(d.max()) + 1) * _NFM * span >= 1 << 62:
        return np.lexsort((t, fm, d))
    return np.argsort((d * _NFM + fm) * span + (t - t0), kind="stable")


def _dev_time_order(d: np.ndarray, t: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``np.lexsort((f, t, d))`` of rows in (device, metric, time) order, without exact repeats: a stable sort
    of one int64 key ``d × span + t`` (ties, one time of a device, keep their metric order); the lexsort where
    the key would not fit."""
    if not d.shape[0]:
        return np.zeros(0, dtype=np.int64)
    t0 = int(t.min())
    span = int(t.max()) - t0 + 1
    if (int(d.max()) + 1) * span >= 1 << 62 or int(d.min()) < 0:
        return np.lexsort((f, t, d))
    return np.argsort(d * span + (t - t0), kind="stable")


class DetectorEngine:
    """``resident=True`` (the worker): the engine keeps each device's series block (``m``), check states
    (``c``: hysteresis, rate samples, phase currents), last gaps (``cad``) and covered time (``cov``) — the
    largest parts of a state — in arrays across batches; the states it returns carry none of them, and
    ``export_state`` gives the full, JSON-able state to checkpoint. A state handed to ``process`` must then be
    the latest one the engine returned for that device, or a full state (from the table or a snapshot: its
    ``m``, ``c``, ``cad`` and ``cov`` replace what the store holds). Without it (tests, backtests) every state is
    full, as before."""

    def __init__(self, rules: RuleSet, resident: bool = False):
        self.rules = rules
        self.resident = resident
        # device key -> its context (``_SharedPlan``: plan, family code, table row, metric slots, block in the
        # store): a batch's per-device lookup, the plan cache and the store's key -> row map (one entry per
        # device: a device heard under another family replaces it, keeping its row)
        self._ctx: dict[str, _SharedPlan] = {}
        self._store = _SeriesStore(self._ctx)
        # (site or None, family) -> plan and table row of the devices without a device block: None for the sites
        # whose family has no block of its own (the built-in numbers, the same for all of them)
        self._shared: dict[tuple[str | None, str], tuple[DevicePlan, int]] = {}
        self._rows: list[DevicePlan] = []  # one plan per table row
        self._tab: _Tables | None = None
        self._calendars: dict[str, Any] = {}
        lateness = getattr(rules, "lateness", None)
        self.gap_factor = float(getattr(lateness, "gap_factor", 3.0))
        self.allowed_lateness_ms = int(1000 * getattr(lateness, "allowed", 72 * 3600))
        self.max_intervals = int(getattr(lateness, "max_gaps", 3)) + 1  # covered intervals around the gaps
        self.late_after_ms = int(1000 * getattr(lateness, "late_after", 60))
        # readings set aside as late: evaluated on the late lane, or stale (inside covered time: duplicates)
        self.stats = {"late": 0, "stale": 0}

    def calendar(self, site: str) -> Any:
        """The site's working calendar, built once per site from the rules' ``calendar:`` block."""
        cal = self._calendars.get(site)
        if cal is None:
            cfg = self.rules.calendar_config(site)
            own = site in getattr(self.rules, "sites", (site,))  # sites without a file share the built-in one
            cal = self._calendars.get(None) if not own else None
            if cal is None:
                cal = Calendar.from_config(cfg)
                if not own:
                    self._calendars[None] = cal
            self._calendars[site] = cal
        return cal

    def plan(self, site: str, device: str, family: str) -> DevicePlan:
        return self._plan(site, device, family)[0]

    def _plan(self, site: str, device: str, family: str, key: str | None = None) -> tuple[Any, int]:
        """The device's plan and parameter-table row. Devices without a device block share the plan of their
        site's family block, or, without one, the plan of the built-in numbers (``_SharedPlan`` carries the
        device's site and name; ``rules`` is the shared one, which has no device-level ``overridden_by`` by
        construction, and no ``site`` read by anyone). ``key``: the caller's key string, kept as the entry's key
        (one string per device for the states, the store and this cache)."""
        if key is None:
            key = site + "/" + device
        c = self._ctx.get(key)
        if c is None or c.family != family:
            dr = self.rules.device(site, device, family)
            if dr.rules is self.rules.family(site, family):  # no device-level block: its site's numbers
                skey = (site if dr.overridden_by else None, family)
                sh = self._shared.get(skey)
                if sh is None:
                    p = build_plan(self.rules, site, device, family)
                    sh = self._shared[skey] = (p, self._add_row(p))
            else:
                p = build_plan(self.rules, site, device, family)
                sh = (p, self._add_row(p))
            c = self._ctx[key] = _SharedPlan(sh[0], key, dr.gateway, sh[1], c.row if c is not None else -1)
        return c, c.pid

    def _add_row(self, p: DevicePlan) -> int:
        self._rows.append(p)
        return len(self._rows) - 1

    def _tables(self) -> _Tables:
        if self._tab is None or self._tab.cag.shape[0] != len(self._rows):
            self._tab = _Tables(self._rows)
        return self._tab

    # ============================================================================================ process
    def process(self, batch: ReadingBatch, states: dict[str, dict], now_ms: int | None = None) -> list[Finding]:
        """Findings of one batch; ``now_ms`` is when it arrived (late findings report their arrival delay)."""
        # A batch allocates tens of thousands of small containers (none of them cyclic) while a large state table
        # is alive: the cyclic collector would walk that table again and again. Collect after the batch instead.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._process(batch, states, now_ms)
        finally:
            if enabled:
                gc.enable()

    def _process(self, batch: ReadingBatch, states: dict[str, dict], now_ms: int | None = None,
                 lane: bool = False) -> list[Finding]:
        """``lane=True``: the late lane's scratch states — no cadence, coverage, deadline or health upkeep."""
        n0 = len(batch)
        if n0 == 0:
            return []
        dev_all, first = _code(batch.device)
        if not (batch.site == batch.site[first][dev_all]).all():  # a device name used at several sites
            dev_all, first = _code(_code(batch.site)[0] * (len(first) + 1) + dev_all)
        first_row = first.tolist()
        n_dev = len(first_row)
        mcode = np.fromiter(map(_METRIC_CODE.__getitem__, batch.metric.tolist()), np.int64, n0)

        # ---- device contexts: state and plan (Python per device)
        fam_l = batch.family[first].tolist()
        ctx = self._ctx
        store = self._store if (self.resident and not lane) else None
        sites, devices = batch.site[first].tolist(), batch.device[first].tolist()
        dkeys = list(map("/".join, zip(sites, devices)))  # site + "/" + device (~35 % faster)
        olds: list[Any] = list(map(states.get, dkeys))
        plans: list[Any] = list(map(ctx.get, dkeys))
        # a healthy resident device (an ``IdleState`` with its block in the store: nearly the whole fleet) stays an
        # ``IdleState`` through the batch — no dict made, copied and compacted again; ``idle`` holds its batch number
        idle: list[int] = []
        in_store: list[int] = []  # devices whose series block is in the store (their state has no "m")
        store_fam = store.fam if store is not None else b""
        todo: Any = range(n_dev)  # the devices that are not idle: the loop below
        if store is not None:  # one comprehension for the test, the loop for the others only
            is_idle = [type(st) is IdleState and c is not None and c.family == st.fam and c.row >= 0
                       and store_fam[c.row] == c.fc for st, c in zip(olds, plans)]
            idle = list(compress(range(n_dev), is_idle))
            todo = [] if len(idle) == n_dev else list(compress(range(n_dev), map(not_, is_idle)))
        for d in todo:
            key, st, c = dkeys[d], olds[d], plans[d]
            fam = fam_l[d]
            if st is not None:
                if type(st) is IdleState:
                    st = olds[d] = st.as_dict()
                # the current layout, checked as ``_upgrade`` does, without a call per device
                if type(st) is dict and st.get("v") == STATE_VERSION and c is not None and c.family == st.get("fam"):
                    m = st.get("m")
                    if (m is None and store is not None and (row := c.row) >= 0 and store_fam[row] == c.fc) or (
                            type(m) is list and len(m) == 2 and len(m[0]) == c.nm * _NI and len(m[1]) == c.nm * _NF):
                        if m is None:
                            in_store.append(d)
                        continue
                st = olds[d] = _upgrade(st)
                if st is not None:
                    fam = st["fam"]
            if c is None or c.family != fam:
                plans[d] = self._plan(sites[d], devices[d], fam, key)[0] if fam in FAMILIES else None
        fam_c = [p.fc if p is not None else -1 for p in plans]
        pid_l = [p.pid if p is not None else 0 for p in plans]
        if idle:
            in_store = sorted(in_store + idle) if in_store else idle
        in_rows = [plans[d].row for d in in_store]
        dev_fam = np.array(fam_c, dtype=np.int64)
        dev_pid = np.array(pid_l, dtype=np.int64)
        tab = self._tables()
        nm = _NM_BY_CODE[dev_fam]
        if store is not None:
            # every device of the batch gets its id in the store now; one whose state is not the engine's (a full
            # state, or a fresh device) drops what the store held for it and brings its own check states
            dev_id = np.full(n_dev, -1, dtype=np.int64)
            if in_store:
                dev_id[in_store] = in_rows
            others = np.flatnonzero((dev_id < 0) & (dev_fam >= 0))
            incoming: list[int] = []
            if others.shape[0]:
                dev_id[others] = store.place([dkeys[d] for d in others.tolist()], nm[others], dev_fam[others])
                store.forget_checks(dev_id[others])
                incoming = others.tolist()
                for d in incoming:
                    od = olds[d]
                    if od is not None:
                        if od.get("c"):
                            store.import_checks(int(dev_id[d]), od["c"])
                        if od.get("k"):
                            store.import_kinds(int(dev_id[d]), od["k"])
                        if od.get("og"):
                            store.import_outages(int(dev_id[d]), od["og"])
                        store.import_times(int(dev_id[d]), od.get("cad") or [], od.get("cov") or [])
                store.apply()

        # the device's family decides what its metric names mean; a metric foreign to it is dropped
        fmc = _FM_TABLE[dev_fam[dev_all], mcode]
        keep = (fmc >= 0) & np.isfinite(batch.value)
        idx = np.flatnonzero(keep)
        order = idx[_row_order(dev_all[idx], fmc[idx], batch.ts[idx])]
        d_, f_, t_, v_ = dev_all[order], fmc[order], batch.ts[order], batch.value[order]
        if d_.size > 1:  # exact repeats of (device, metric, ts): redelivery, keep the first
            dup = np.r_[False, (d_[1:] == d_[:-1]) & (f_[1:] == f_[:-1]) & (t_[1:] == t_[:-1])]
            d_, f_, t_, v_ = d_[~dup], f_[~dup], t_[~dup], v_[~dup]

        # ---- per-series state of the devices in the batch, columnar: one block of slots per device (the plain
        # engine: from the states' lists; resident: the store's rows, a device that came in written there first)
        inc = [d for d in incoming if plans[d] is not None] if store is not None else range(n_dev)
        off = np.zeros(len(inc) + 1, dtype=np.int64)
        np.cumsum(nm[inc], out=off[1:])
        S_i = np.empty((int(off[-1]), _NI), dtype=np.int64)
        S_i[:] = _EMPTY_I
        S_f = np.full((int(off[-1]), _NF), np.nan)
        had = [j for j, d in enumerate(inc) if olds[d] is not None and "m" in olds[d]]
        if had:
            had_a = np.array(had, dtype=np.int64)
            slot_rows = _block_rows(off[had_a], nm[inc][had_a])
            S_i[slot_rows] = np.fromiter(chain.from_iterable(olds[inc[j]]["m"][0] for j in had), np.int64,
                                         slot_rows.shape[0] * _NI).reshape(-1, _NI)
            S_f[slot_rows] = np.array(list(chain.from_iterable(olds[inc[j]]["m"][1] for j in had)),
                                      dtype=np.float64).reshape(-1, _NF)
        if store is not None:
            if inc:
                rows_s = _block_rows(dev_id[inc], nm[inc])
                store.scatter(rows_s, S_i)
                store.f[rows_s] = S_f
            base = dev_id  # a device's first row in the store
        else:
            base = off

        # ---- series (device, metric); drop readings not newer than the series' last processed one
        sk = d_ * _NFM + f_
        sfirst, sgrp, sfirst_idx, slast = group_layout(sk)
        s_dev = d_[slast]
        s_fm = f_[slast]
        s_row = base[s_dev] + _FM_SLOT[s_fm]
        if store is not None:
            si_old, sf_old = store.gather(s_row), store.gather_f(s_row)
        else:
            si_old, sf_old = S_i[s_row], S_f[s_row]
        fresh = t_ > si_old[:, 0][sgrp]
        late = None
        if not fresh.all():
            if not lane:  # a repeat of the series' newest reading is a plain redelivery; older ones may be late
                nf = ~fresh & (t_ != si_old[:, 0][sgrp])
                self.stats["stale"] += int((~fresh).sum() - nf.sum())
                late = (d_[nf], f_[nf], t_[nf], v_[nf]) if nf.any() else None
            d_, f_, t_, v_ = d_[fresh], f_[fresh], t_[fresh], v_[fresh]
            old_s = sgrp[fresh]
            sfirst, sgrp, sfirst_idx, slast = group_layout(d_ * _NFM + f_)
            s_row = s_row[old_s[slast]]
            si_old, sf_old = si_old[old_s[slast]], sf_old[old_s[slast]]
            s_dev, s_fm = d_[slast], f_[slast]
        n = t_.shape[0]
        new_states: dict[int, dict] = {}  # the new state dict of every known device but the idle ones
        idled: dict[int, IdleState] = {}  # and of the idle ones that stay idle (``_upkeep``)
        if idle:
            busy_dev = np.ones(n_dev, dtype=bool)
            busy_dev[idle] = False
        for d in (np.flatnonzero(busy_dev).tolist() if idle else range(n_dev)):
            p = plans[d]
            if p is None:
                continue
            old = olds[d]
            ns = dict(old) if old else _new_state(p.family)
            if store is None:
                ns["c"] = dict(ns["c"])
            new_states[d] = ns
        findings: list[Finding] = []
        if n == 0:
            self._write_back(states, dkeys, new_states, idled, late)
            if late is not None:
                findings += self._late_lane(late, batch.site, batch.device, first_row, plans, dkeys, states, now_ms)
            if store is not None:
                self._compact_all(states, dkeys, new_states)
            return findings

        # ---- sensor faults per series
        s_pid = dev_pid[s_dev]
        carry = SeriesCarry(sf_old[:, 0], sf_old[:, 1], si_old[:, 1], si_old[:, 2].astype(bool), si_old[:, 3],
                            si_old[:, 4], si_old[:, 5].astype(bool), si_old[:, 6], si_old[:, 7].astype(bool),
                            si_old[:, 8], si_old[:, 9].astype(bool))
        fr = sensor_faults(v_, t_, sgrp, sfirst, sfirst_idx, slast, tab.lo[s_pid, s_fm], tab.hi[s_pid, s_fm],
                           tab.step[s_pid, s_fm], tab.flat_ms[s_pid, s_fm], tab.eps[s_pid, s_fm], tab.cag[s_pid],
                           carry)

        results: list[_Res] = []
        row_all = np.arange(n)
        row_pid = dev_pid[d_]
        for k, (kind, bits) in enumerate(zip(_FAULT_BITS, (fr.oor_level_bit, fr.spk_level_bit, fr.flat_level_bit))):
            results.append(_Res(-1 - KIND_CODE[kind], row_all, np.where(bits, tab.flvl[k][row_pid], 0).astype(np.int8),
                                v_))

        # ---- hazard checks over valid rows
        hv = np.flatnonzero(fr.valid)
        hv_fm = f_[hv]
        check_carry: dict[tuple[int, int], dict] = {}  # (device, check) -> new check state (plain engine)
        cc = _StoreCarry(store, dev_id) if store is not None else _DictCarry(olds, check_carry)
        s_base = sf_old[:, 2].copy()  # baseline per series, first taken in this batch where it had none
        if store is not None:  # resident: every check of every metric in one pass (``_run_checks``)
            results += self._run_checks(hv, hv_fm, d_, sgrp, t_, v_, dev_pid, tab, cc, s_base, dkeys)
        else:
            for fm in np.unique(hv_fm).tolist():
                checks = _CHECKS_BY_FM.get(fm)
                if not checks:
                    continue
                rows_fm = hv[hv_fm == fm]
                for ci in checks:
                    res = self._run_check(ci, rows_fm, d_, sgrp, t_, v_, dev_pid, tab, cc, s_base, dkeys)
                    if res is not None:
                        results.append(res)
        ph = hv[np.isin(hv_fm, _PHASE_FM)]
        if ph.size:
            res = self._run_imbalance(ph, d_, f_, t_, v_, dev_pid, tab, cc)
            if res is not None:
                results.append(res)

        # ---- combine per (device, kind), emit
        if store is None:
            stated = np.array([d * _NK + KIND_CODE[k] for d, st in enumerate(olds) if st for k in st["k"]
                               if k in KIND_CODE], dtype=np.int64)
        else:  # resident: the kind states are in the store's pool
            kp = store.kinds
            lo = kp.key.searchsorted(dev_id * _NK)
            cnt = kp.key.searchsorted(dev_id * _NK + _NK) - lo
            own = np.repeat(np.arange(n_dev), cnt)
            stated = own * _NK + kp.key[_block_rows(lo, cnt)] - dev_id[own] * _NK
        findings += self._emit(results, d_, f_, t_, v_, plans, dev_pid, tab, olds, new_states, stated, n_dev,
                               dev_id if store is not None else None)

        # ---- per device: cadence, covered time, deadline, silence ended, health
        big = np.iinfo(np.int64)
        dmin = np.full(n_dev, big.max, dtype=np.int64)
        dmax = np.full(n_dev, big.min, dtype=np.int64)
        np.minimum.at(dmin, d_, t_)
        np.maximum.at(dmax, d_, t_)
        if not lane:
            late_found = [f for f in findings if now_ms is not None and now_ms - f.ts > self.late_after_ms]
            if late_found:  # buffered readings that arrived in order (the flush came first): late all the same
                on_time = t_ >= now_ms - self.late_after_ms  # the outage ended at the device's first on-time reading
                first_on = np.full(n_dev, big.max, dtype=np.int64)
                np.minimum.at(first_on, d_[on_time], t_[on_time])
                want = {f.key for f in late_found}  # a few: a scan each (C), not a dict of the batch's devices
                where = {k: dkeys.index(k) for k in want} if len(want) <= 16 else {k: d for d, k in enumerate(dkeys)}
                for f in late_found:
                    d = where[f.key]
                    end = int(first_on[d]) if first_on[d] != big.max else int(dmax[d])
                    od = _as_dict(olds[d])
                    self._mark_late(f, od or {}, now_ms, [od.get("lt") if od else None, end])
            findings += self._upkeep(batch, first, d_, t_, dmin, dmax, plans, olds, new_states, dev_pid, tab,
                                     dev_id if store is not None else None, idle, idled, sites)
        out = fr.out
        s_cols = [t_[slast], out.p1_ts, out.sus, out.frun, out.fstart, out.oor_bit, out.oor_good, out.spk_bit,
                  out.spk_good, out.flat_bit]
        s_f = np.column_stack([out.p1, out.p2, s_base])
        if store is not None:  # resident: the series to the store, the states carry no "m" and no "c"
            store.scatter_cols(s_row, s_cols, s_f)
            store.apply()
            # only a device that came in (fresh, or a full state) carries what the store now holds: the others'
            # states are copies of the engine's own, which never do
            for d in incoming:
                ns = new_states.get(d)
                if ns is not None:
                    for k in _IN_STORE:
                        ns.pop(k, None)
                    _drop_nulls(ns)
        else:
            S_i[s_row], S_f[s_row] = np.column_stack(s_cols).astype(np.int64), s_f
            ints = S_i.ravel().tolist()
            fl = S_f.ravel()
            flts = np.where(np.isnan(fl), None, fl.astype(object)).tolist()
            off_l = off.tolist()
            for d, ns in new_states.items():
                a, b = off_l[d], off_l[d + 1]
                ns["m"] = [ints[a * _NI:b * _NI], flts[a * _NF:b * _NF]]
        for (d, ci), cs in check_carry.items():
            if cs is None:
                new_states[d]["c"].pop(CHECKS[ci].id, None)
            else:
                new_states[d]["c"][CHECKS[ci].id] = cs
        self._write_back(states, dkeys, new_states, idled, late)
        if late is not None:
            findings += self._late_lane(late, batch.site, batch.device, first_row, plans, dkeys, states, now_ms)
        if store is not None:
            self._compact_all(states, dkeys, new_states)
        findings.sort(key=_FINDING_ORDER)
        return findings

    # -------------------------------------------------------------------------------------------- upkeep
    def _upkeep(self, batch: ReadingBatch, first: np.ndarray, d_, t_, dmin, dmax, plans, olds,
                new_states, dev_pid, tab: _Tables, resident_ids: np.ndarray | None = None, idle: list | None = None,
                idled: dict | None = None, sites: list | None = None) -> list[Finding]:
        """Per device with fresh readings: learned cadence, covered event time, the next silent deadline, a
        silence that ended, and device health.

        The cadence (median of the last gaps), the gap threshold and the plain deadline are computed for all
        devices at once; a device whose batch leaves no gap in its covered time, that was not silent and does
        not follow a site calendar (nearly all of them) then only has its new numbers written. The others take
        the general path (``_upkeep_one``).

        ``idle`` (resident): the devices whose state is an ``IdleState`` (in ``olds``, none in ``new_states``);
        ``idled`` gets the new ``IdleState`` of each of them that stays idle (``_upkeep_resident``); ``sites``: each
        device's site."""
        out: list[Finding] = []
        dd, tt = _sorted_pairs(d_, t_)
        if dd.size:
            u = np.r_[True, (dd[1:] != dd[:-1]) | (tt[1:] != tt[:-1])]
            dd, tt = dd[u], tt[u]
        n_dev = len(plans)
        bnd_a = np.searchsorted(dd, np.arange(n_dev + 1))
        # gaps between a device's distinct measurement times in this batch; the largest one per device
        g = np.diff(tt)
        same = dd[1:] == dd[:-1]
        gmax = np.zeros(n_dev, dtype=np.int64)
        if g.size:
            np.maximum.at(gmax, dd[1:][same], g[same])
        with_rows = bnd_a[1:] > bnd_a[:-1]
        if len(new_states) + len(idle or ()) != n_dev:  # devices of an unknown family: no state
            known = np.zeros(n_dev, dtype=bool)
            known[list(new_states)] = True
            known[idle or []] = True
            with_rows &= known
        devs = np.flatnonzero(with_rows).tolist()
        if not devs:
            return out
        m = len(devs)
        D = np.array(devs, dtype=np.int64)
        nss = list(map(new_states.get, devs))  # None for an idle device
        ts0 = tt[bnd_a[D]]
        # ---- what the states hold (one pass of Python; an idle device: its last reading, no silence)
        lt_l = [ns.get("lt") if ns is not None else olds[d].lt for d, ns in zip(devs, nss)]
        lt_a = np.array(lt_l)
        if lt_a.dtype.kind == "i":  # every device has a last reading (an int array: no None among them)
            has_lt, lt_old = np.ones(m, dtype=bool), lt_a.astype(np.int64)
        else:
            has_lt = np.fromiter((x is not None for x in lt_l), bool, m)
            lt_old = np.fromiter((x if x is not None else 0 for x in lt_l), np.int64, m)
        silent = np.zeros(m, dtype=bool)
        silent[[i for i, ns in enumerate(nss) if ns is not None and (ns.get("sil") or (0,))[0] != 0]] = True
        store = self._store if resident_ids is not None else None
        if store is None:
            cads = [(ns.get("cad") or [])[-deadman.K_GAPS:] for ns in nss]
            covs = [ns.get("cov") or [] for ns in nss]
            cov_n = np.fromiter(map(len, covs), np.int64, m)
            cov_b = np.fromiter((c[-1][1] if c else 0 for c in covs), np.int64, m)
            cov_flat = np.fromiter(chain.from_iterable(chain.from_iterable(covs)), np.int64, 2 * int(cov_n.sum()))
            c_n = np.fromiter(map(len, cads), np.int64, m)
            c_flat = np.fromiter(chain.from_iterable(cads), np.int64, int(c_n.sum()))
        else:  # resident: gaps and covered time straight from the store's pools
            ids = resident_ids[D]
            lo, cnt = store.cad.find(ids)
            cad_had = _block_rows(lo, cnt)  # every device's gaps are replaced (by position: no second lookup)
            c_n = np.minimum(cnt, deadman.K_GAPS)
            c_flat = store.cad.col[0][_block_rows(lo + cnt - c_n, c_n)]
            lo, cov_n = store.cov.find(ids)
            cov_lo = lo
            cov_flat = store.cov.col[0][_block_rows(lo, cov_n)].ravel()
            cov_b = np.where(cov_n > 0, store.cov.col[0][np.maximum(lo + cov_n - 1, 0), 1] if store.cov.key.shape[0]
                             else 0, 0)
        # ---- old cadence: the gap threshold (while learning, the largest gap seen counts as normal)
        c_own = np.repeat(np.arange(m), c_n)
        pid = dev_pid[D]
        min_gaps, def_iv = tab.min_gaps[pid], tab.def_iv[pid]

        def cadence(own, vals, count):
            """Per device: the interval as ``DevicePlan.cadence_ms`` decides, and the largest gap."""
            K = deadman.K_GAPS
            mat = np.full((m, K), np.iinfo(np.int64).max, dtype=np.int64)
            start = np.searchsorted(own, np.arange(m))
            mat[own, np.arange(own.shape[0]) - start[own]] = vals
            mat.sort(axis=1)
            med = mat[np.arange(m), np.maximum(count - 1, 0) // 2]
            learned = (count > 0) & (count >= min_gaps) & (med > 0)
            big = np.where(count > 0, mat[np.arange(m), np.maximum(count - 1, 0)], 0)
            return np.where(learned, med, def_iv), big

        iv_old, gbig = cadence(c_own, c_flat, c_n)
        iv_old = np.where((c_n < min_gaps) & (c_n > 0), np.maximum(iv_old, gbig), iv_old)
        thr = np.floor(np.maximum(self.gap_factor * iv_old, 2_000)).astype(np.int64)
        first_gap = np.where(has_lt, ts0 - lt_old, 0)
        # ---- new cadence: the old gaps, then the one from the last reading, then this batch's, the last K kept
        gi = np.flatnonzero(same)
        pos_of = np.full(n_dev, -1, dtype=np.int64)
        pos_of[D] = np.arange(m)
        fg = np.flatnonzero(has_lt & (first_gap > 0))
        own = np.concatenate([c_own, fg, pos_of[dd[1:][gi]]])
        seq = np.concatenate([np.arange(c_own.shape[0]) - c_own.shape[0] - 1 - m, fg - m, gi])
        vals = np.concatenate([c_flat, first_gap[fg], g[gi]])
        keep = own >= 0
        own, seq, vals = own[keep], seq[keep], vals[keep]
        so = np.lexsort((seq, own))
        own, vals = own[so], vals[so]
        ends = np.searchsorted(own, np.arange(m), side="right")
        tail = (ends[own] - np.arange(own.shape[0])) <= deadman.K_GAPS
        own, vals = own[tail], vals[tail]
        cad_own = own
        nc_start = np.searchsorted(own, np.arange(m + 1))
        nc_n = np.diff(nc_start)
        iv_new, _ = cadence(own, vals, nc_n)
        sa, lo, hi = tab.silent_after[pid], tab.floor_ms[pid], tab.ceiling_ms[pid]
        lim = np.rint(np.minimum(np.maximum(iv_new * sa, lo), hi)).astype(np.int64)
        hi_t, lo_t = dmax[D], dmin[D]
        lt_new = np.where(has_lt, np.maximum(hi_t, lt_old), hi_t)
        # ---- covered time, all devices at once (what ``coverage.extend`` then ``coverage.prune`` do one by one):
        # a reading opens a new interval where it is further than the threshold from the end of what is covered
        vec = ~silent  # a silence that ends takes the general path
        fast = (gmax[D] <= thr) & (first_gap <= thr) & (cov_n > 0) & (ts0 - cov_b <= thr)  # no gap at all
        r_i = pos_of[dd]
        rows = np.flatnonzero(r_i >= 0)
        r_i = r_i[rows]
        r_t = tt[rows]
        r_first = rows == bnd_a[dd[rows]]
        r_prev = np.empty_like(r_t)
        r_prev[1:] = r_t[:-1]
        e0 = np.where(cov_n > 0, cov_b, np.iinfo(np.int64).min // 2)[r_i]
        prev_end = np.where(r_first, e0, np.maximum(e0, r_prev))
        brk = (r_t - prev_end > thr[r_i]) | (r_first & (cov_n[r_i] == 0))
        # outages as heard live (from the device's last reading, then between this batch's readings)
        prev_x = np.where(r_first, lt_old[r_i], r_prev)
        ogp = np.flatnonzero((r_t - prev_x > thr[r_i]) & (~r_first | has_lt[r_i]))
        nb = np.flatnonzero(brk)
        r_end = np.r_[r_i[1:] != r_i[:-1], True]  # last row per device
        dev_last = np.flatnonzero(r_end)
        last_of = np.empty(m, dtype=np.int64)
        last_of[r_i[dev_last]] = dev_last
        nb_end = np.minimum(np.r_[nb[1:], rows.shape[0]], last_of[r_i[nb]] + 1) - 1
        # the first stretch of a device's readings that opens no interval extends its last covered one
        first_brk = np.full(m, rows.shape[0], dtype=np.int64)
        np.minimum.at(first_brk, r_i[nb], nb)
        first_of = np.full(m, 0, dtype=np.int64)
        first_of[r_i[r_first]] = np.flatnonzero(r_first)
        seg0_last = np.minimum(first_brk, last_of + 1) - 1
        merge = (cov_n > 0) & (seg0_last >= first_of)
        ca, cb = cov_flat[0::2].copy(), cov_flat[1::2].copy()
        c_last = np.cumsum(cov_n) - 1
        mi = np.flatnonzero(merge)
        cb[c_last[mi]] = np.maximum(cb[c_last[mi]], r_t[seg0_last[mi]])
        own = np.concatenate([np.repeat(np.arange(m), cov_n), r_i[nb]])
        a_ = np.concatenate([ca, r_t[nb]])
        b_ = np.concatenate([cb, r_t[nb_end]])
        so = np.argsort(own, kind="stable")
        own, a_, b_ = own[so], a_[so], b_[so]
        ends = np.searchsorted(own, np.arange(m), side="right")
        keep = ~(~fast[own] & ((ends[own] - np.arange(own.shape[0])) > self.max_intervals))
        own, a_, b_ = own[keep], a_[keep], b_[keep]
        older = hi_t - self.allowed_lateness_ms
        kept = b_ >= older[own]
        any_kept = np.zeros(m, dtype=bool)
        any_kept[own[kept]] = True
        is_last = np.r_[own[1:] != own[:-1], True]
        keep = kept | (is_last & ~any_kept[own])
        own, a_, b_ = own[keep], a_[keep], b_[keep]
        if store is None:
            cov_pairs = np.column_stack([a_, b_]).tolist()
            cvs = np.searchsorted(own, np.arange(m + 1)).tolist()
        else:  # resident: the new gaps of every device, and the covered time of the vectorised ones, to the store
            store.cad.queue_rows(cad_had, ids[cad_own], vals)
            sel = vec[own]
            store.cov.queue_rows(_block_rows(cov_lo[vec], cov_n[vec]), ids[own[sel]],
                                 np.column_stack([a_[sel], b_[sel]]))
        og_new: dict[int, list] = {}
        if store is None:
            for i, x, y in zip(r_i[ogp].tolist(), prev_x[ogp].tolist(), r_t[ogp].tolist()):
                og_new.setdefault(i, []).append((x, y))
        # resident: the rate samples before this batch of the devices that may record an outage, from the store
        # all at once (its pools still hold the old samples while upkeep runs)
        if store is not None and ogp.shape[0]:  # resident: the records go to the store's pools, all at once
            gi = r_i[ogp]  # ascending (rows are in device order), each device's gaps in time order
            u, inv = np.unique(gi, return_inverse=True)
            store.record_outages(ids[u], inv.ravel(), prev_x[ogp], r_t[ogp], older[u], self.max_intervals)
        # ---- write back
        cad_vals = vals.tolist() if store is None else vals  # resident: a device's slice as a list where needed
        ncs = nc_start.tolist()
        if store is not None:  # a sensor fault raised, from the kind states in the store (the new ones)
            fk = (ids[:, None] * _NK + _FAULT_KC).ravel()
            lo_k, cnt_k = store.kinds.find(fk)
            fl = np.where(cnt_k > 0, store.kinds.col[0][np.minimum(lo_k, max(store.kinds.key.shape[0] - 1, 0)), 0]
                          if store.kinds.key.shape[0] else 0, 0)
            faulty_l = (fl.reshape(m, -1) > 0).any(axis=1).tolist()
        else:
            faulty_l = [any(k in _FAULT_KIND_NAMES and s.get("l") for k, s in ns["k"].items()) for ns in nss]
        gw_l = batch.gateway[first].tolist() if batch.gateway is not None else None
        older_l = older.tolist()
        if store is not None:
            return out + self._upkeep_resident(devs, nss, vec, lt_new, lim, lo_t, hi_t, tab.gw_grace[pid],
                                               tab.follows_cal[pid], plans, olds, cad_vals, ncs, tt, bnd_a, thr,
                                               gmax, gw_l, ids, faulty_l, new_states, idled, sites)
        for i, (d, ns, vec_i, lt, lim_i, lo_i, hi_i, grace) in enumerate(zip(
                devs, nss, vec.tolist(), lt_new.tolist(), lim.tolist(), lo_t.tolist(), hi_t.tolist(),
                tab.gw_grace[pid].tolist())):
            p = plans[d]
            cad = cad_vals[ncs[i]:ncs[i + 1]]
            if not vec_i:
                out += self._upkeep_one(d, ns, p, cad, tt[bnd_a[d]:bnd_a[d + 1]], int(thr[i]), int(gmax[d]),
                                        olds[d], lo_i, hi_i, gw_l,
                                        int(ids[i]) if store is not None else None, faulty_l[i])
                continue
            if store is None:
                ns["cov"] = cov_pairs[cvs[i]:cvs[i + 1]]
                ns["cad"] = cad
            gaps = og_new.get(i) if store is None else None
            if gaps is not None:
                # with the rate samples from before the outage: the live history moves on past them, the
                # late lane will need them to judge a rate inside the outage
                pre = self._pre_outage(olds[d])
                og = (ns.get("og") or []) + [[x, y, pre] for x, y in gaps]
                og = [o for o in og if o[1] >= older_l[i]][-self.max_intervals:]
                if og or store is None:
                    ns["og"] = og
                elif "og" in ns:
                    del ns["og"]
            via = p.gateway or (gw_l[d] if gw_l is not None else None) or ns.get("via")
            if via is not None or store is None:
                ns["via"] = via
            ns["lt"] = lt
            # a reading says it is on; resident states leave out off/offat/sx while they are null (_SPARSE)
            if store is None:
                ns["off"] = None
            elif "off" in ns:
                del ns["off"]
            if p.follows_calendar and not self.calendar(p.site).always_working:  # always working: plain
                dl, offat = deadman.deadlines(p, self.calendar(p.site), lt, cad, via, lim_i)
                ns["dl"] = dl
                ns["due"] = min(dl, offat) if offat is not None else dl
            else:
                ns["dl"] = ns["due"] = lt + lim_i + grace if via else lt + lim_i
                offat = None
            if offat is not None or store is None:
                ns["offat"] = offat
            elif "offat" in ns:
                del ns["offat"]
            faulty = faulty_l[i]
            if (ns.get("hs") or (_OK,))[0] != (_FAULTY if faulty else _OK):
                h = self._health(p, ns, _FAULTY if faulty else _OK, lo_i if not faulty else hi_i,
                                 "sensor fault raised" if faulty else "reporting")
                if h is not None:
                    out.append(h)
        return out

    def _upkeep_resident(self, devs, nss, vec, lt_new, lim, lo_t, hi_t, grace, follows_cal, plans, olds, cad_vals,
                         ncs, tt, bnd_a, thr, gmax, gw_l, ids, faulty_l, new_states, idled, sites) -> list[Finding]:
        """``_upkeep``'s write-back for resident states: what the loop of the plain engine writes, with the
        plain deadline computed for all devices at once and a device's gaps sliced out only where a calendar or
        the general path needs them (outage records, gaps and covered time are in the store already).

        An idle device (``nss[i]`` None) that stays idle — no sensor fault raised (its health stays ok), no
        gateway to record, no calendar of working hours (its deadline is the plain one) — only gets its new times:
        a new ``IdleState`` in ``idled``, without a dict (nearly the whole fleet); any other idle device is made a
        dict in ``new_states`` and written as the others are."""
        out: list[Finding] = []
        dl_plain = lt_new + lim
        todo = np.arange(len(devs))  # the devices written one by one below
        was_idle = np.fromiter((ns is None for ns in nss), bool, len(nss))
        if was_idle.any():
            cand = np.flatnonzero(was_idle & ~np.array(faulty_l, dtype=bool))
            cd = [devs[i] for i in cand.tolist()]
            stay = [not plans[d].gateway for d in cd] if gw_l is None else [
                not (plans[d].gateway or gw_l[d]) for d in cd]
            always: dict[str, bool] = {}  # per site: its calendar has no working hours (the plain deadline)
            for j in np.flatnonzero(follows_cal[cand]).tolist():
                site = sites[cd[j]]
                w = always.get(site)
                if w is None:
                    w = always[site] = self.calendar(site).always_working
                stay[j] = stay[j] and w
            at = cand[np.array(stay, dtype=bool)] if cd else cand
            sd = [devs[i] for i in at.tolist()]
            dl_s = dl_plain[at].tolist()
            idled.update(zip(sd, map(IdleState, [olds[d].fam for d in sd], lt_new[at].tolist(), dl_s, dl_s)))
            was_idle[at] = False
            for i in np.flatnonzero(was_idle).tolist():  # idle before, not after: as a dict, as the others
                nss[i] = new_states[devs[i]] = olds[devs[i]].as_dict()
            rest = np.ones(len(devs), dtype=bool)
            rest[at] = False
            todo = np.flatnonzero(rest)
        for i, vec_i, lt, cal, faulty, dl_p, dl_g in zip(
                todo.tolist(), vec[todo].tolist(), lt_new[todo].tolist(), follows_cal[todo].tolist(),
                [faulty_l[i] for i in todo.tolist()], dl_plain[todo].tolist(), (lt_new + lim + grace)[todo].tolist()):
            d, ns = devs[i], nss[i]
            p = plans[d]
            if not vec_i:
                out += self._upkeep_one(d, ns, p, cad_vals[ncs[i]:ncs[i + 1]].tolist(), tt[bnd_a[d]:bnd_a[d + 1]],
                                        int(thr[i]), int(gmax[d]), olds[d], int(lo_t[i]), int(hi_t[i]), gw_l,
                                        int(ids[i]), faulty)
                continue
            via = p.gateway or (gw_l[d] if gw_l is not None else None) or ns.get("via")
            if via is not None:
                ns["via"] = via
            ns["lt"] = lt
            if "off" in ns:  # a reading says it is on (left out while null: _SPARSE)
                del ns["off"]
            offat = None
            if cal and not self.calendar(p.site).always_working:  # always working: plain
                dl, offat = deadman.deadlines(p, self.calendar(p.site), lt, cad_vals[ncs[i]:ncs[i + 1]].tolist(), via,
                                              int(lim[i]))
                ns["dl"] = dl
                ns["due"] = min(dl, offat) if offat is not None else dl
            else:
                ns["dl"] = ns["due"] = dl_g if via else dl_p
            if offat is not None:
                ns["offat"] = offat
            elif "offat" in ns:
                del ns["offat"]
            if (ns.get("hs") or _HS0)[0] != (_FAULTY if faulty else _OK):
                h = self._health(p, ns, _FAULTY if faulty else _OK, int(hi_t[i]) if faulty else int(lo_t[i]),
                                 "sensor fault raised" if faulty else "reporting")
                if h is not None:
                    out.append(h)
        return out

    def _upkeep_one(self, d: int, ns: dict, p: DevicePlan, cad: list, tt: np.ndarray, thr: int, gmax: int, old,
                    lo_t: int, hi_t: int, gw_l, rid: int | None = None,
                    faulty: bool = False) -> list[Finding]:
        """One device whose batch leaves a gap in its covered time, ends a silence or follows a calendar.

        ``rid``: the device's id in the store (resident): its old gaps and covered time are read there (the new
        gaps are already queued) and its new covered time is queued there."""
        out: list[Finding] = []
        ts_d = tt.tolist()
        ts0 = ts_d[0]
        lt_old = ns.get("lt")
        if rid is None:
            cad_old = ns.get("cad") or []
            ns["cad"] = cad
            cov = ns.get("cov") or []
        else:
            x, y = self._store.cad.span(rid, rid + 1)
            cad_old = self._store.cad.col[0][x:y].tolist()
            x, y = self._store.cov.span(rid, rid + 1)
            cov = self._store.cov.col[0][x:y].tolist()
        first_gap = ts0 - lt_old if lt_old is not None else 0
        if gmax <= thr and first_gap <= thr and cov and ts0 - cov[-1][1] <= thr:
            # no gap, the last covered stretch grows
            cov = cov[:-1] + [[cov[-1][0], max(cov[-1][1], ts_d[-1])]]
        else:
            if (first_gap > thr or gmax > thr) and rid is None:  # outages as heard live (resident: in the
                # store, recorded by ``_upkeep`` for every device): late findings inside one name it
                prev = [lt_old] + ts_d[:-1] if lt_old is not None else ts_d[:-1]
                nxt = ts_d if lt_old is not None else ts_d[1:]
                # with the rate samples from before the outage: the live history moves on past them, the
                # late lane will need them to judge a rate inside the outage
                pre = self._pre_outage(old)
                og = (ns.get("og") or []) + [[x, y, pre] for x, y in zip(prev, nxt) if y - x > thr]
                ns["og"] = [o for o in og if o[1] >= hi_t - self.allowed_lateness_ms][-self.max_intervals:]
            cov = coverage.extend(cov, ts_d, thr, self.max_intervals)
        cov = coverage.prune(cov, hi_t - self.allowed_lateness_ms)
        if rid is None:
            ns["cov"] = cov
        else:
            k = np.array([rid], dtype=np.int64)
            self._store.cov.queue(k, np.repeat(k, len(cov)), np.array(cov, dtype=np.int64).reshape(-1, 2))
        via = p.gateway or (gw_l[d] if gw_l is not None else None) or ns.get("via")
        ns["via"] = via
        lt = max(hi_t, lt_old if lt_old is not None else hi_t)
        ns["lt"] = lt
        ns["off"] = None  # a reading says it is on
        sil = ns.get("sil") or [0, 0, 0]
        if sil[0]:
            quiet_from = lt_old if lt_old is not None else lo_t
            quiet_ms = max(0, lo_t - quiet_from)
            # measured within its limit after all (the silence was data held up on the way): retract it
            retracted = quiet_ms <= deadman.limit_ms(p, cad_old)
            f = self._silent_finding(p, Level.CLEAR, lo_t, quiet_ms, ns, cad)
            f.evidence.update(cleared_by={"ts": lo_t, "value": quiet_ms / 1000}, retracted=retracted,
                              measured_during=[quiet_from, lo_t])
            if retracted:
                f = replace(f, rule="retracted: readings show the device was measuring (data arrived late)")
            out.append(f)
            ns["sil"] = _SIL0
            ns["sx"] = None if retracted else [quiet_from, lo_t, sil[1]]
        dl, offat = deadman.deadlines(p, self.calendar(p.site), lt, cad, via)
        ns["dl"], ns["offat"] = dl, offat
        ns["due"] = min(dl, offat) if offat is not None else dl
        if rid is not None:
            _drop_nulls(ns)
        h = self._health(p, ns, _FAULTY if faulty else _OK, lo_t if not faulty else hi_t,
                         "sensor fault raised" if faulty else "reporting")
        if h is not None:
            out.append(h)
        return out

    @staticmethod
    def _pre_outage(old: dict | None) -> dict:
        """The rate samples a device had before this batch (kept with an outage record), from its state."""
        return {cid: cs["hist"] for cid, cs in old["c"].items() if cs and cs.get("hist")} if old else {}

    @staticmethod
    def _health(p: DevicePlan, st: dict, code: int, since: int, reason: str) -> Finding | None:
        """A ``device.health`` finding when the device's state (ok / off / silent / faulty) changes."""
        hs = st.get("hs") or [_OK, 0]
        if hs[0] == code:
            return None
        st["hs"] = [code, since]
        return Finding(p.site, p.device, p.family, "device.health", "health", Level.CLEAR, since, "*", float(code),
                       0.0, reason, "", False, {"state": HEALTH[code], "previous": HEALTH[hs[0]], "since": since,
                                                "reason": reason, "gateway": st.get("via")})

    # -------------------------------------------------------------------------------------------- late lane
    def _late_lane(self, late, site_a, dev_a, first_row, plans, dkeys, states, now_ms) -> list[Finding]:
        """Readings older than their series' newest: duplicates inside covered time are counted and dropped;
        the rest are evaluated in event time from the state the device had before the gap (baselines, rate
        history), and their findings are back-dated and marked late."""
        ld, lf, lts, lv = late
        o = np.lexsort((lts, ld))
        ld, lf, lts, lv = ld[o], lf[o], lts[o], lv[o]
        keep = np.zeros(ld.shape[0], dtype=bool)
        devs, starts = np.unique(ld, return_index=True)
        ends = np.r_[starts[1:], ld.shape[0]]
        lane_states: dict[str, dict] = {}
        lane_plans: dict[str, DevicePlan] = {}
        spans: dict[str, list] = {}
        for d, a, b in zip(devs.tolist(), starts.tolist(), ends.tolist()):
            p = plans[d]
            st = states.get(dkeys[d])
            if p is None or not isinstance(st, dict):
                continue
            covered, gfrom, _ = coverage.classify(self._times("cov", dkeys[d], st), lts[a:b])
            keep[a:b] = ~covered
            if not covered.all():
                t_new = lts[a:b][~covered]
                lane_states[dkeys[d]] = self._lane_seed(p, self._og(dkeys[d], st), int(t_new.min()), int(t_new.max()),
                                                        self._series_floats(dkeys[d], st),
                                                        self._checks(dkeys[d], st))
                lane_plans[dkeys[d]] = p
                spans[dkeys[d]] = [(int(t_new[gfrom[~covered] == g].min()), int(t_new[gfrom[~covered] == g].max()))
                                   for g in np.unique(gfrom[~covered]).tolist()]
        n_late = int(keep.sum())
        self.stats["stale"] += int(keep.shape[0] - n_late)
        self.stats["late"] += n_late
        if not n_late:
            return []
        rows = np.flatnonzero(keep)
        fr = np.asarray(first_row, dtype=np.int64)[ld[rows]]
        fam = np.array([p.family if p else "" for p in plans], dtype=object)[ld[rows]]
        metric = np.array([m for _, m in FM_LIST], dtype=object)[lf[rows]]
        lb = ReadingBatch.from_columns(site_a[fr], dev_a[fr],
                                       fam, metric, lts[rows], lv[rows])
        found = self._process(lb, lane_states, now_ms, lane=True)
        arrival = now_ms if now_ms is not None else int(lts.max())
        out: list[Finding] = []
        last_metric: dict[tuple[str, str], str] = {}
        last_raised: dict[tuple[str, str], Finding] = {}
        for f in found:
            st = states[f.key]
            ev = f.evidence
            if ev.get("reassert"):
                continue
            if f.level == Level.CLEAR and self._kind_level(f.key, st, f.kind):
                continue  # newer readings hold this alarm: a late reading never clears it
            out.append(self._mark_late(f, st, arrival))
            last_metric[(f.key, f.kind)] = f.metric
            last_raised[(f.key, f.kind)] = f
        # re-asserts are not sent for late data: the last raised finding of an episode carries the episode as far
        # as this buffered data goes (its peak may come after that finding)
        for (key, kind), f in last_raised.items():
            ep = lane_states[key]["k"].get(kind, {}).get("ep") if f.level else None
            if ep:
                f.evidence["episode"] = dict(ep)
        # an episode still raised where the buffered data ends, right before the live readings that resumed after
        # the outage, which are clear: it ended there
        for key, ls in lane_states.items():
            st = states[key]
            cov = self._times("cov", key, st)
            for kind, ks in ls["k"].items():
                if not ks.get("l") or self._kind_level(key, st, kind):
                    continue
                lane_end = max(b for _, b in spans[key])
                _, _, gto = coverage.classify(cov, np.array([lane_end], dtype=np.int64))
                gap_end = int(gto[0])
                live_back = next((o[1] for o in self._og(key, st) if o[0] <= lane_end <= o[1]), None)
                p = lane_plans[key]
                if gap_end < 0 or gap_end != live_back or (
                        gap_end - lane_end > deadman.gap_threshold_ms(p, self._times("cad", key, st), self.gap_factor)):
                    continue  # more buffered data is to come (or a flush sent newest-first), not the live readings
                out.append(self._late_clear(key, kind, ks, st, gap_end, last_metric.get((key, kind)), arrival))
        # covered now; and a silence the buffered readings contradict is retracted
        for key, sp in spans.items():
            st = states[key]
            p = lane_plans[key]
            thr = deadman.gap_threshold_ms(p, self._times("cad", key, st), self.gap_factor)
            cov = self._times("cov", key, st)
            for a, b in sp:
                cov = coverage.add_span(cov, a, b, thr, self.max_intervals)
            self._set_cov(key, st, cov)
            sx = st.get("sx")
            if sx and any(a < sx[1] and b > sx[0] for a, b in sp):
                lo = min(a for a, _ in sp)
                hi = max(b for _, b in sp)
                f = self._silent_finding(p, Level.CLEAR, hi, 0, st)
                f.evidence.update(retracted=True, measured_during=[max(lo, sx[0]), min(hi, sx[1])],
                                  cleared_by={"ts": hi, "value": 0.0})
                out.append(replace(f, rule="retracted: buffered readings show the device was measuring"))
                st["sx"] = None
                if self._resident(st):
                    _drop_nulls(st)
        return out

    def _mark_late(self, f: Finding, st: dict, arrival: int, outage: list | None = None) -> Finding:
        """Late, with its arrival delay and the outage it fell in: ``outage`` if given, else as heard live
        (``og``) where one contains it, else the gap between the covered stretches around it."""
        if outage is None:
            outage = next(([o[0], o[1]] for o in self._og(f.key, st) if o[0] <= f.ts <= o[1]), None)
        if outage is None:
            _, gfrom, gto = coverage.classify(self._times("cov", f.key, st), np.array([f.ts], dtype=np.int64))
            outage = [int(gfrom[0]) if gfrom[0] >= 0 else None, int(gto[0]) if gto[0] >= 0 else None]
        if st.get("via"):
            f.evidence["gateway"] = st["via"]
        f.evidence.update(late=True, arrival_delay_s=max(0.0, (arrival - f.ts) / 1000), outage=outage)
        return f

    def _late_clear(self, key: str, kind: str, ks: dict, st: dict, gap_end: int, metric: str | None,
                    arrival: int) -> Finding:
        """The buffered episode is still raised at the end of the buffer, and the live readings after the outage
        are not: it ended at the gap's end. The value is the live reading of that metric."""
        site, _, device = key.partition("/")
        p = self.plan(site, device, st["fam"])
        names = list(FAMILIES[p.family])
        value = _NAN
        if metric in names:
            value = _f(self._series_floats(key, st)[names.index(metric) * _NF])
        ep = dict(ks.get("ep") or {})
        ev = {"level": "clear", "previous": _LNAMES[ks["l"]], "reassert": False, "episode": ep,
              "cleared_by": {"ts": gap_end, "value": _j(value), "by": "the live readings after the outage"},
              "gateway": st.get("via")}
        f = Finding(p.site, p.device, p.family, kind, "fault" if kind in FAULT_KINDS else "hazard", Level.CLEAR,
                    gap_end, metric or "", 0.0 if math.isnan(value) else value, 0.0,
                    "cleared: the readings after the outage are below the line", "", False, ev)
        return self._mark_late(f, st, arrival)

    @staticmethod
    def _lane_seed(p: DevicePlan, og: list, t0: int, t1: int, live_f: list, live_c: dict) -> dict:
        """The late lane starts from what the device had before the gap: series baselines, and each rate
        check's samples older than the first late reading (newer samples belong to readings after the gap) —
        from the live history, or from the copy kept with the outage when the live history has moved on."""
        ns = _new_state(p.family)
        flts = list(ns["m"][1])
        for i in range(_FAM_NM[p.family]):
            flts[i * _NF + 2] = live_f[i * _NF + 2]
        ns["m"] = [ns["m"][0], flts]
        pre = next((o[2] for o in og if len(o) > 2 and o[0] <= t1 and t0 <= o[1]), {})
        for cid in set(pre) | set(live_c):
            cs = live_c.get(cid)
            samples = sorted(set(zip(*(pre.get(cid) or [[], []]))) | set(zip(*(cs.get("hist") if cs and cs.get(
                "hist") else [[], []]))))
            k = bisect_left(samples, (t0,))
            if k:
                ns["c"][cid] = {"hist": [[t for t, _ in samples[:k]], [v for _, v in samples[:k]]]}
        return ns

    # -------------------------------------------------------------------------------------------- checks
    def _run_check(self, ci: int, rows: np.ndarray, d_, sgrp, t_, v_, dev_pid, tab: _Tables, cc, s_base,
                   dkeys: list[str]) -> _Res | None:
        c = CHECKS[ci]
        first, grp, first_idx, last = group_layout(sgrp[rows])
        gdev = d_[rows[last]]
        on = tab.on[dev_pid[gdev], ci]
        if not on.any():
            return None
        if not on.all():
            rows = rows[on[grp]]
            first, grp, first_idx, last = group_layout(sgrp[rows])
            gdev = d_[rows[last]]
        gp = dev_pid[gdev]
        ts, v = t_[rows], v_[rows]
        cstates = cc.get(ci, gdev)
        extra: dict[str, Any] = {}
        if c.mode == "level":
            x = v.copy()
        elif c.mode == "change":
            fixed = tab.baseline[gp, ci]
            ser = sgrp[rows[last]]
            base = np.where(np.isnan(fixed), s_base[ser], fixed)
            take = np.isnan(base)
            if take.any():
                base[take] = v[first_idx[last[take]]]
                s_base[ser[take]] = base[take]
            diff = v - base[grp]
            dirs = tab.direction[gp, ci][grp]
            x = np.where(dirs == 0, np.abs(diff), np.where(dirs == 1, diff, -diff))
            extra["baseline"] = base[grp]
        elif c.mode == "rate":
            x, refs, kept = windowed_rate(
                v, ts, first, grp, cc.hist(cstates, gdev.shape[0]), tab.window_ms[gp, ci], tab.bucket_ms[gp, ci], tab.consecutive[gp, ci],
                tab.per_ms[gp, ci], tab.direction[gp, ci])
            extra["refs"] = refs
        elif c.mode == "charging":
            x, extra["charging"] = self._charging(ts, v, grp, gdev, tab.min_load[gp, ci][grp], dkeys)
        else:  # pragma: no cover - registry guarantees the modes above
            raise ValueError(c.mode)
        level, out = self._hyst(x, ts, first, first_idx, grp, last, gp, ci, tab, cc.hyst(cstates))
        if c.mode == "rate":  # the samples always; the hysteresis only while a latch is set or a hold runs
            cc.put_rate(ci, gdev, kept, out, cstates)
        else:
            cc.put_hyst(ci, gdev, out, cstates)
        return _Res(ci, rows, level, x, None, extra)

    def _run_checks(self, hv, hv_fm, d_, sgrp, t_, v_, dev_pid, tab: _Tables, cc: "_StoreCarry", s_base,
                    dkeys: list[str]) -> list[_Res]:
        """``_run_check`` for every level, change, rate and charging check at once (resident engine): the rows of
        all checks one after the other (check after check, in ``_run_check``'s order: metric code, then the
        metric's checks), grouped by (check, series); one ``windowed_rate`` over the rows of every rate check,
        one ``graded_levels`` over all rows, one lookup and one write of the hysteresis pool. Every group is
        computed exactly as its check alone computes it (the grouped primitives never look across a group), so
        the levels, carries and evidence are ``_run_check``'s; one ``_Res`` per check, as before."""
        # the blocks: (check, its rows), in the order the per-check loop ran them
        o = np.argsort(hv_fm.astype(np.int16), kind="stable")  # small ints: a radix sort (the same permutation)
        h_rows, h_fm = hv[o], hv_fm[o]  # per metric code: its valid rows, in (device, ts) order
        fms, fm_at, fm_n = np.unique(h_fm, return_index=True, return_counts=True)
        b_ci: list[int] = []
        b_at: list[int] = []
        b_n: list[int] = []
        for fm, a, n in zip(fms.tolist(), fm_at.tolist(), fm_n.tolist()):
            for ci in _CHECKS_BY_FM.get(fm, ()):
                b_ci.append(ci)
                b_at.append(a)
                b_n.append(n)
        if not b_ci:
            return []
        b_ci_a = np.array(b_ci, dtype=np.int64)
        b_n_a = np.array(b_n, dtype=np.int64)
        rows = h_rows[_block_rows(np.array(b_at, dtype=np.int64), b_n_a)]
        r_blk = np.repeat(np.arange(len(b_ci)), b_n_a)
        r_ci = b_ci_a[r_blk]
        if not tab.on[np.unique(dev_pid)][:, b_ci_a].all():  # a check switched off for a device's plan: its rows go
            on = tab.on.ravel().take(dev_pid[d_[rows]] * _NC + r_ci)  # flat: ~3x the 2-d fancy index
            rows, r_blk, r_ci = rows[on], r_blk[on], r_ci[on]
        if not rows.shape[0]:
            return []
        n_ser = int(sgrp[-1]) + 1 if sgrp.shape[0] else 1
        first, grp, first_idx, last = group_layout(r_blk * n_ser + sgrp[rows])
        gdev = d_[rows[last]]
        gci = r_ci[last]
        gp = dev_pid[gdev]
        ts, v = t_[rows], v_[rows]
        keys = cc.dev_id[gdev] * _NC + gci
        b_lo = np.searchsorted(r_blk, np.arange(len(b_ci) + 1))  # each block's rows
        g_lo = np.searchsorted(r_blk[last], np.arange(len(b_ci) + 1))  # and groups
        mode = np.array([_MODE_CODE[CHECKS[ci].mode] for ci in b_ci], dtype=np.int8)
        x = v.copy()
        base_r = None
        rate_refs = None
        g_mode = mode[r_blk[last]]
        chg = np.flatnonzero(g_mode == _CHANGE)
        if chg.shape[0]:  # change: from a fixed zero reading, or the series' first reading received
            cp, cc_i = gp[chg], gci[chg]
            fixed = tab.baseline[cp, cc_i]
            ser = sgrp[rows[last[chg]]]
            base = np.where(np.isnan(fixed), s_base[ser], fixed)
            take = np.isnan(base)
            if take.any():
                base[take] = v[first_idx[last[chg[take]]]]
                s_base[ser[take]] = base[take]
            base_g = np.full(last.shape[0], np.nan)
            base_g[chg] = base
            base_r = base_g[grp]
            cr = np.flatnonzero(g_mode[grp] == _CHANGE)
            diff = v[cr] - base_r[cr]
            dirs = tab.direction[gp, gci][grp[cr]]
            x[cr] = np.where(dirs == 0, np.abs(diff), np.where(dirs == 1, diff, -diff))
        rg = np.flatnonzero(g_mode == _RATE)
        if rg.shape[0]:  # rate: one windowed_rate over the groups of every rate check
            rr = np.flatnonzero(g_mode[grp] == _RATE)
            r_first, r_grp = first[rr], grp[rr]
            r_grp = np.searchsorted(rg, r_grp)  # group number among the rate groups
            rp, rc = gp[rg], gci[rg]
            rk = keys[rg]
            pool = cc.store.rate
            lo, cnt = pool.find(rk)
            had = _block_rows(lo, cnt)  # the groups' samples: read now, replaced at the end of the batch
            xr, refs, kept = windowed_rate(v[rr], ts[rr], r_first, r_grp, (cnt, pool.col[0][had], pool.col[1][had]),
                                           tab.window_ms[rp, rc], tab.bucket_ms[rp, rc], tab.consecutive[rp, rc],
                                           tab.per_ms[rp, rc], tab.direction[rp, rc])
            x[rr] = xr
            rate_refs = (rr, refs)
            kg, kt, kv = kept
            pool.queue_rows(had, rk[kg], kt, kv)
        charging = {}
        for b in np.flatnonzero(mode == _CHARGING).tolist():
            a, e = int(b_lo[b]), int(b_lo[b + 1])
            if a == e:
                continue
            ga, ge = int(g_lo[b]), int(g_lo[b + 1])
            x[a:e], charging[b] = self._charging(ts[a:e], v[a:e], grp[a:e] - ga, gdev[ga:ge],
                                                 tab.min_load[gp[ga:ge], b_ci[b]][grp[a:e] - ga], dkeys)
        busy_in, had = cc.hyst_of(gdev, gci)
        level, out = self._hyst(x, ts, first, first_idx, grp, last, gp, gci, tab, busy_in, end=b_lo[r_blk + 1] - 1)
        live = np.flatnonzero(out.live) if out.live is not None else np.arange(last.shape[0])  # the others are idle
        busy = live[held(out.bits.take(live, axis=0), out.run.take(live, axis=0))]
        cc.store.hyst.queue_rows(had, keys[busy], np.hstack([out.bits.take(busy, axis=0), out.run.take(busy, axis=0),
                                                             out.start.take(busy, axis=0)]).astype(np.int64))
        results: list[_Res] = []
        for b, ci in enumerate(b_ci):
            a, e = int(b_lo[b]), int(b_lo[b + 1])
            if a == e:
                continue
            m = mode[b]
            extra: dict[str, Any] = {}
            if m == _CHANGE:
                extra["baseline"] = base_r[a:e]
            elif m == _RATE:
                rr, refs = rate_refs
                i0, i1 = np.searchsorted(rr, (a, e))
                extra["refs"] = {"ts": refs["ts"], "value": refs["value"], "index": refs["index"][i0:i1]}
            elif m == _CHARGING:
                extra["charging"] = charging[b]
            results.append(_Res(ci, rows[a:e], level[a:e], x[a:e], None, extra))
        return results

    def _charging(self, ts, v, grp, gdev, min_current, dkeys) -> tuple[np.ndarray, dict]:
        """1.0 where charging happens outside the site's charging hours or at an unregistered point, else 0.0."""
        keys = [dkeys[d] for d in gdev.tolist()]
        in_hours = np.ones(ts.shape[0], dtype=bool)
        approved_g = np.ones(len(keys), dtype=bool)
        # one site code per group (a Python comparison per site and device was quadratic in the sites)
        site_l = [k.partition("/")[0] for k in keys]
        site_c, site_at = _code(np.array(site_l, dtype=object))
        sites = [site_l[i] for i in site_at.tolist()]
        row_site = site_c[grp]
        points = getattr(self.rules, "charging_points", None)
        for si, site in enumerate(sites):
            cal = self.calendar(site)
            if cal is not None and not cal.always_charging:
                rows = np.flatnonzero(row_site == si)
                in_hours[rows] = cal.in_charging_window(ts[rows])
            allowed = points(site) if points is not None else frozenset()
            if allowed:
                g_rows = np.flatnonzero(site_c == si)
                approved_g[g_rows] = np.array([keys[g].partition("/")[2] in allowed for g in g_rows.tolist()],
                                              dtype=bool)
        approved = approved_g[grp]
        x = ((v > min_current) & (~in_hours | ~approved)).astype(np.float64)
        return x, {"outside_hours": ~in_hours, "unapproved": ~approved}

    def _run_imbalance(self, rows, d_, f_, t_, v_, dev_pid, tab: _Tables, cc) -> _Res | None:
        ci = _IMBALANCE
        rows = rows[tab.on[dev_pid[d_[rows]], ci]]
        if not rows.size:
            return None
        rows = rows[_dev_time_order(d_[rows], t_[rows], f_[rows])]
        first, grp, first_idx, last = group_layout(d_[rows])
        gdev = d_[rows[last]]
        gp = dev_pid[gdev]
        cstates = cc.get(ci, gdev)
        ts, v, f = t_[rows], v_[rows], f_[rows]
        phase_vals, phase_ts = [], []
        carry_ph, carry_pt = cc.phases(cstates, gdev.shape[0])
        for k, code in enumerate(_PHASE_FM):
            li = ffill_index(f == code, first_idx)
            phase_vals.append(np.where(li >= 0, v[np.maximum(li, 0)], carry_ph[grp, k]))
            phase_ts.append(np.where(li >= 0, ts[np.maximum(li, 0)], carry_pt[grp, k]))
        pv = np.vstack(phase_vals)
        pt = np.vstack(phase_ts)
        imax, imin = pv.max(axis=0), pv.min(axis=0)
        min_load = tab.min_load[gp, ci][grp]
        # the three phases must be measured together: a phase current from before an outage (or a stale sensor)
        # compared with fresh ones is not an imbalance
        together = (pt.max(axis=0) - pt.min(axis=0)) <= _PHASE_SKEW_MS
        with np.errstate(invalid="ignore", divide="ignore"):
            x = np.where(together & np.isfinite(imax) & np.isfinite(imin) & (imax >= min_load) & (imax > 0),
                         (imax - imin) / imax * 100.0, np.nan)
        level, out = self._hyst(x, ts, first, first_idx, grp, last, gp, ci, tab, cc.hyst(cstates))
        cc.put_imbalance(ci, gdev, out, np.ascontiguousarray(pv[:, last].T), np.ascontiguousarray(pt[:, last].T))
        return _Res(ci, rows, level, x, None, {"phases": pv})

    @staticmethod
    def _hyst(x, ts, first, first_idx, grp, last, gp, ci, tab: _Tables, busy, end=None):
        """``gp`` per group, ``ci`` one check or per group (several checks, ``end``: the last row of each row's
        check)."""
        G = last.shape[0]
        carry = HystCarry.zeros(G)
        if busy is not None:
            gi, hs = busy
            carry.bits[gi] = hs[:, 0:3].astype(bool)
            carry.run[gi] = hs[:, 3:6]
            carry.start[gi] = hs[:, 6:9]
        # the groups' (plan, check) rows of the tables: one flat index; graded_levels reads the rows of the live
        # groups only (a quiet group needs its lowest line alone)
        return graded_levels(x, ts, first, first_idx, grp, last, tab.lines.reshape(-1, 3), tab.clear.reshape(-1, 3),
                             tab.hold_n.ravel(), tab.hold_ms.ravel(), carry, end, at=gp * _NC + ci)

    # -------------------------------------------------------------------------------------------- emission
    def _emit(self, results: list[_Res], d_, f_, t_, v_, plans, dev_pid, tab: _Tables, olds, new_states,
              stated, n_dev: int, dev_id: np.ndarray | None = None) -> list[Finding]:
        """Combine levels per (device, kind) and emit. A (device, kind) that is clear now and was clear (no
        stored state) is skipped before any sorting: in a quiet batch that is nearly every row.

        ``dev_id`` (resident): the kind states are read from and written to the store's pool (applied before
        this returns: upkeep reads the new ones)."""
        kcode = [KIND_CODE[CHECKS[r.check].kind] if r.check >= 0 else -1 - r.check for r in results]
        raised = [(d_[r.rows[r.level > 0]] * _NK + kc) for r, kc in zip(results, kcode)]
        live_tab = np.zeros(n_dev * _NK, dtype=bool)
        live_tab[stated] = True
        for a in raised:
            live_tab[a] = True
        parts: list[tuple] = []
        for ri, r in enumerate(results):
            if not r.rows.shape[0]:
                continue
            dev = d_[r.rows]
            kc = kcode[ri]
            live = live_tab[dev * _NK + kc]
            if not live.any():
                continue
            loc = np.flatnonzero(live)
            kind = np.full(loc.shape[0], kc, np.int64)
            if r.check >= 0:
                slot = np.full(loc.shape[0], CHECKS[r.check].slot, np.int64)
            else:
                slot = _FM_SLOT[f_[r.rows[loc]]]
            parts.append((dev[loc], kind, slot, np.full(loc.shape[0], ri, np.int64), loc, r.rows[loc], r.level[loc],
                          r.x[loc]))
        if not parts:
            return []
        e_dev, e_kind, e_slot, e_res, e_loc, e_row, e_lvl, x_e = (np.concatenate(a) for a in zip(*parts))
        e_ts = t_[e_row]
        o = np.lexsort((e_slot, e_ts, e_kind, e_dev))
        e_dev, e_kind, e_slot, e_res, e_loc, e_row, e_lvl, e_ts, x_e = (
            a[o] for a in (e_dev, e_kind, e_slot, e_res, e_loc, e_row, e_lvl, e_ts, x_e))
        first, grp, first_idx, last = group_layout(e_dev * _NK + e_kind)
        G = last.shape[0]
        g_dev, g_kind = e_dev[last], e_kind[last]

        carry_slots = np.zeros((G, MAX_SLOTS), dtype=np.int8)
        carry_l = np.zeros(G, dtype=np.int8)
        carry_te = np.zeros(G, dtype=np.int64)
        carry_lt = np.zeros(G, dtype=np.int64)
        carry_x = np.full((G, MAX_SLOTS), np.nan)  # the kind state's last checked quantity per slot
        store = self._store if dev_id is not None else None
        if store is None:
            kstates = []
            for g in range(G):
                st = olds[g_dev[g]]
                ks = st["k"].get(KINDS[g_kind[g]]) if st else None
                kstates.append(ks)
                if ks:
                    carry_l[g] = ks["l"]
                    carry_te[g] = ks["te"]
                    carry_lt[g] = ks["lt"]
                    carry_slots[g, :len(ks["s"])] = ks["s"]
                    carry_x[g, :len(ks["x"])] = [_f(x) for x in ks["x"]]
            has_ks = np.array([ks is not None for ks in kstates], dtype=bool)

            def old_ep(g: int) -> dict | None:
                ks = kstates[g]
                return dict(ks["ep"]) if ks.get("ep") else None
        else:  # resident: from the store's pool, all groups at once
            g_key = dev_id[g_dev] * _NK + g_kind
            k_lo, k_cnt = store.kinds.find(g_key)
            has_ks = k_cnt > 0
            hit = np.flatnonzero(has_ks)
            pi = k_lo[hit]
            k_i, k_f = store.kinds.col[0][pi], store.kinds.col[2][pi]
            carry_l[hit], carry_te[hit], carry_lt[hit] = k_i[:, 0], k_i[:, 1], k_i[:, 2]
            carry_slots[hit] = store.kinds.col[1][pi]
            carry_x[hit] = k_f[:, :MAX_SLOTS]
            k_at = np.full(G, -1, dtype=np.int64)
            k_at[hit] = np.arange(hit.shape[0])


        li = np.empty((e_dev.shape[0], MAX_SLOTS), dtype=np.int64)
        slot_lvl = np.empty((e_dev.shape[0], MAX_SLOTS), dtype=np.int8)
        for col in range(MAX_SLOTS):
            li[:, col] = ffill_index(e_slot == col, first_idx)
            slot_lvl[:, col] = np.where(li[:, col] >= 0, e_lvl[np.maximum(li[:, col], 0)], carry_slots[grp, col])
        agg = slot_lvl.max(axis=1)
        prev = prev_in_group(agg, first, grp, carry_l)
        change = agg != prev
        # time of entering the current level; re-assert on the grid te + k*R
        idx = np.arange(agg.shape[0])
        lastchg = np.maximum.accumulate(np.where(change, idx, first_idx - 1))
        te = np.where(lastchg >= first_idx, e_ts[np.maximum(lastchg, 0)], carry_te[grp])
        prev_ts = prev_in_group(e_ts, first, grp, carry_lt)
        R = tab.reassert[dev_pid[g_dev]][grp]
        reassert = ~change & (agg > 0) & ((e_ts - te) // R > (prev_ts - te) // R)
        emit = np.flatnonzero(change | reassert)
        # episodes: the row where the current raised stretch began (before first_idx: it began in an earlier batch)
        ep_start = np.maximum.accumulate(np.where((agg > 0) & (prev == 0), idx, -1))
        ep_x = np.where(np.isnan(x_e), -np.inf, x_e)
        v_e = v_[e_row]
        # Per row, the episode so far, all rows at once: an episode is the stretch of rows from its start ``ep_lo``
        # (non-decreasing over the rows, and every row of a stretch is raised), so a running maximum of
        # ``ep_lo * n + rank`` is the running maximum within the stretch. Ranks order rows by value and, among
        # equal values, put the earliest highest: the running maximum is the first peak (what argmax picks).
        ne = agg.shape[0]
        ep_lo = np.maximum(ep_start, first_idx)
        by_x = np.lexsort((-idx, ep_x))
        rank = np.empty(ne, dtype=np.int64)
        rank[by_x] = idx
        raised = agg > 0
        peak_at = by_x[np.clip(np.maximum.accumulate(ep_lo * ne + np.where(raised, rank, -1)) - ep_lo * ne, 0,
                               max(ne - 1, 0))]
        worst_at = np.maximum.accumulate(ep_lo * 4 + agg) - ep_lo * 4

        if store is None:  # plain engine: ``episode`` per finding and per raised kind, from the state dicts
            # what ``episode`` reads, as lists (numpy scalars cost more)
            ep_lo_l, agg_l_, fi_l, raised_l = ep_lo.tolist(), agg.tolist(), first_idx.tolist(), raised.tolist()
            peak_l, ts_l, x_l, v_l, worst_l = peak_at.tolist(), e_ts.tolist(), x_e.tolist(), v_e.tolist(), \
                worst_at.tolist()
            ks_l = (carry_l.astype(bool) & has_ks).tolist()
            memo: dict[int, dict | None] = {}

            def episode(g: int, e: int) -> dict | None:
                """The episode that row ``e`` is in (or, for a clear, the one it ends), up to and including ``e``."""
                if e in memo:  # a finding at a group's last row: the kind state's episode is the same (a copy)
                    ep = memo[e]
                    return dict(ep) if ep is not None else None
                lo = ep_lo_l[e]
                hi = e + 1 if agg_l_[e] > 0 else e
                carried = lo == fi_l[e] and ks_l[g]
                ep = old_ep(g) if carried else None
                if hi > lo and raised_l[hi - 1]:
                    q = hi - 1
                    j = peak_l[q]
                    # peak: the checked quantity (the finding's value and threshold unit: t, mm/d, % ...);
                    # peak_reading: the raw reading behind it
                    xj = x_l[j]
                    cand = {"start": ts_l[lo], "peak": None if xj != xj else xj, "peak_ts": ts_l[j],
                            "peak_reading": v_l[j], "first_breach": ts_l[lo],
                            "last_breach": ts_l[q], "worst": worst_l[q]}
                    if ep is None:
                        ep = cand
                    else:
                        if (cand["peak"] if cand["peak"] is not None else -math.inf) > (
                                ep.get("peak") if ep.get("peak") is not None else -math.inf):
                            ep.update(peak=cand["peak"], peak_ts=cand["peak_ts"], peak_reading=cand["peak_reading"])
                        ep["last_breach"] = cand["last_breach"]
                        ep["worst"] = max(ep.get("worst", 0), cand["worst"])
                memo[e] = ep
                return ep

        # the slot that explains each emitted level: the entry's own if it carries the level, else the worst one
        findings = []
        if emit.size:
            lv = agg[emit]
            col = e_slot[emit]
            sl = slot_lvl[emit]
            own = sl[np.arange(emit.shape[0]), col]
            col = np.where((lv > 0) & (own != lv), np.argmax(sl == lv[:, None], axis=1), col)
            k = li[emit, col]
            kc = np.maximum(k, 0)
            krow = e_row[kc]
            cols = (grp[emit].tolist(), lv.tolist(), prev[emit].tolist(), e_ts[emit].tolist(), col.tolist(),
                    k.tolist(), e_res[kc].tolist(), e_loc[kc].tolist(), x_e[kc].tolist(), v_[krow].tolist(),
                    t_[krow].tolist(), f_[krow].tolist(), change[emit].tolist())
            g_dev_l, g_kind_l = g_dev.tolist(), g_kind.tolist()
            if store is not None:  # resident: every finding's episode at once
                eps = iter(_episodes_at(emit, ep_lo, agg, first_idx, grp, carry_l, has_ks, k_at, k_i, k_f, peak_at,
                                        worst_at, e_ts, x_e, v_e))
            for e, g, level, before, ts, c, kk, ri, loc, x, raw, rts, fm, changed in zip(emit.tolist(), *cols):
                f = self._finding(results, plans[g_dev_l[g]], KINDS[g_kind_l[g]], level, before, ts, c,
                                  kk, ri, loc, x, raw, rts, fm, float(carry_x[g, c]), changed)
                ep = episode(g, e) if store is None else next(eps)
                if ep is not None:
                    f.evidence["episode"] = ep
                if not level:
                    f.evidence["cleared_by"] = {"ts": rts, "value": _j(raw)}
                ns = new_states.get(g_dev_l[g])  # none for an idle device: no gateway
                via = ns.get("via") if ns is not None else None
                if via:
                    f.evidence["gateway"] = via
                findings.append(f)
        # write kind states
        lj = li[last]
        has = lj >= 0
        if store is not None:  # resident: the groups' rows replace theirs in the pool
            agg_g = agg[last]
            slots_g = slot_lvl[last]
            keep = np.flatnonzero((agg_g > 0) | slots_g.any(axis=1))
            w_i = np.zeros((keep.shape[0], _KI), np.int64)
            w_f = np.full((keep.shape[0], _KF), np.nan)
            w_i[:, 0], w_i[:, 1], w_i[:, 2] = agg_g[keep], te[last][keep], e_ts[last][keep]
            w_f[:, :MAX_SLOTS] = np.where(has, x_e[np.maximum(lj, 0)], carry_x)[keep]
            # the episode of each raised group at its last row (what ``episode`` gives there), all at once: the
            # rows' own (a raised last row always has one), merged into the stored one where it goes on
            ra = np.flatnonzero(agg_g[keep] > 0)
            g = keep[ra]
            e = last[g]
            lo_e, pk = ep_lo[e], peak_at[e]
            c_peak = x_e[pk]
            c_i = np.column_stack([np.ones_like(e), e_ts[lo_e], e_ts[pk], e_ts[lo_e], e_ts[e], worst_at[e]])
            c_f = np.column_stack([c_peak, v_e[pk]])
            j = k_at[g]
            go_on = (lo_e == first_idx[e]) & (carry_l[g] > 0) & has_ks[g]
            go_on[go_on] = k_i[j[go_on], 3] != 0
            if go_on.any():
                w, jw = np.flatnonzero(go_on), j[go_on]
                o_i, o_f = k_i[jw, 3:9].copy(), k_f[jw, MAX_SLOTS:].copy()
                better = np.where(np.isnan(c_peak[w]), -np.inf, c_peak[w]) > np.where(np.isnan(o_f[:, 0]), -np.inf,
                                                                                      o_f[:, 0])
                o_f[better] = c_f[w[better]]
                o_i[better, 2] = c_i[w[better], 2]  # peak_ts
                o_i[:, 4] = c_i[w, 4]  # last breach
                o_i[:, 5] = np.maximum(o_i[:, 5], c_i[w, 5])  # worst
                c_i[w], c_f[w] = o_i, o_f
            w_i[ra, 3:9] = c_i
            w_f[ra, MAX_SLOTS:] = c_f
            store.kinds.queue(g_key, g_key[keep], w_i, slots_g[keep], w_f)
            store.kinds.apply()
            return findings
        xl = np.where(has, x_e[np.maximum(lj, 0)], np.nan).tolist()
        has = has.tolist()
        slot_l = slot_lvl[last].tolist()
        agg_l, te_l, lt_l = agg[last].tolist(), te[last].tolist(), e_ts[last].tolist()
        for g, (d, kc) in enumerate(zip(g_dev.tolist(), g_kind.tolist())):
            kind = KINDS[kc]
            ns = new_states[d]
            ns_k = ns["k"]
            if ns_k is _K0 or (olds[d] is not None and ns_k is olds[d]["k"]):  # copy on the first write
                ns_k = ns["k"] = dict(ns_k)
            nsl = KIND_SLOTS[kind]
            slots = slot_l[g][:nsl]
            if not agg_l[g] and not any(slots):
                ns_k.pop(kind, None)
                continue
            ks = kstates[g]
            xs = list(ks["x"]) if ks else [None] * nsl
            hg, xg = has[g], xl[g]
            for c in range(nsl):
                if hg[c]:
                    xs[c] = None if xg[c] != xg[c] else xg[c]
            ks_new = {"l": agg_l[g], "te": te_l[g], "lt": lt_l[g], "s": slots, "x": xs}
            if agg_l[g]:
                ep = episode(g, int(last[g]))
                if ep is not None:
                    ks_new["ep"] = ep
            ns_k[kind] = ks_new
        return findings

    def _finding(self, results, p: DevicePlan, kind: str, level: int, before: int, ts: int, col: int, k: int,
                 ri: int, loc: int, x: float, raw: float, rts: int, fm: int, x_kept: float,
                 changed: bool) -> Finding:
        ev: dict[str, Any] = {"level": _LNAMES[level], "previous": _LNAMES[before], "reassert": not changed}
        if k >= 0:
            r = results[ri]
            metric = FM_LIST[fm][1] if r.check < 0 or CHECKS[r.check].metric != "*" else "*"
        else:  # the worst slot has no reading in this batch: take what the state remembered
            r = None
            x = x_kept
            raw, rts = x, ts
            metric = ""
        if kind in FAULT_KINDS:
            if not metric:
                metric = list(FAMILIES[p.family])[col]
            return self._fault_finding(p, kind, level, ts, metric, raw, ev, rts)
        ci = r.check if r is not None else _KIND_SLOT_CHECK[(kind, col)]
        c = CHECKS[ci]
        metric = metric or c.metric
        pp = _base_plan(p)  # the plan's own fields, without a __getattr__ per read
        site, _, device = p.key.partition("/") if type(p) is _SharedPlan else (p.site, "", p.device)
        prm = pp.checks.get(ci)
        if prm is None:  # check switched off by a rule reload while raised: report the clear plainly
            return Finding(site, device, p.family, kind, "hazard", _LEVELS[level], ts, metric, x, _NAN,
                           "check disabled by configuration", "", False, ev)
        if level:
            threshold = prm.lines[level - 1]
            rule = prm.rules[level - 1]
        else:
            ref_level = before or 1
            threshold = prm.clear_lines[ref_level - 1]
            rule = (f"cleared: {metric} below {threshold:.6g} {prm.unit} "
                    f"({prm.clear_ratio:g} x the {LEVEL_NAMES[ref_level - 1]} line)")
        ev["value"] = raw
        ev["reading_ts"] = rts
        ev.update(prm.static_evidence)
        ev["lines"] = dict(ev["lines"])
        if r is not None and r.extra:
            if "baseline" in r.extra:
                ev["baseline"] = float(r.extra["baseline"][loc])
            if "refs" in r.extra:
                refs = r.extra["refs"]
                ev["window_ref"] = [[int(refs["ts"][i]), float(refs["value"][i])]
                                    for i in refs["index"][loc].tolist() if i >= 0]
            if "charging" in r.extra:
                ev["outside_charging_hours"] = bool(r.extra["charging"]["outside_hours"][loc])
                ev["unapproved_point"] = bool(r.extra["charging"]["unapproved"][loc])
            if "phases" in r.extra:
                ev["phases_a"] = [_j(r.extra["phases"][i, loc]) for i in range(3)]
        if pp.rules.overridden_by:
            ev["config"] = list(pp.rules.overridden_by)
        return Finding(site, device, p.family, kind, "hazard", _LEVELS[level], ts, metric, x,
                       float(threshold), rule, prm.source, level >= prm.major_from, ev)

    def _fault_finding(self, p: DevicePlan, kind: str, level: int, ts: int, metric: str, value: float,
                       ev: dict, rts: int) -> Finding:
        pp = _base_plan(p)
        s = pp.sensors[metric]
        if kind == "fault.out_of_range":
            threshold = s.hi if value > s.hi else s.lo
            rule = f"{metric} outside its physical range [{s.lo:g}, {s.hi:g}]"
        elif kind == "fault.spike":
            threshold = s.step
            rule = f"{metric} jumped more than {s.step:g} and came back"
        else:
            threshold = s.flat_ms / 1000
            rule = f"{metric} unchanged (+-{s.eps:g}) for >= {s.flat_ms / 1000:g} s"
        if not level:
            rule = "cleared: " + rule
        ev.update({"value": value, "reading_ts": rts, "withheld_from_hazards": bool(level)})
        site, _, device = p.key.partition("/") if type(p) is _SharedPlan else (p.site, "", p.device)
        return Finding(site, device, p.family, kind, "fault", _LEVELS[level], ts, metric, value,
                       float(threshold), rule, pp.fault_source, False, ev)

    # ============================================================================================ clock
    def tick(self, now_ms: int, states: dict[str, dict], keys: Any = None) -> list[Finding]:
        """Silent devices (deadman), judged against the wall clock; re-asserts while they stay silent.

        ``keys``: only these devices (the ones a ``deadman.DeadlineIndex`` says are due); all when None. A device
        whose state changes gets a new dict (callers tell what to save by identity) with ``due`` set to when
        the clock must look at it again."""
        out: list[Finding] = []
        for key in (list(states) if keys is None else keys):
            st = _as_dict(states.get(key))
            if not isinstance(st, dict) or st.get("v") not in _READABLE or st.get("dl") is None:
                continue
            if st.get("off") is not None:
                continue  # announced power-off: no deadman until it reports again
            site, _, device = key.partition("/")
            p = self.plan(site, device, st["fam"])
            dl, offat = st["dl"], st.get("offat")
            if now_ms <= dl:
                if offat is not None and now_ms > offat:  # quiet outside working time: off, not a fault
                    ns = dict(st)
                    cal = self.calendar(site)
                    why = cal.state_at(now_ms).replace("_", " ") if cal is not None else "outside working time"
                    h = self._health(p, ns, _OFF, offat, f"off: {why} (site calendar)")
                    ns["offat"], ns["due"] = None, dl
                    if self._resident(ns):
                        _drop_nulls(ns)
                    states[key] = self._compact(ns)
                    if h is not None:
                        out.append(h)
                continue
            sil = st.get("sil") or _SIL0
            silent_for = now_ms - st["lt"]
            reassert_ms = p.reassert_ms
            if not sil[0]:
                lvl = p.fault_levels["fault.silent"]
                ns = dict(st)
                ns["sil"] = [lvl, now_ms, now_ms]
                ns["due"] = now_ms + reassert_ms
                states[key] = ns
                out.append(self._silent_finding(p, Level(lvl), now_ms, silent_for, ns))
                h = self._health(p, ns, _SILENT, now_ms, "silent: no reading within its limit")
                if h is not None:
                    out.append(h)
            elif now_ms - sil[2] >= reassert_ms:
                ns = dict(st)
                ns["sil"] = [sil[0], sil[1], now_ms]
                ns["due"] = now_ms + reassert_ms
                states[key] = ns
                f = self._silent_finding(p, Level(sil[0]), now_ms, silent_for, ns)
                f.evidence["reassert"] = True
                out.append(f)
        return out

    @staticmethod
    def next_due(st: Any) -> int | None:
        """When the clock must next look at this device (for a ``deadman.DeadlineIndex``)."""
        if type(st) is IdleState:
            return st.due
        if not isinstance(st, dict) or st.get("off") is not None:
            return None
        return st.get("due", st.get("dl"))

    def _silent_finding(self, p: DevicePlan, level: Level, ts: int, silent_ms: int, st: dict,
                        cad: list | None = None) -> Finding:
        if cad is None:
            cad = self._times("cad", f"{p.site}/{p.device}", st)
        limit = deadman.limit_ms(p, cad) / 1000
        interval = deadman.interval_ms(p, cad) / 1000
        learned = len(cad) >= p.min_gaps
        rule = (f"no reading for >= {limit:g} s ({p.silent_after:g} x {'learned' if learned else 'default'} "
                f"interval {interval:g} s, bounded to {p.silent_floor_ms / 1000:g}-{p.silent_ceiling_ms / 1000:g} s)")
        if p.follows_calendar:
            rule += ", counted in working time"
        ev = {"last_reading_ts": st.get("lt"), "silent_s": silent_ms / 1000, "reassert": False,
              "interval_s": interval, "interval_learned": learned, "limit_s": limit}
        if st.get("via"):
            ev["gateway"] = st["via"]
        return Finding(p.site, p.device, p.family, "fault.silent", "fault", level, ts, "*", silent_ms / 1000, limit,
                       rule if level else "cleared: readings resumed", p.fault_source, False, ev)

    def on_device_status(self, ds: DeviceStatus, states: dict[str, dict]) -> list[Finding]:
        """A device announcing power off (status message or last will) is *off* until it reports or says it is
        on again: no deadman, and a standing silent fault is cleared (off is not broken)."""
        if ds.family not in FAMILIES:
            return []
        key = f"{ds.site}/{ds.device}"
        st = self._readable(key, states.get(key))
        if st is None:
            st = _new_state(ds.family)
        if st.get("lt") is not None and ds.ts < st["lt"]:
            return []  # older than its readings: stale
        p = self.plan(ds.site, ds.device, st["fam"])
        ns = dict(st)
        out: list[Finding] = []
        if not ds.online:
            ns["off"], ns["due"], ns["offat"] = ds.ts, None, None
            if (ns.get("sil") or _SIL0)[0]:
                f = self._silent_finding(p, Level.CLEAR, ds.ts, ds.ts - (ns["lt"] or ds.ts), ns)
                out.append(replace(f, rule="cleared: the device announced it is powered off"))
                ns["sil"] = _SIL0
            h = self._health(p, ns, _OFF, ds.ts, f"off: announced ({ds.reason or 'power off'})")
        else:
            ns["off"] = None
            dl, offat = deadman.deadlines(p, self.calendar(ds.site), ds.ts, self._times("cad", key, ns), ns.get("via"))
            ns["lt"] = max(ns["lt"] or ds.ts, ds.ts)
            ns["dl"], ns["offat"] = dl, offat
            ns["due"] = min(dl, offat) if offat is not None else dl
            h = self._health(p, ns, _OK, ds.ts, "announced on")
        if h is not None:
            out.append(h)
        if self._resident(ns):
            _drop_nulls(ns)
        states[key] = self._compact(ns)
        return out

    def on_status(self, status: GatewayStatus, states: dict[str, dict]) -> list[Finding]:
        """Gateway offline (MQTT last will) raises a fault; back online clears it. Older statuses are ignored."""
        key = f"{status.site}/gateway:{status.gateway}"
        st = states.get(key)
        if not (isinstance(st, dict) and st.get("v") in _READABLE and st.get("gw")):
            st = {"v": STATE_VERSION, "gw": True, "ts": None, "l": 0, "te": 0}
        if st["ts"] is not None and status.ts < st["ts"]:
            return []
        ns = dict(st)
        ns["ts"] = status.ts
        faults = self.rules.defaults.faults
        lvl = {"yellow": 1, "orange": 2, "red": 3}[faults.gateway_offline_level]
        out = []
        if not status.online and not st["l"]:
            ns["l"], ns["te"] = lvl, status.ts
            out.append(self._gateway_finding(status, Level(lvl), "gateway offline (MQTT last will)"))
        elif status.online and st["l"]:
            ns["l"], ns["te"] = 0, status.ts
            f = self._gateway_finding(status, Level.CLEAR, "cleared: gateway back online")
            f.evidence["offline_s"] = (status.ts - st["te"]) / 1000
            out.append(f)
        states[key] = ns
        return out

    @staticmethod
    def _gateway_finding(status: GatewayStatus, level: Level, rule: str) -> Finding:
        return Finding(status.site, f"gateway:{status.gateway}", "gateway", "fault.gateway_offline", "fault", level,
                       status.ts, "online", 1.0 if status.online else 0.0, 1.0, rule, "MQTT last will", False,
                       {"online": status.online, "detail": dict(status.detail)})

    # ============================================================================================ state
    def export_state(self, key: str, st: Any) -> Any:
        """The full, JSON-able state of a device (``m`` filled in from the store when the engine is resident)."""
        st = _as_dict(st)
        if not isinstance(st, dict) or "m" in st or st.get("gw"):
            return st
        store = self._store
        m = store.block(key)
        if m is None:
            return st
        return _full_state(st, m, store.checks(key), store.times_of("cad", key), store.times_of("cov", key),
                           store.kinds_of(key), store.outages(key))

    def export_states(self, states: dict[str, Any]) -> dict[str, Any]:
        """``export_state`` of every state in ``states`` (key → exported state), the same states computed at once:
        the detect stage checkpoints thousands of devices a round, and one by one a device cost ~100 µs, nearly
        all of it numpy call overhead on the few rows each pool holds for it (three binary searches per check
        pool, a ``tolist`` per slice). Here the store's parts of all resident devices are read with one lookup
        per pool and one ``tolist`` per column (``_SeriesStore.blocks_of`` and the other ``*_many`` readers),
        then sliced per device. Like ``process``, without the cyclic collector: a chunk of 1,000 states is some
        50,000 small containers (none cyclic), and each collection their allocation triggers would walk the
        worker's state table again (with it, the 25,000-device fleet bench's export took 1.7x as long in chunks of
        1,000 keys, 3.6x all at once)."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._export_states(states)
        finally:
            if enabled:
                gc.enable()

    def _export_states(self, states: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        keys, ids, full = [], [], []
        at = self._store.at
        for key, st in states.items():
            st = out[key] = _as_dict(st)
            if isinstance(st, dict) and "m" not in st and not st.get("gw"):
                a = at.get(key)
                if a is not None:  # resident: its parts are in the store (without a block: exported as it is)
                    keys.append(key)
                    ids.append(a)
                    full.append(st)
        if keys:
            store = self._store
            a = np.array(ids, dtype=np.int64)
            for key, st, m, c, cad, cov, k, og in zip(keys, full, store.blocks_of(a), store.checks_many(a),
                                                      store.times_many("cad", a), store.times_many("cov", a),
                                                      store.kinds_many(a), store.outages_many(a)):
                out[key] = _full_state(st, m, c, cad, cov, k, og)
        return out

    def drop_resident(self) -> None:
        """Forget every stored series block (the caller's states are to be reloaded in full)."""
        self._store.clear()

    def _resident(self, st: dict) -> bool:
        """A state whose ``m``, ``c``, ``cad`` and ``cov`` are in the store."""
        return self.resident and "m" not in st

    def _times(self, name: str, key: str, st: dict) -> list:
        """``cad`` or ``cov`` of a state: from the state, or from the store for a resident one."""
        if name in st or not self._resident(st):
            return st.get(name) or []
        return self._store.times_of(name, key)

    def _og(self, key: str, st: dict) -> list:
        """``og`` of a state: from the state, or from the store for a resident one."""
        if "og" in st or not self._resident(st):
            return st.get("og") or []
        return self._store.outages(key)

    def _kind_level(self, key: str, st: dict, kind: str) -> int:
        """The level a device's kind holds: from the state, or from the store for a resident one."""
        if "k" in st or not self._resident(st):
            ks = (st.get("k") or {}).get(kind)
            return (ks.get("l") or 0) if ks else 0
        a = self._store.at.get(key)
        if a is None:
            return 0
        pool = self._store.kinds
        lo, cnt = pool.find(np.array([a * _NK + KIND_CODE[kind]], dtype=np.int64))
        return int(pool.col[0][lo[0], 0]) if cnt[0] else 0

    def _set_cov(self, key: str, st: dict, cov: list) -> None:
        if "cov" in st or not self._resident(st) or key not in self._store.at:
            st["cov"] = cov
            return
        k = np.array([self._store.at[key]], dtype=np.int64)
        self._store.cov.queue(k, np.repeat(k, len(cov)), np.array(cov, dtype=np.int64).reshape(-1, 2))
        self._store.cov.apply()

    def _checks(self, key: str, st: dict) -> dict:
        """``c`` of a state: from the state, or from the store for a resident one."""
        c = st.get("c")
        if c is None and "m" not in st:
            c = self._store.checks(key)
        return c or {}

    def _series_floats(self, key: str, st: dict) -> list:
        """``m[1]`` of a state: from the state, or from the store for a resident one."""
        m = st.get("m")
        if m is None:
            m = self._store.block(key) or [[], _EMPTY_F * _FAM_NM[st["fam"]]]
        return m[1]

    def _readable(self, key: str, st: Any) -> dict | None:
        """``_upgrade``, knowing that a resident state's series block is in the store."""
        st = _as_dict(st)
        if (isinstance(st, dict) and "m" not in st and st.get("v") == STATE_VERSION and st.get("fam") in FAMILIES
                and self._store.has(key, FAM_CODE[st["fam"]])):
            return st
        return _upgrade(st)

    @staticmethod
    def _write_back(states, dkeys, new_states, idled: dict | None = None, late: tuple | None = None) -> None:
        """The batch's states into the caller's dict: the dicts, and the ``IdleState`` of each resident device that
        stayed idle (``idled``). The late lane reads and changes the states of its devices as dicts: an idle one
        with late readings is written as a dict (and put among ``new_states``: ``_compact_all`` makes it idle again
        after the lane)."""
        for d, ns in new_states.items():
            states[dkeys[d]] = ns
        if idled:
            states.update(zip([dkeys[d] for d in idled], idled.values()))
        if late is not None:
            for d in np.unique(late[0]).tolist():
                st = states.get(dkeys[d])
                if type(st) is IdleState:
                    states[dkeys[d]] = new_states[d] = st.as_dict()

    def _compact(self, st: Any) -> Any:
        """A resident state that holds nothing but its times, as an ``IdleState``; any other state as it is."""
        return _idled(st) if self.resident and type(st) is dict else st

    @staticmethod
    def _compact_all(states, dkeys, new_states) -> None:
        """The end of a resident batch (after the late lane, which still writes to the batch's states): the
        ``_compact`` of every state written, in one loop."""
        for d, ns in new_states.items():
            states[dkeys[d]] = _idled(ns)


def _check_index(olds: list) -> dict[str, tuple[list[int], list[dict]]]:
    """Per check id: the devices (batch numbers, ascending) whose state holds that check, and the check states —
    one pass over the states that have any, so a check then looks up only the devices that have its state."""
    cix: dict[str, tuple[list[int], list[dict]]] = {}
    for d, st in enumerate(olds):
        if st and (c := st["c"]):
            for cid, cs in c.items():
                if cs is not None:
                    e = cix.get(cid)
                    if e is None:
                        e = cix[cid] = ([], [])
                    e[0].append(d)
                    e[1].append(cs)
    return cix


def _sparse(cix: dict, cid: str, gdev: np.ndarray) -> tuple[list[int], list[dict]]:
    """(group numbers, check states) of the groups whose device has a state for ``cid``; ``gdev`` ascending."""
    e = cix.get(cid)
    if not e or not gdev.shape[0]:
        return [], []
    devs = np.array(e[0], dtype=np.int64)
    pos = np.searchsorted(gdev, devs)
    hit = np.flatnonzero(pos < gdev.shape[0])
    hit = hit[gdev[pos[hit]] == devs[hit]]
    css = e[1]
    return pos[hit].tolist(), [css[i] for i in hit.tolist()]


def _store_hyst(out: HystCarry, gdev: np.ndarray, ci: int, cstates: tuple, check_carry: dict) -> None:
    """Only a latch that is set or a hold run in progress needs remembering; an idle check stores nothing."""
    had = np.zeros(gdev.shape[0], dtype=bool)
    had[cstates[0]] = True
    busy = held(out.bits, out.run)
    sel = np.flatnonzero(busy | had)
    if not sel.size:
        return
    rows = np.hstack([out.bits[sel], out.run[sel], out.start[sel]]).astype(np.int64).tolist()
    for g, h in zip(sel.tolist(), rows):
        check_carry[(int(gdev[g]), ci)] = {"h": h} if busy[g] else None


def _hyst_rows(out: HystCarry) -> list[list[int]]:
    return np.hstack([out.bits, out.run, out.start]).astype(np.int64).tolist()



# Fields a resident state leaves out while they hold their default (null, no silence, healthy since ever, no
# outage record): a healthy device's state is 5 keys (``v fam lt dl due``: a 184 B dict in CPython, against 272 B
# from 6 to 10 keys and 464 B from 11 on); every reader uses ``.get`` with the default, and ``export_state`` puts
# them back.
_SPARSE = {"off": None, "offat": None, "sx": None, "sil": _SIL0, "hs": _HS0, "og": _NONE0, "via": None}


_IN_STORE = ("m", "c", "cad", "cov", "k", "og")  # what a resident state leaves to the store


def _full_state(st: dict, m: list, c: dict, cad: list, cov: list, k: dict, og: list) -> dict:
    """A resident state with what it leaves to the store (``_IN_STORE``, read from it) and its ``_SPARSE`` fields
    put back: the exported state (``export_state``, ``export_states``)."""
    out = dict(st)
    out["m"], out["c"], out["cad"], out["cov"], out["k"], out["og"] = m, c, cad, cov, k, og
    for f, v in _SPARSE.items():
        if f not in out:
            out[f] = list(v) if type(v) is list else v
    return out


def _drop_nulls(ns: dict) -> None:
    for k, v in _SPARSE.items():
        if k in ns and ns[k] == v:
            del ns[k]


class _DictCarry:
    """Check states read from and written to the states' ``c`` dicts (plain engine and late lane)."""

    def __init__(self, olds: list, check_carry: dict):
        self.cix = _check_index(olds)
        self.out = check_carry

    def get(self, ci: int, gdev: np.ndarray) -> tuple[list[int], list[dict]]:
        return _sparse(self.cix, CHECKS[ci].id, gdev)

    @staticmethod
    def hyst(cstates) -> tuple[np.ndarray, np.ndarray] | None:
        busy = [(g, h) for g, cs in zip(*cstates) if cs and (h := cs.get("h"))]
        if not busy:
            return None
        return (np.fromiter((g for g, _ in busy), np.int64, len(busy)),
                np.array([h for _, h in busy], dtype=np.int64).reshape(-1, 9))

    @staticmethod
    def hist(cstates, g_count: int) -> tuple:
        hist = [_NO_HIST] * g_count
        for g, cs in zip(*cstates):
            if cs and (h := cs.get("hist")):
                hist[g] = h
        return hist_arrays(hist)

    @staticmethod
    def phases(cstates, g_count: int) -> tuple[np.ndarray, np.ndarray]:
        carry_ph = np.full((g_count, 3), np.nan)
        carry_pt = np.full((g_count, 3), _NO_TS, dtype=np.int64)
        for g, cs in zip(*cstates):
            if cs:
                if ph := cs.get("ph"):
                    carry_ph[g] = np.array(ph, dtype=np.float64)
                if pt := cs.get("pt"):
                    carry_pt[g] = pt
        return carry_ph, carry_pt

    def put_rate(self, ci: int, gdev: np.ndarray, kept: tuple, out: HystCarry, cstates) -> None:
        check_carry = self.out
        busy = np.flatnonzero(held(out.bits, out.run)).tolist()
        for g, hs in zip(gdev.tolist(), hist_lists(kept, gdev.shape[0])):
            check_carry[(g, ci)] = {"hist": hs}
        if busy:
            gl = gdev[busy].tolist()
            for g, h in zip(gl, np.hstack([out.bits[busy], out.run[busy], out.start[busy]]).astype(
                    np.int64).tolist()):
                check_carry[(g, ci)]["h"] = h

    def put_hyst(self, ci: int, gdev: np.ndarray, out: HystCarry, cstates) -> None:
        _store_hyst(out, gdev, ci, cstates, self.out)

    def put_imbalance(self, ci: int, gdev: np.ndarray, out: HystCarry, pv_last: np.ndarray,
                      pt_last: np.ndarray) -> None:
        phases = _nullable(pv_last.ravel())
        phase_t = pt_last.ravel().tolist()
        for g, h in enumerate(_hyst_rows(out)):  # one per electrical device: the last phase currents are kept
            self.out[(int(gdev[g]), ci)] = {"h": h, "ph": phases[3 * g:3 * g + 3], "pt": phase_t[3 * g:3 * g + 3]}


class _StoreCarry:
    """Check states read from and written to the store's pools (resident engine): per check, a few array
    operations over all its groups, no Python per device."""

    def __init__(self, store: _SeriesStore, dev_id: np.ndarray):
        self.store = store
        self.dev_id = dev_id  # batch device number -> id in the store

    def get(self, ci: int, gdev: np.ndarray) -> np.ndarray:
        return self.dev_id[gdev] * _NC + ci

    def hyst(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        pool = self.store.hyst
        if not pool.key.shape[0]:
            return None
        lo, cnt = pool.find(keys)
        gi = np.flatnonzero(cnt)
        if not gi.shape[0]:
            return None
        return gi, pool.col[0][lo[gi]]

    def hyst_of(self, gdev: np.ndarray, gci: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray] | None, np.ndarray]:
        """``hyst`` for groups of several checks (``_run_checks``), and the pool positions of what was found. The
        pool holds few entries (latches set, holds running) and a batch brings tens of thousands of groups: the
        pool's entries are placed among the groups (through the devices' batch numbers and a (device, check)
        table) instead of every group's key searched in the pool."""
        pool = self.store.hyst
        k = pool.key
        if not k.shape[0] or not gdev.shape[0]:
            return None, np.zeros(0, dtype=np.int64)
        n_inv = max(int(k[-1]) // _NC, int(self.dev_id.max())) + 1
        if k.shape[0] + n_inv + self.dev_id.shape[0] * _NC > 8 * gdev.shape[0]:
            # a large pool or fleet for this batch (a small batch): search the groups' keys instead
            lo, cnt = pool.find(self.dev_id[gdev] * _NC + gci)
            g = np.flatnonzero(cnt)
            pos = lo[g]
        else:
            inv = np.full(n_inv, -1, dtype=np.int64)  # store id -> batch device
            ok = np.flatnonzero(self.dev_id >= 0)
            inv[self.dev_id[ok]] = ok
            table = np.full((self.dev_id.shape[0], _NC), -1, dtype=np.int32)  # (device, check) -> group
            table[gdev, gci] = np.arange(gdev.shape[0])
            d = inv[k // _NC]
            at = np.flatnonzero(d >= 0)
            g = table[d[at], k[at] % _NC].astype(np.int64)
            hit = g >= 0
            pos, g = at[hit], g[hit]
        if not pos.shape[0]:
            return None, pos
        return (g, pool.col[0][pos]), pos

    def hist(self, keys: np.ndarray, g_count: int) -> tuple:
        pool = self.store.rate
        lo, cnt = pool.find(keys)
        rows = _block_rows(lo, cnt)
        return cnt, pool.col[0][rows], pool.col[1][rows]

    def phases(self, keys: np.ndarray, g_count: int) -> tuple[np.ndarray, np.ndarray]:
        pool = self.store.phase
        carry_ph = np.full((g_count, 3), np.nan)
        carry_pt = np.full((g_count, 3), _NO_TS, dtype=np.int64)
        lo, cnt = pool.find(keys)
        gi = np.flatnonzero(cnt)
        carry_ph[gi] = pool.col[0][lo[gi]]
        carry_pt[gi] = pool.col[1][lo[gi]]
        return carry_ph, carry_pt

    def _put_busy(self, keys: np.ndarray, out: HystCarry) -> None:
        busy = np.flatnonzero(held(out.bits, out.run))
        self.store.hyst.queue(keys, keys[busy], np.hstack([out.bits[busy], out.run[busy], out.start[busy]]).astype(
            np.int64))

    def put_rate(self, ci: int, gdev: np.ndarray, kept: tuple, out: HystCarry, keys: np.ndarray) -> None:
        kg, kt, kv = kept
        self.store.rate.queue(keys, keys[kg], kt, kv)
        self._put_busy(keys, out)

    def put_hyst(self, ci: int, gdev: np.ndarray, out: HystCarry, keys: np.ndarray) -> None:
        self._put_busy(keys, out)

    def put_imbalance(self, ci: int, gdev: np.ndarray, out: HystCarry, pv_last: np.ndarray,
                      pt_last: np.ndarray) -> None:
        keys = self.get(ci, gdev)
        self.store.hyst.queue(keys, keys, np.hstack([out.bits, out.run, out.start]).astype(np.int64))
        self.store.phase.queue(keys, keys, pv_last, pt_last)

