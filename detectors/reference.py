"""The scalar reference detector: the engine's detection semantics written out one reading at a time.

Why it exists: ``detectors.engine`` is vectorised (sorts, latches as cumulative maxima, searchsorted windows), which
is fast but hard to check by reading. This module is the oracle the engine is tested against (hypothesis
differential tests in ``tests/unit/detectors/test_reference_differential.py``) and the honest baseline of
``sitewatch bench detect``: plain Python, a dict of state per device, an ``if`` per rule, as a reviewer would
write it from ``config/rules/defaults.yaml`` (the comments at its top), ``docs/tuning.md`` and the docstrings of
``detectors.faults`` / ``hysteresis`` / ``rate``. It is deliberately not clever; keep it that way.

What it covers, per device, readings in measurement-time order:

* sensor faults per series (``detectors.faults``): out of range, spike (held back one reading, confirmed when the
  next one comes back), flatline; ``clear_after_good`` good readings end a spike / out-of-range fault; faulty
  readings are withheld from every hazard check;
* every hazard check of the five families: level, change since baseline (fixed or first reading), windowed rate
  (bucketed samples, ``consecutive`` windows), charging outside hours / at an unapproved point, three-phase
  imbalance (phases measured together, under load);
* graded levels with hold count, hold time and hysteresis (``detectors.hysteresis``);
* per (device, kind): the worst current level over the kind's metrics, a finding on every change and a re-assert
  on the grid ``entered + k x reassert``, the episode (start, peak, worst, first / last breach) and ``cleared_by``;
* arrival: exact redeliveries and repeats of a series' newest reading are dropped; a reading older than its
  series' newest is *set aside* (``self.late``) — never evaluated, so it cannot move a live rate or clear a live
  alarm. ``process`` takes one arrival batch and evaluates it in measurement-time order, as the engine does
  (step 1 of its flow); ``feed`` is one reading.

What it leaves out, and the differential tests leave out with it:

* the late lane (``detectors.coverage``): the engine evaluates set-aside readings that fill a gap on a scratch
  state and emits back-dated findings marked ``late``; the reference only sets them aside, so the comparison is
  on the engine's non-late findings (the property: late data never changes what live data decides);
* everything clock-driven or calendar-driven: the deadman (``fault.silent``, ``tick``), learned cadence, covered
  time, device status / gateway status messages, ``device.health`` (reported at batch ends, so batch-granular by
  design), working calendars (the charging *window* is the only calendar question, asked through
  ``detectors.calendar``), inhibition (the backlog's job), rule reloads while a check is raised;
* provenance evidence: where a finding is explained by another metric of its kind whose reading came in an
  earlier batch, the engine reports that metric's remembered quantity instead of its raw reading, baseline, rate
  references and time (``value``, ``reading_ts``, ``baseline``, ``window_ref``, ``phases_a``); ``gateway``.
  The reference always reports the reading itself; these evidence fields are not compared (``PROVENANCE``).

The numbers (lines, clear lines, hold, windows, sensor limits) come from ``detectors.plan.build_plan``: resolving
a rule set into numbers is tested on its own (``test_rules``); the reference checks what is done with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from detectors.calendar import Calendar
from detectors.families.electrical import PHASES
from detectors.plan import CHECKS, FAULT_KINDS, DevicePlan, build_plan
from sitewatch.contracts import FAMILIES
from sitewatch.findings import Finding, Level
from sitewatch.rules import LEVEL_NAMES, RuleSet

NAMES = ("clear",) + LEVEL_NAMES
PHASE_SKEW_MS = 120_000  # phase currents measured further apart than this are not compared
# evidence fields that say where an explaining quantity came from (see the module docstring)
PROVENANCE = ("value", "reading_ts", "baseline", "window_ref", "phases_a", "gateway")
# a metric's place in its family, per family: a name can be in two families at different places (tilt: crane and
# formwork); keyed by the name alone, a crane's tilt took formwork's place, moment's, and cleared its faults
SLOT = {(f, m): i for f, ms in FAMILIES.items() for i, m in enumerate(ms)}
CHECKS_OF = {(f, m): [c for c in CHECKS if c.family == f and c.metric == m] for f, ms in FAMILIES.items() for m in ms}
IMBALANCE = next(c for c in CHECKS if c.mode == "imbalance")


def _bad(x: float) -> bool:
    return x != x


def _num(x: float) -> float | None:
    return None if x != x else float(x)


@dataclass
class Series:
    """One metric of one device: its newest reading and the sensor-fault bookkeeping."""

    newest: int | None = None
    p1: float = math.nan  # the last in-range value
    p2: float = math.nan  # the one before
    p1_ts: int = 0
    suspect: bool = False  # was the last in-range reading held back as a possible spike
    flat_run: int = 0  # equal steps in the current flat stretch
    flat_start: int = 0  # when it began (time of the first reading of the stretch)
    good_in_range: int = 0  # readings in a row inside the range
    good_no_spike: int = 0  # in-range readings in a row that were not suspect
    oor: bool = False  # the three fault latches
    spike: bool = False
    flat: bool = False
    baseline: float = math.nan  # change checks: the zero reading when the rules give none


@dataclass
class Hold:
    """One check's level latches: per level, is it set, and the run of readings at or above its line."""

    on: list = field(default_factory=lambda: [False, False, False])
    run: list = field(default_factory=lambda: [0, 0, 0])
    since: list = field(default_factory=lambda: [0, 0, 0])
    samples: list = field(default_factory=list)  # rate checks: [(ts, value)], the first reading of each bucket


@dataclass
class Entry:
    """One judgement feeding a kind: which of its metrics (slot), at what level, of what quantity."""

    slot: int
    level: int
    x: float  # the checked quantity (t, mm, mm/d, %, ...; the raw value for faults)
    raw: float
    ts: int
    metric: str
    check: int | None  # None for a fault kind
    extra: dict


@dataclass
class KindState:
    level: int = 0
    entered: int = 0
    last_ts: int = 0
    slots: dict = field(default_factory=dict)  # slot -> its latest Entry
    episode: dict | None = None


@dataclass
class Device:
    site: str
    device: str
    plan: DevicePlan | None
    series: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)  # check index -> Hold
    kinds: dict = field(default_factory=dict)  # kind -> KindState
    phases: list = field(default_factory=lambda: [[math.nan, None] for _ in PHASES])  # [value, ts]


class ReferenceDetector:
    def __init__(self, rules: RuleSet):
        self.rules = rules
        self.devices: dict[tuple[str, str], Device] = {}
        self.calendars: dict[str, Calendar] = {}
        self.late: list[tuple] = []  # readings set aside: older than their series' newest

    # ---------------------------------------------------------------------------------------------- arrival
    def feed(self, site: str, device: str, family: str, metric: str, ts: int, value: float) -> list[Finding]:
        return self.process([(site, device, family, metric, ts, value)])

    def process(self, readings: Iterable[tuple]) -> list[Finding]:
        """One arrival batch of ``(site, device, family, metric, ts, value)``, in arrival order."""
        fresh: list[tuple] = []
        seen: set = set()
        unknown: dict = {}  # devices whose first reading in this batch named no known family: ignored here
        for order, (site, device, family, metric, ts, value) in enumerate(readings):
            dev = self.devices.get((site, device)) or unknown.get((site, device))
            if dev is None:  # a new device takes the family of its first reading
                plan = build_plan(self.rules, site, device, family) if family in FAMILIES else None
                dev = Device(site, device, plan)
                (self.devices if plan is not None else unknown)[(site, device)] = dev
            if dev.plan is None or metric not in FAMILIES[dev.plan.family]:
                continue
            value = float(value)
            if math.isinf(value) or _bad(value) or (site, device, metric, ts) in seen:
                continue  # not a measurement; a redelivery within the batch (the first one counts)
            seen.add((site, device, metric, ts))
            s = dev.series.setdefault(metric, Series())
            if s.newest is not None and ts <= s.newest:
                if ts < s.newest:
                    self.late.append((site, device, dev.plan.family, metric, ts, value))
                continue
            fresh.append((int(ts), site, device, SLOT[(dev.plan.family, metric)], dev, metric, value))
        # measurement time order; a device's readings of one measurement time are evaluated in its family's metric
        # order, and what they tell a kind is judged in the kind's own metric (slot) order
        fresh.sort(key=lambda r: r[:4])
        out: list[Finding] = []
        i = 0
        while i < len(fresh):
            j = i
            entries: list[tuple[str, Entry]] = []
            while j < len(fresh) and fresh[j][:3] == fresh[i][:3]:
                ts, _, _, _, dev, metric, value = fresh[j]
                entries += self.reading(dev, metric, ts, value)
                j += 1
            entries.sort(key=lambda ke: (ke[0], ke[1].slot))  # stable: phases stay in measurement order
            for kind, e in entries:
                out += self.judge(fresh[i][4], kind, e)
            i = j
        out.sort(key=lambda f: (f.ts, f.site, f.device, f.kind))
        return out

    def process_batch(self, batch: Any) -> list[Finding]:
        """A ``ReadingBatch`` (columns), for benchmarks on the engine's input."""
        return self.process(zip(batch.site.tolist(), batch.device.tolist(), batch.family.tolist(),
                                batch.metric.tolist(), batch.ts.tolist(), batch.value.tolist()))

    # ---------------------------------------------------------------------------------------------- one reading
    def reading(self, dev: Device, metric: str, ts: int, v: float) -> list[tuple[str, Entry]]:
        """Evaluate one reading: what it tells each kind (fault kinds always, hazard kinds when it is valid)."""
        plan = dev.plan
        assert plan is not None
        s = dev.series[metric]
        s.newest = ts
        valid = self.sensor_faults(s, plan, metric, ts, v)
        slot = SLOT[(plan.family, metric)]
        out: list[tuple[str, Entry]] = []
        for kind in FAULT_KINDS:
            bit = {"fault.out_of_range": s.oor, "fault.spike": s.spike, "fault.flatline": s.flat}[kind]
            level = plan.fault_levels[kind] if bit else 0
            out.append((kind, Entry(slot, level, v, v, ts, metric, None, {})))
        if not valid:
            return out
        for c in CHECKS_OF[(plan.family, metric)]:
            if c.index not in plan.checks:
                continue
            prm = plan.checks[c.index]
            h = dev.checks.setdefault(c.index, Hold())
            extra: dict = {}
            if c.mode == "level":
                x = v
            elif c.mode == "change":
                base = prm.baseline if prm.baseline is not None else s.baseline
                if _bad(base):
                    base = s.baseline = v  # the first reading received is the zero
                x = self.directed(v - base, prm.direction)
                extra["baseline"] = base
            elif c.mode == "rate":
                x, extra["window_ref"] = self.rate(h, prm, ts, v)
            elif c.mode == "charging":
                cal = self.calendar(dev.site)
                points = self.rules.charging_points(dev.site)
                outside = not cal.in_charging_window_at(ts)
                unapproved = bool(points) and dev.device not in points
                x = 1.0 if v > prm.min_load and (outside or unapproved) else 0.0
                extra = {"outside_charging_hours": outside, "unapproved_point": unapproved}
            else:
                raise ValueError(c.mode)
            level = self.graded(h, prm, x, ts)
            out.append((c.kind, Entry(c.slot, level, x, v, ts, metric, c.index, extra)))
        if metric in PHASES:
            out += self.imbalance(dev, metric, ts, v)
        return out

    # ---------------------------------------------------------------------------------------------- faults
    def sensor_faults(self, s: Series, plan: DevicePlan, metric: str, ts: int, v: float) -> bool:
        """Update the three fault latches of the series; True if the reading may feed hazard checks."""
        sp = plan.sensors[metric]
        enough = plan.clear_after_good
        out_of_range = v < sp.lo or v > sp.hi  # (no range configured: NaN limits, never out)
        s.good_in_range = 0 if out_of_range else s.good_in_range + 1
        if out_of_range:
            s.oor = True
        elif s.good_in_range >= enough:
            s.oor = False
        if out_of_range:
            return False  # and the spike / flatline latches stay as they were
        # spike: far from both previous in-range readings is suspect; coming back near the older one confirms it
        suspect = abs(v - s.p1) > sp.step and abs(v - s.p2) > sp.step
        confirmed = s.suspect and abs(v - s.p2) <= sp.step
        s.good_no_spike = 0 if suspect else s.good_no_spike + 1
        if confirmed:
            s.spike = True
        elif not suspect and s.good_no_spike >= enough:
            s.spike = False
        # flatline: unchanged (within eps) for at least two steps and flatline_after of time
        equal = abs(v - s.p1) <= sp.eps
        if equal:
            if s.flat_run == 0:
                s.flat_start = s.p1_ts
            s.flat_run += 1
        else:
            s.flat_run = 0
        flat = equal and s.flat_run >= 2 and ts - s.flat_start >= sp.flat_ms
        if flat:
            s.flat = True
        elif not equal:
            s.flat = False
        s.p2, s.p1, s.p1_ts, s.suspect = s.p1, v, ts, suspect
        return not suspect and not flat

    # ---------------------------------------------------------------------------------------------- checks
    @staticmethod
    def directed(d: float, direction: int) -> float:
        return abs(d) if direction == 0 else d if direction == 1 else -d

    def rate(self, h: Hold, prm: Any, ts: int, v: float) -> tuple[float, list]:
        """The smallest of the ``consecutive`` window rates back from this reading (NaN: history too short)."""
        if not h.samples or h.samples[-1][0] // prm.bucket_ms != ts // prm.bucket_ms:
            h.samples.append((ts, v))
        x = math.inf
        refs = []
        t, val = ts, v
        for k in range(1, prm.consecutive + 1):
            ref = None
            for st, sv in reversed(h.samples):  # the latest sample at or before ts - k x window
                if st <= ts - k * prm.window_ms:
                    ref = (st, sv)
                    break
            if ref is None or _bad(t) or not ref[0] < t:
                x = math.nan
                t = val = math.nan
                continue
            refs.append([ref[0], ref[1]])
            seg = self.directed((val - ref[1]) / (t - ref[0]) * prm.per_ms, prm.direction)
            x = math.nan if _bad(x) or _bad(seg) else min(x, seg)
            t, val = ref
        # samples no later reading can reach are forgotten
        horizon = ts - prm.window_ms * prm.consecutive
        while len(h.samples) > 1 and h.samples[1][0] <= horizon:
            del h.samples[0]
        return x, refs

    def imbalance(self, dev: Device, metric: str, ts: int, v: float) -> list[tuple[str, Entry]]:
        c = IMBALANCE
        prm = dev.plan.checks.get(c.index)
        if prm is None:
            return []
        dev.phases[PHASES.index(metric)] = [v, ts]
        vals = [p[0] for p in dev.phases]
        times = [p[1] for p in dev.phases]
        x = math.nan
        if None not in times and max(times) - min(times) <= PHASE_SKEW_MS and not any(map(_bad, vals)):
            imax, imin = max(vals), min(vals)
            if imax >= prm.min_load and imax > 0:
                x = (imax - imin) / imax * 100.0
        level = self.graded(dev.checks.setdefault(c.index, Hold()), prm, x, ts)
        return [(c.kind, Entry(c.slot, level, x, v, ts, "*", c.index, {"phases_a": [_num(p) for p in vals]}))]

    @staticmethod
    def graded(h: Hold, prm: Any, x: float, ts: int) -> int:
        """Each level is a latch: set after hold_count readings and hold of time at or above its line, reset
        only below clear_ratio x the line; NaN neither sets nor resets and breaks the run."""
        level = 0
        for k in range(3):
            line, clear = prm.lines[k], prm.clear_lines[k]
            if x >= line:
                if h.run[k] == 0:
                    h.since[k] = ts
                h.run[k] += 1
                if h.run[k] >= prm.hold_count and ts - h.since[k] >= prm.hold_ms:
                    h.on[k] = True
            else:
                h.run[k] = 0
                if x < clear or _bad(line):
                    h.on[k] = False
            if h.on[k]:
                level = k + 1
        return level

    # ---------------------------------------------------------------------------------------------- findings
    def judge(self, dev: Device, kind: str, e: Entry) -> list[Finding]:
        """The kind's level is the worst current level of its metrics; emit on change, re-assert on the grid."""
        ks = dev.kinds.setdefault(kind, KindState())
        ks.slots[e.slot] = e
        ks.last_ts, prev_ts = e.ts, ks.last_ts
        if not e.level and not ks.level:
            return []  # clear and was clear (so every metric of the kind is): nothing to say
        level = max(x.level for x in ks.slots.values())
        before = ks.level
        changed = level != before
        if changed:
            ks.level, ks.entered = level, e.ts
        if level and not before:
            ks.episode = {"start": e.ts, "peak": _num(e.x), "peak_ts": e.ts, "peak_reading": e.raw,
                          "first_breach": e.ts, "last_breach": e.ts, "worst": level}
        elif level:
            ep = ks.episode
            if (-math.inf if _bad(e.x) else e.x) > (-math.inf if ep["peak"] is None else ep["peak"]):
                ep.update(peak=e.x, peak_ts=e.ts, peak_reading=e.raw)
            ep["last_breach"] = e.ts
            ep["worst"] = max(ep["worst"], level)
        R = dev.plan.reassert_ms
        reassert = not changed and level > 0 and (e.ts - ks.entered) // R > (prev_ts - ks.entered) // R
        if not (changed or reassert):
            return []
        # explained by the entry itself if it carries the level, else by the first metric at the worst level
        why = e if (not level or e.level == level) else min(
            (x for x in ks.slots.values() if x.level == level), key=lambda x: x.slot)
        f = self.finding(dev, kind, level, before, e.ts, why, reassert)
        if ks.episode is not None:
            f.evidence["episode"] = dict(ks.episode)
        if not level:
            f.evidence["cleared_by"] = {"ts": e.ts, "value": _num(e.raw)}
            ks.episode = None
        return [f]

    def finding(self, dev: Device, kind: str, level: int, before: int, ts: int, e: Entry, reassert: bool) -> Finding:
        p = dev.plan
        ev: dict[str, Any] = {"level": NAMES[level], "previous": NAMES[before], "reassert": reassert}
        if kind in FAULT_KINDS:
            sp = p.sensors[e.metric]
            what = {"fault.out_of_range": f"{e.metric} outside its physical range [{sp.lo:g}, {sp.hi:g}]",
                    "fault.spike": f"{e.metric} jumped more than {sp.step:g} and came back",
                    "fault.flatline": f"{e.metric} unchanged (+-{sp.eps:g}) for >= {sp.flat_ms / 1000:g} s"}[kind]
            threshold = {"fault.out_of_range": sp.hi if e.raw > sp.hi else sp.lo, "fault.spike": sp.step,
                         "fault.flatline": sp.flat_ms / 1000}[kind]
            ev.update(value=e.raw, reading_ts=e.ts, withheld_from_hazards=bool(level))
            return Finding(p.site, p.device, p.family, kind, "fault", Level(level), ts, e.metric, e.raw,
                           float(threshold), what if level else "cleared: " + what, p.fault_source, False, ev)
        prm = p.checks[e.check]
        if level:
            threshold, rule = prm.lines[level - 1], prm.rules[level - 1]
        else:
            ref = before or 1
            threshold = prm.clear_lines[ref - 1]
            rule = (f"cleared: {e.metric} below {threshold:.6g} {prm.unit} "
                    f"({prm.clear_ratio:g} x the {LEVEL_NAMES[ref - 1]} line)")
        ev.update(value=e.raw, reading_ts=e.ts, **prm.static_evidence)
        ev["lines"] = dict(ev["lines"])
        ev.update(e.extra)
        if p.rules.overridden_by:
            ev["config"] = list(p.rules.overridden_by)
        return Finding(p.site, p.device, p.family, kind, "hazard", Level(level), ts, e.metric, e.x, float(threshold),
                       rule, prm.source, level >= prm.major_from, ev)

    def calendar(self, site: str) -> Calendar:
        cal = self.calendars.get(site)
        if cal is None:
            cal = self.calendars[site] = Calendar.from_config(self.rules.calendar_config(site))
        return cal
