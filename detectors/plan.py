"""The check registry and per-device plans.

The registry is static (it follows ``sitewatch.contracts.FAMILIES`` and the family modules), so a check keeps its
number, its kind and its slot across rule reloads and the per-device state written under one rule set is read
correctly under the next. A ``DevicePlan`` is the part that depends on the rules: the numbers for one device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from detectors.families import MODULES
from detectors.thresholds import LEVEL_NUM, Params
from sitewatch.contracts import FAMILIES
from sitewatch.rules import DeviceRules, RuleSet

FAULT_KINDS = ("fault.out_of_range", "fault.spike", "fault.flatline")


@dataclass(frozen=True)
class CheckType:
    index: int
    id: str  # "crane.overload:load"
    kind: str
    family: str
    metric: str  # "*" for a check across metrics (imbalance)
    mode: str  # level | change | rate | imbalance
    slot: int  # column of this check within its kind (a kind may span several metrics)


def _build_registry() -> tuple[list[CheckType], dict[str, int]]:
    checks: list[CheckType] = []
    slots: dict[str, int] = {}
    for fam, mod in MODULES.items():
        for kind, metric, mode in mod.CHECKS:
            slot = slots.get(kind, 0)
            slots[kind] = slot + 1
            checks.append(CheckType(len(checks), f"{kind}:{metric}", kind, fam, metric, mode, slot))
    for kind in FAULT_KINDS:
        slots[kind] = max(len(m) for m in FAMILIES.values())
    return checks, slots


CHECKS, KIND_SLOTS = _build_registry()
CHECK_BY_ID = {c.id: c for c in CHECKS}
KINDS = sorted(KIND_SLOTS)
KIND_CODE = {k: i for i, k in enumerate(KINDS)}
MAX_SLOTS = max(KIND_SLOTS.values())

# (family, metric) pairs get fixed codes, so sorting by them is the same in every batch.
FM_LIST = [(f, m) for f, ms in FAMILIES.items() for m in ms]
FM_CODE = {f"{f}/{m}": i for i, (f, m) in enumerate(FM_LIST)}
FAM_LIST = list(FAMILIES)
FAM_CODE = {f: i for i, f in enumerate(FAM_LIST)}
FM_FAMILY = [FAM_CODE[f] for f, _ in FM_LIST]
FM_SLOT = [list(FAMILIES[f]).index(m) for f, m in FM_LIST]  # the fault-kind slot of a metric


@dataclass(frozen=True)
class SensorParams:
    lo: float
    hi: float
    step: float
    flat_ms: float
    eps: float


@dataclass
class DevicePlan:
    site: str
    device: str
    family: str
    rules: DeviceRules
    checks: dict[int, Params]  # check index -> params (absent = off for this device)
    sensors: dict[str, SensorParams]
    silent_ms: int
    reassert_ms: int
    fault_levels: dict[str, int]
    clear_after_good: int
    fault_source: str = ""
    by_metric: dict[str, list[int]] = field(default_factory=dict)
    # cadence / deadman (``silent_ms`` above is the limit at the family's default interval)
    default_interval_ms: int = 1000  # the family's expected_interval: the cadence until min_gaps gaps were seen
    silent_after: float = 10.0  # faults.silent_after_intervals
    silent_floor_ms: int = 0
    silent_ceiling_ms: int = 2**62
    min_gaps: int = 5  # faults.min_gaps_to_learn
    gateway_grace_ms: int = 120_000  # faults.gateway_grace
    follows_calendar: bool = False  # silence outside the site's working time is "off", not a fault
    calendar_grace_ms: int = 0
    gateway: str | None = None  # the device's gateway from its site file (topology override), else None

    def cadence_ms(self, learned_ms: float | None = None, gaps_seen: int = 0) -> float:
        """The reporting interval: the learned one once ``min_gaps`` inter-arrival gaps have been seen, the
        family default before (or when none was learned)."""
        if learned_ms is not None and gaps_seen >= self.min_gaps and learned_ms > 0:
            return learned_ms
        return self.default_interval_ms

    def silent_limit_ms(self, cadence_ms: float | None = None, gaps_seen: int = 0) -> int:
        """Deadman limit: clamp(silent_after x cadence, floor, ceiling), the cadence as ``cadence_ms`` decides."""
        return _clamp_ms(self.cadence_ms(cadence_ms, gaps_seen) * self.silent_after, self.silent_floor_ms,
                         self.silent_ceiling_ms)


def _clamp_ms(x: float, lo: int, hi: int) -> int:
    return int(round(min(max(x, lo), hi)))


_NO_SENSOR = SensorParams(math.nan, math.nan, math.nan, math.nan, 0.0)


def build_plan(rules: RuleSet, site: str, device: str, family: str) -> DevicePlan:
    dr = rules.device(site, device, family)
    params = MODULES[family].params(dr)
    checks = {CHECK_BY_ID[cid].index: p for cid, p in params.items()}
    sensors = {}
    for metric in FAMILIES[family]:
        s = dr.rules.sensors.get(metric)
        if s is None:
            sensors[metric] = _NO_SENSOR
            continue
        lo, hi = s.range if s.range is not None else (math.nan, math.nan)
        sensors[metric] = SensorParams(
            lo, hi, s.spike_step if s.spike_step is not None else math.nan,
            s.flatline_after * 1000 if s.flatline_after is not None else math.nan, s.flatline_eps)
    f = dr.faults
    by_metric: dict[str, list[int]] = {}
    for i in checks:
        by_metric.setdefault(CHECKS[i].metric, []).append(i)
    src = "sensor fault rules"
    if dr.overridden_by:
        src += " via " + ", ".join(dr.overridden_by)
    r = dr.rules
    interval_ms = int(round(1000 * r.expected_interval))
    floor_ms, ceiling_ms = int(round(1000 * r.silent_floor)), int(round(1000 * r.silent_ceiling))
    return DevicePlan(
        site=site, device=device, family=family, rules=dr, checks=checks, sensors=sensors,
        silent_ms=_clamp_ms(interval_ms * f.silent_after_intervals, floor_ms, ceiling_ms),
        reassert_ms=int(round(1000 * dr.reassert_s)),
        fault_levels={"fault.out_of_range": LEVEL_NUM[f.out_of_range_level], "fault.spike": LEVEL_NUM[f.spike_level],
                      "fault.flatline": LEVEL_NUM[f.flatline_level], "fault.silent": LEVEL_NUM[f.silent_level],
                      "fault.gateway_offline": LEVEL_NUM[f.gateway_offline_level]},
        clear_after_good=f.clear_after_good, fault_source=src, by_metric=by_metric,
        default_interval_ms=interval_ms, silent_after=float(f.silent_after_intervals), silent_floor_ms=floor_ms,
        silent_ceiling_ms=ceiling_ms, min_gaps=f.min_gaps_to_learn, gateway_grace_ms=int(round(1000 * f.gateway_grace)), follows_calendar=r.follows_calendar,
        calendar_grace_ms=int(round(1000 * r.calendar_grace)), gateway=dr.gateway)


def _local_iso(ms: int, tz: str) -> str:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).isoformat()


def explain(rules: RuleSet, site: str, device: str, family: str) -> list[dict]:
    """Every active check for a device with its lines and source: what ``sitewatch rules explain`` prints."""
    plan = build_plan(rules, site, device, family)
    out = []
    names = ("yellow", "orange", "red")
    for i, p in sorted(plan.checks.items()):
        c = CHECKS[i]
        out.append({
            "kind": c.kind, "metric": c.metric, "mode": c.mode, "unit": p.unit,
            "levels": {names[k]: p.lines[k] for k in range(3) if not math.isnan(p.lines[k])},
            "rules": [r for r in p.rules if r], "clear_ratio": p.clear_ratio, "hold_count": p.hold_count,
            "hold_s": p.hold_ms / 1000, "major_from": names[p.major_from - 1] if p.major_from <= 3 else None,
            "source": p.source, **({"window_s": p.window_ms / 1000, "consecutive": p.consecutive}
                                   if c.mode == "rate" else {}),
        })
    for metric, s in plan.sensors.items():
        out.append({"kind": "sensor", "metric": metric,
                    "range": None if math.isnan(s.lo) else [s.lo, s.hi],
                    "spike_step": None if math.isnan(s.step) else s.step,
                    "flatline_after_s": None if math.isnan(s.flat_ms) else s.flat_ms / 1000})
    cal = rules.calendar_config(site)
    silent = {
        "kind": "fault.silent", "after_s": plan.silent_ms / 1000,
        "expected_interval_s": plan.default_interval_ms / 1000, "silent_after_intervals": plan.silent_after,
        "silent_floor_s": plan.silent_floor_ms / 1000, "silent_ceiling_s": plan.silent_ceiling_ms / 1000,
        "min_gaps_to_learn": plan.min_gaps, "follows_calendar": plan.follows_calendar,
        "calendar_grace_s": plan.calendar_grace_ms / 1000 if plan.follows_calendar else None,
        "gateway": plan.gateway,
        "calendar": {"timezone": cal.timezone, "working_hours": list(cal.working_hours),
                     "rest_days": list(cal.rest_days), "holidays": list(cal.holidays),
                     "shutdowns": [{"from": _local_iso(s.start_ms, cal.timezone),
                                    "to": _local_iso(s.end_ms, cal.timezone), "reason": s.reason}
                                   for s in cal.shutdowns],
                     "charging_hours": list(cal.charging_hours)},
        "rule": (f"no reading for clamp({plan.silent_after:g} x cadence, {plan.silent_floor_ms / 1000:g} s, "
                 f"{plan.silent_ceiling_ms / 1000:g} s); cadence = {plan.default_interval_ms / 1000:g} s until "
                 f"{plan.min_gaps} gaps were seen, then the device's own"
                 + (f"; counted in working time only, {plan.calendar_grace_ms / 1000:g} s grace after each "
                    "working-period start" if plan.follows_calendar else "")),
    }
    cv = getattr(plan.rules.rules, "charging_violation", None)
    if cv is not None:
        silent["charging_violation"] = {**cv.model_dump(), "charging_hours": list(cal.charging_hours),
                                        "charging_points": sorted(rules.charging_points(site)) or None}
    out.append(silent)
    return out
