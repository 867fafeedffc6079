"""Detector rules: schema, YAML loader, and per-site / per-device resolution.

Why it lives in ``sitewatch`` and not in ``detectors``: the worker, the hot-reload listener and the ``sitewatch
rules`` command all validate rule files, and none of them should import the detectors to do so. Nothing here
does I/O except ``load_rules`` reading a directory.

Layout on disk (see ``config/rules``)::

    defaults.yaml           families:  one block per family, values from the standards (docs/domain.md)
                            faults: / lateness: / inhibit_rules:  global sensor-fault, late-data and inhibition rules
    sites/<site>.yaml       site: ...  family_overrides: {family: {...}}   devices: {device: {family: ..., ...}}
                            calendar: {...}  charging_points: [...]  inhibit_rules: [...]  (all optional)

A device's effective rules are ``defaults.families[f]`` deep-merged with the site's ``family_overrides[f]`` and
then the device's own block, and the result is validated as a whole. So an error in a site file is reported at
the line of the site file that caused it, e.g.
``config/rules/sites/cz-0412.yaml:14: devices.tc-01.rated_load_t: Input should be greater than 0``.

The same text can arrive over ``sw.config`` for hot reload: one YAML stream whose first document holds the
defaults (``families:``) and whose further documents are site documents (``site:``), see ``bundle_text``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import re
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from sitewatch.contracts import FAMILIES

LEVEL_NAMES = ("yellow", "orange", "red")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_DUR_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|min|h|d)?\s*$")
_DUR_UNITS = {"ms": 0.001, "s": 1.0, None: 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


# ------------------------------------------------------------------------------------------------ errors
class RulesError(ValueError):
    """Invalid rules. Every line of the message names ``file:line: field.path: problem``."""

    def __init__(self, problems: list[tuple[str, int | None, str, str]]):
        self.problems = problems
        super().__init__("\n".join(_fmt_problem(*p) for p in problems))


def _fmt_problem(file: str, line: int | None, path: str, msg: str) -> str:
    where = f"{file}:{line}" if line is not None else file
    return f"{where}: {path}: {msg}" if path else f"{where}: {msg}"


# ------------------------------------------------------------------------------------------------ value types
def _duration(v: Any) -> Any:
    """Ops write "90s", "10min", "24h", "2d"; a bare number means seconds."""
    if isinstance(v, bool):
        raise ValueError("a duration is a number of seconds or a string like '90s', '10min', '24h', '2d'")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        m = _DUR_RE.match(v)
        if not m:
            raise ValueError(f"{v!r} is not a duration like '90s', '10min', '24h', '2d'")
        return float(m.group(1)) * _DUR_UNITS[m.group(2)]
    return v


Duration = Annotated[float, BeforeValidator(_duration), Field(ge=0)]
PositiveDuration = Annotated[float, BeforeValidator(_duration), Field(gt=0)]
Positive = Annotated[float, Field(gt=0)]
LevelName = Literal["yellow", "orange", "red"]
MajorLevel = Literal["yellow", "orange", "red", "none"]


def _only_known_metrics(family: str, v: Any) -> Any:
    """Per-metric blocks may only name metrics the family has (a typo must not silently configure nothing)."""
    unknown = sorted(set(v) - set(FAMILIES[family])) if isinstance(v, dict) else []
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown} for {family}; known: {sorted(FAMILIES[family])}")
    return v


def _check_levels(v: list[float | None]) -> list[float | None]:
    got = [x for x in v if x is not None]
    if not got:
        raise ValueError("at least one of yellow/orange/red must be set (use enabled: false to switch a check off)")
    if any(x <= 0 for x in got):
        raise ValueError("levels must be greater than 0 (null switches a level off)")
    if any(b <= a for a, b in zip(got, got[1:])):
        raise ValueError("levels must rise strictly: yellow < orange < red")
    return v


Levels3 = Annotated[list[float | None], Field(min_length=3, max_length=3)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------------------ building blocks
class Knobs(_Model):
    """How a check decides; ``None`` inherits the family's setting so a site tunes one place."""

    enabled: bool = True
    hold_count: Annotated[int, Field(ge=1)] | None = None
    hold: Duration | None = None
    clear_ratio: Annotated[float, Field(gt=0, le=1)] | None = None
    major_level: MajorLevel | None = None
    source: str | None = None


class AbsCheck(Knobs):
    """Levels in the metric's own unit: [yellow, orange, red]; null switches a level off."""

    levels: Levels3

    @field_validator("levels")
    @classmethod
    def _levels(cls, v):
        return _check_levels(v)


class PctCheck(Knobs):
    """Levels as percentages of a rated value named by the family (rated load, breaker rating, RCD trip)."""

    levels_pct: Levels3

    @field_validator("levels_pct")
    @classmethod
    def _levels(cls, v):
        return _check_levels(v)


class ImbalanceCheck(PctCheck):
    """(Imax - Imin) / Imax in %; judged only while the busiest phase carries ``min_load_pct`` of the rating."""

    min_load_pct: Annotated[float, Field(ge=0, le=100)] = 20.0


class RiseCheck(AbsCheck):
    """Rate of rise, levels in unit per ``per``, measured over ``window``."""

    per: Literal["s", "min", "h"] = "min"
    window: PositiveDuration = 120.0


class SensorRules(_Model):
    """When a sensor is lying rather than the structure moving: these readings become faults, never hazards."""

    range: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None
    spike_step: Positive | None = None  # a jump larger than this away from both previous readings is suspect
    flatline_after: PositiveDuration | None = None  # identical readings for this long mean a stuck sensor
    flatline_eps: Annotated[float, Field(ge=0)] = 0.0

    @field_validator("range")
    @classmethod
    def _range(cls, v):
        if v is not None and v[0] >= v[1]:
            raise ValueError("range must be [low, high] with low < high")
        return v


class FamilyBase(_Model):
    """Shared by every family. The cadence / deadman block:

    * ``expected_interval`` — the family's reading interval, used until a device has shown its own cadence
      (``faults.min_gaps_to_learn`` inter-arrival gaps);
    * the deadman limit is ``clamp(faults.silent_after_intervals x cadence, silent_floor, silent_ceiling)``;
    * ``follows_calendar`` — silence outside the site's working time (``calendar:`` in the site file) is "off",
      not a fault; such a device may stay silent ``calendar_grace`` into each working period (powered on late).
    """

    family: ClassVar[str] = ""
    source: str
    expected_interval: PositiveDuration = 1.0
    silent_floor: Duration = 60.0
    silent_ceiling: PositiveDuration = 600.0
    follows_calendar: bool = False
    calendar_grace: Duration = 1800.0
    hold_count: Annotated[int, Field(ge=1)] = 1
    hold: Duration = 0.0
    clear_ratio: Annotated[float, Field(gt=0, le=1)] = 0.95
    major_level: MajorLevel = "red"
    sensors: dict[str, SensorRules] = Field(default_factory=dict)

    @field_validator("sensors", mode="before")
    @classmethod
    def _known_sensors(cls, v: Any) -> Any:
        return _only_known_metrics(cls.family, v)

    @field_validator("silent_ceiling")
    @classmethod
    def _ceiling_above_floor(cls, v: float, info) -> float:
        floor = info.data.get("silent_floor")
        if floor is not None and v < floor:
            raise ValueError(f"silent_ceiling ({v:g} s) must be at least silent_floor ({floor:g} s)")
        return v


# ------------------------------------------------------------------------------------------------ families
class CraneRules(FamilyBase):
    family: ClassVar[str] = "crane"
    source: str = "GB 12602-2020 / GB/T 5031-2019"
    expected_interval: PositiveDuration = 1.0  # black box ~1 Hz while powered
    silent_floor: Duration = 60.0
    silent_ceiling: PositiveDuration = 600.0
    follows_calendar: bool = True  # switched off at night and on rest days
    rated_load_t: Positive = 10.0
    overload: PctCheck = PctCheck(levels_pct=[90.0, 100.0, 110.0])  # of rated_load_t
    moment: PctCheck = PctCheck(levels_pct=[90.0, 100.0, 110.0])  # the moment metric is already % of rated
    wind: AbsCheck = AbsCheck(levels=[None, 20.0, None], major_level="none")  # m/s: lifting stops
    sensors: dict[str, SensorRules] = Field(default_factory=lambda: {
        "load": SensorRules(range=[-1.0, 100.0]),
        "moment": SensorRules(range=[-5.0, 300.0]),
        "wind": SensorRules(range=[0.0, 75.0], flatline_after=120.0),
        "tilt": SensorRules(range=[-15.0, 15.0]),
    })


class PointMetric(_Model):
    """One measured quantity of a monitoring point and its design alarm values (GB 50497 §8)."""

    measure: Literal["change", "absolute"] = "change"
    alarm: Positive | None = None  # cumulative change (or absolute value) alarm value, in the metric's unit
    design_value: Positive | None = None  # e.g. strut design axial force; alarm = design_value × alarm_pct / 100
    alarm_pct_of_design: Annotated[float, Field(gt=0, le=200)] = 70.0
    rate: Positive | None = None  # alarm value of the rate, metric unit per family ``rate_per``
    direction: Literal["both", "increase", "decrease"] = "both"
    baseline: float | Literal["first"] = 0.0  # installation zero: a number, or the first reading received

    @property
    def alarm_value(self) -> float | None:
        if self.alarm is not None:
            return self.alarm
        if self.design_value is not None:
            return self.design_value * self.alarm_pct_of_design / 100.0
        return None


class MonitoredFamily(FamilyBase):
    """Pit and formwork share the shape: per-metric alarm values, graded at ``level_pcts`` of them."""

    level_pcts: Levels3 = [70.0, 85.0, 100.0]
    rate_window: PositiveDuration = 86400.0
    rate_per: Literal["min", "h", "d"] = "d"
    rate_consecutive: Annotated[int, Field(ge=1, le=7)] = 1
    cumulative: Knobs = Knobs()
    rate: Knobs = Knobs()
    metrics: dict[str, PointMetric] = Field(default_factory=dict)

    @field_validator("level_pcts")
    @classmethod
    def _levels(cls, v):
        return _check_levels(v)

    @field_validator("metrics", mode="before")
    @classmethod
    def _known_metrics(cls, v: Any) -> Any:
        return _only_known_metrics(cls.family, v)


class PitRules(MonitoredFamily):
    family: ClassVar[str] = "pit"
    source: str = "GB 50497-2019 §8"
    grade: Literal[1, 2, 3] = 2  # 基坑等级, recorded in the evidence; alarm values come from the design
    expected_interval: PositiveDuration = 1800.0  # total stations / inclinometer chains: 10 min .. hours (GB 50497 §7)
    silent_floor: Duration = 7200.0  # densified 10 min -> back to 1 h must not fault
    silent_ceiling: PositiveDuration = 93600.0  # a point read once a day is still caught within about a day
    rate_window: PositiveDuration = 86400.0
    rate_per: Literal["min", "h", "d"] = "d"
    rate_consecutive: Annotated[int, Field(ge=1, le=7)] = 2  # "连续2d以上"
    metrics: dict[str, PointMetric] = Field(default_factory=lambda: {
        "wall_top_horizontal": PointMetric(alarm=30.0, rate=3.0),
        "wall_top_vertical": PointMetric(alarm=20.0, rate=3.0),
        "deep_horizontal": PointMetric(alarm=45.0, rate=3.0),
        "strut_force": PointMetric(measure="absolute", design_value=2000.0, alarm_pct_of_design=70.0),
        "groundwater_level": PointMetric(alarm=1.0, rate=0.5, baseline="first"),
        "surface_settlement": PointMetric(alarm=30.0, rate=3.0),
    })
    sensors: dict[str, SensorRules] = Field(default_factory=lambda: {
        "wall_top_horizontal": SensorRules(range=[-500.0, 500.0], spike_step=20.0, flatline_after=21600.0),
        "wall_top_vertical": SensorRules(range=[-500.0, 500.0], spike_step=20.0, flatline_after=21600.0),
        "deep_horizontal": SensorRules(range=[-500.0, 500.0], spike_step=20.0, flatline_after=21600.0),
        "strut_force": SensorRules(range=[-5000.0, 20000.0], spike_step=1000.0, flatline_after=21600.0),
        "groundwater_level": SensorRules(range=[-200.0, 200.0], spike_step=2.0, flatline_after=21600.0),
        "surface_settlement": SensorRules(range=[-500.0, 500.0], spike_step=20.0, flatline_after=21600.0),
    })


class FormworkRules(MonitoredFamily):
    family: ClassVar[str] = "formwork"
    source: str = "JGJ 162-2008 / formwork scheme control values"
    expected_interval: PositiveDuration = 1.0  # continuous while concrete is being poured
    silent_floor: Duration = 60.0
    silent_ceiling: PositiveDuration = 7200.0
    rate_window: PositiveDuration = 300.0
    rate_per: Literal["min", "h", "d"] = "min"
    rate_consecutive: Annotated[int, Field(ge=1, le=7)] = 1
    rate: Knobs = Knobs(hold_count=3)
    metrics: dict[str, PointMetric] = Field(default_factory=lambda: {
        "settlement": PointMetric(alarm=10.0, rate=0.5),
        "horizontal_displacement": PointMetric(alarm=10.0, rate=0.5),
        "tilt": PointMetric(alarm=1.0),
        "axial_force": PointMetric(measure="absolute", alarm=60.0),
    })
    sensors: dict[str, SensorRules] = Field(default_factory=lambda: {
        "settlement": SensorRules(range=[-200.0, 200.0], spike_step=10.0, flatline_after=600.0),
        "horizontal_displacement": SensorRules(range=[-200.0, 200.0], spike_step=10.0, flatline_after=600.0),
        "tilt": SensorRules(range=[-30.0, 30.0], spike_step=5.0, flatline_after=600.0),
        "axial_force": SensorRules(range=[-50.0, 1000.0], flatline_after=600.0),
    })


class ElectricalRules(FamilyBase):
    family: ClassVar[str] = "electrical"
    source: str = "JGJ 46-2005"
    expected_interval: PositiveDuration = 30.0  # switch-box monitors report every few seconds to a minute
    silent_floor: Duration = 300.0
    silent_ceiling: PositiveDuration = 3600.0
    major_level: MajorLevel = "none"
    breaker_rating_a: Positive = 125.0
    rcd_trip_ma: Positive = 30.0  # ≤ 15 in wet places
    overcurrent: PctCheck = PctCheck(levels_pct=[90.0, 100.0, 120.0], hold=10.0)
    leakage: PctCheck = PctCheck(levels_pct=[50.0, 75.0, 100.0], hold=30.0)  # of rcd_trip_ma: "persistently"
    imbalance: ImbalanceCheck = ImbalanceCheck(levels_pct=[20.0, 30.0, 50.0], hold=300.0)
    terminal_temp: AbsCheck = AbsCheck(levels=[70.0, 80.0, 90.0], hold_count=3)
    sensors: dict[str, SensorRules] = Field(default_factory=lambda: {
        "current_a": SensorRules(range=[-1.0, 5000.0]),
        "current_b": SensorRules(range=[-1.0, 5000.0]),
        "current_c": SensorRules(range=[-1.0, 5000.0]),
        "leakage": SensorRules(range=[-1.0, 5000.0]),
        "terminal_temp": SensorRules(range=[-40.0, 300.0], spike_step=30.0, flatline_after=1800.0),
    })


class ChargingViolation(_Model):
    """Charging outside the site's ``calendar.charging_hours``, or (when the site lists ``charging_points``) at a
    battery device that is not an approved charging point. ``charge_current`` above ``min_current_a`` is charging."""

    enabled: bool = True
    min_current_a: Annotated[float, Field(ge=0)] = 0.5
    level: LevelName = "orange"


class BatteryRules(FamilyBase):
    family: ClassVar[str] = "battery"
    source: str = "Changzhou 2023 safety-governance plan (charging fire risk)"
    expected_interval: PositiveDuration = 30.0  # charging-cabinet monitors: seconds to a minute
    silent_floor: Duration = 300.0
    silent_ceiling: PositiveDuration = 3600.0
    follows_calendar: bool = True  # charging cabinets are switched off outside working time
    major_level: MajorLevel = "none"
    charging_violation: ChargingViolation = ChargingViolation()
    temp: AbsCheck = AbsCheck(levels=[45.0, 55.0, 65.0], hold_count=2)  # pack_temp and cell_temp, °C
    temp_rise: RiseCheck = RiseCheck(levels=[1.0, 2.0, 5.0], per="min", window=120.0, hold_count=5)
    gas: AbsCheck = AbsCheck(levels=[50.0, 100.0, 200.0], hold_count=3)  # co and smoke, ppm
    sensors: dict[str, SensorRules] = Field(default_factory=lambda: {
        "pack_temp": SensorRules(range=[-40.0, 400.0], spike_step=25.0, flatline_after=1800.0),
        "cell_temp": SensorRules(range=[-40.0, 400.0], spike_step=25.0, flatline_after=1800.0),
        "charge_current": SensorRules(range=[-1000.0, 1000.0]),
        "smoke": SensorRules(range=[0.0, 100000.0]),
        "co": SensorRules(range=[0.0, 100000.0]),
    })


FAMILY_MODELS: dict[str, type[FamilyBase]] = {
    m.family: m for m in (CraneRules, PitRules, FormworkRules, ElectricalRules, BatteryRules)
}
FamilyRules = CraneRules | PitRules | FormworkRules | ElectricalRules | BatteryRules


class FaultRules(_Model):
    """Sensor-fault handling, shared by all families."""

    silent_after_intervals: Annotated[float, Field(ge=1)] = 10.0
    min_gaps_to_learn: Annotated[int, Field(ge=1)] = 5  # the family's expected_interval applies until this many gaps
    # a device behind a gateway waits this much longer before its silence is a fault, so that the gateway's own
    # offline fault (MQTT last will: ~1.5 x the broker keep-alive) arrives first and inhibits it
    gateway_grace: Duration = 120.0
    silent_level: LevelName = "orange"
    flatline_level: LevelName = "yellow"
    spike_level: LevelName = "yellow"
    out_of_range_level: LevelName = "orange"
    gateway_offline_level: LevelName = "orange"
    clear_after_good: Annotated[int, Field(ge=1)] = 10  # consecutive good readings that end a spike / range fault


class Families(_Model):
    crane: CraneRules = CraneRules()
    pit: PitRules = PitRules()
    formwork: FormworkRules = FormworkRules()
    electrical: ElectricalRules = ElectricalRules()
    battery: BatteryRules = BatteryRules()


class LatenessRules(_Model):
    """Readings that arrive late (a gateway buffered them through an outage)."""

    allowed: PositiveDuration = 259200.0  # older than this behind the device's newest reading: DLQ, too_late
    gap_factor: Annotated[float, Field(gt=1)] = 3.0  # in-order jump > gap_factor x cadence: a gap late data may fill
    max_gaps: Annotated[int, Field(ge=0, le=100)] = 3  # gaps remembered per device
    # a finding decided by readings that arrived this long after they were measured is reported as late (back-dated,
    # with its arrival delay), even when they came in order
    late_after: PositiveDuration = 60.0


INHIBIT_LABELS = ("site", "device", "family", "kind", "category", "level", "gateway", "metric")


def _can_match_fault(m: dict[str, str]) -> bool:
    if "category" in m:
        return m["category"] == "fault"
    if "kind" in m:
        return m["kind"].startswith("fault.")
    return True


def _only_faults(m: dict[str, str]) -> bool:
    return m.get("category") == "fault" or m.get("kind", "").startswith("fault.")


class InhibitRule(_Model):
    """Alertmanager-style: while a finding matching ``source_match`` is raised, findings matching ``target_match``
    whose ``equal`` labels have the same values as the source's are inhibited (recorded, not alerted).

    Matchers are exact label values. A sensor fault must never inhibit a hazard on another sensor: a rule whose
    source can be a fault must restrict its target to faults.
    """

    name: Annotated[str, Field(min_length=1)]
    source_match: dict[str, str]
    target_match: dict[str, str]
    equal: list[str] = Field(default_factory=list)

    @field_validator("source_match", "target_match", "equal")
    @classmethod
    def _known_labels(cls, v):
        unknown = sorted(set(v) - set(INHIBIT_LABELS))
        if unknown:
            raise ValueError(f"unknown label(s) {unknown}; known: {list(INHIBIT_LABELS)}")
        return v

    @field_validator("target_match")
    @classmethod
    def _fault_never_inhibits_a_hazard(cls, v: dict[str, str], info) -> dict[str, str]:
        src = info.data.get("source_match")
        if src is not None and _can_match_fault(src) and not _only_faults(v):
            raise ValueError("the source can match a sensor fault, so the target must be restricted to faults "
                             "(category: fault, or a kind starting with 'fault.'): a sensor fault must never "
                             "inhibit a hazard on another sensor")
        return v

    def matches(self, labels: dict[str, Any], which: Literal["source", "target"]) -> bool:
        m = self.source_match if which == "source" else self.target_match
        return all(labels.get(k) is not None and str(labels[k]) == v for k, v in m.items())


def _default_inhibit_rules() -> list[InhibitRule]:
    return [InhibitRule(name="gateway-offline-silences-its-devices", source_match={"kind": "fault.gateway_offline"},
                        target_match={"kind": "fault.silent"}, equal=["site", "gateway"])]


def _unique_names(rules: list[InhibitRule]) -> list[InhibitRule]:
    seen: set[str] = set()
    for r in rules:
        if r.name in seen:
            raise ValueError(f"inhibit rule name {r.name!r} is used twice")
        seen.add(r.name)
    return rules


class ProposalRule(_Model):
    """A finding of one of ``kinds`` at ``min_level`` or above proposes ``action`` on the device that raised it
    (the commands room makes it a ``proposed`` command linked to the ticket). A person approves it; only a site's
    own file may set ``auto: true`` for a rule, and only then is it sent without one."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
    kinds: Annotated[list[str], Field(min_length=1)]
    min_level: LevelName = "red"
    action: Annotated[str, Field(min_length=1, max_length=32)]
    args: dict[str, Any] = Field(default_factory=dict)
    auto: bool = False


def _default_proposals() -> list[ProposalRule]:
    return [ProposalRule(name="battery-runaway-cut-power", kinds=["battery.temp", "battery.temp_rise"],
                         min_level="red", action="cut_power")]


class Defaults(_Model):
    version: Literal[1] = 1
    proposals: list[ProposalRule] = Field(default_factory=_default_proposals)

    @field_validator("proposals")
    @classmethod
    def _no_auto_by_default(cls, v: list[ProposalRule]) -> list[ProposalRule]:
        if len({r.name for r in v}) != len(v):
            raise ValueError("two proposal rules share a name")
        for r in v:
            if r.auto:
                raise ValueError(f"proposal {r.name}: auto: true belongs in a site's own file, never in the defaults")
        return v

    reassert: PositiveDuration = 60.0  # a raised finding is repeated this often (reading time)
    faults: FaultRules = FaultRules()
    lateness: LatenessRules = LatenessRules()
    inhibit_rules: list[InhibitRule] = Field(default_factory=_default_inhibit_rules)
    families: Families = Families()

    @field_validator("inhibit_rules")
    @classmethod
    def _names(cls, v):
        return _unique_names(v)


# ------------------------------------------------------------------------------------------------ site calendar
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM_RANGE_RE = re.compile(r"^\s*([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})\s*$")


def _time_range(v: Any) -> str:
    """"07:00-12:00" (local time, end after start, "24:00" = end of the day), normalised to "HH:MM-HH:MM"."""
    m = _HHMM_RANGE_RE.match(v) if isinstance(v, str) else None
    if not m:
        raise ValueError(f"{v!r} is not a local time range like '07:00-12:00' (quote it in YAML)")
    h1, m1, h2, m2 = map(int, m.groups())
    a, b = h1 * 60 + m1, h2 * 60 + m2
    if m1 > 59 or m2 > 59 or a > 24 * 60 or b > 24 * 60:
        raise ValueError(f"{v!r}: times run from 00:00 to 24:00")
    if b <= a:
        raise ValueError(f"{v!r}: the end must be after the start (overnight ranges are not supported yet: "
                         "write '22:00-24:00' and '00:00-06:00')")
    return f"{h1:02d}:{m1:02d}-{h2:02d}:{m2:02d}"


def _minutes(r: str) -> tuple[int, int]:
    a, b = r.split("-")
    return int(a[:2]) * 60 + int(a[3:]), int(b[:2]) * 60 + int(b[3:])


def _date(v: Any) -> _dt.date:
    if isinstance(v, _dt.datetime):
        raise ValueError(f"{v!r}: a holiday is a whole local date like '2026-10-01'")
    if isinstance(v, _dt.date):
        return v
    try:
        return _dt.date.fromisoformat(str(v).strip())
    except ValueError:
        raise ValueError(f"{v!r} is not a date like '2026-10-01' or a range like '2026-10-01..2026-10-07'") from None


def _date_range(v: Any) -> str:
    """"2026-10-01" or "2026-10-01..2026-10-07" (both days included), normalised."""
    a, sep, b = str(v).partition("..") if isinstance(v, str) else (v, "", None)
    d1 = _date(a)
    d2 = _date(b) if sep else d1
    if d2 < d1:
        raise ValueError(f"{v!r}: the range ends before it starts")
    if (d2 - d1).days > 366:
        raise ValueError(f"{v!r}: a holiday range longer than a year is probably a typo (use shutdowns:)")
    return f"{d1.isoformat()}..{d2.isoformat()}" if d2 != d1 else d1.isoformat()


def _weekday(v: Any) -> str:
    s = str(v).strip().lower()[:3]
    if s not in _WEEKDAYS or not isinstance(v, str):
        raise ValueError(f"{v!r} is not a weekday; use {', '.join(_WEEKDAYS)}")
    return s


def _epoch_ms(v: Any) -> int:
    """RFC 3339 with an offset ("2026-11-03T00:00:00+08:00", "...Z") or epoch milliseconds."""
    if isinstance(v, bool):
        raise ValueError("expected an RFC 3339 time with an offset or epoch milliseconds")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            v = _dt.datetime.fromisoformat(v.strip())
        except ValueError:
            raise ValueError(f"{v!r} is not an RFC 3339 time like '2026-11-03T00:00:00+08:00'") from None
    if isinstance(v, _dt.datetime):
        if v.tzinfo is None:
            raise ValueError(f"{v.isoformat()!r} has no UTC offset: write it like '2026-11-03T00:00:00+08:00'")
        return int(v.timestamp() * 1000)
    raise ValueError(f"{v!r}: expected an RFC 3339 time with an offset or epoch milliseconds")


TimeRange = Annotated[str, BeforeValidator(_time_range)]
DateRange = Annotated[str, BeforeValidator(_date_range)]
Weekday = Annotated[str, BeforeValidator(_weekday)]
EpochMs = Annotated[int, BeforeValidator(_epoch_ms)]


class Shutdown(_Model):
    """A declared shutdown, e.g. a stop-work order from the ledger: no working time in [from, to)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    start_ms: EpochMs = Field(alias="from")
    end_ms: EpochMs = Field(alias="to")
    reason: str | None = None

    @field_validator("end_ms")
    @classmethod
    def _after_start(cls, v: int, info) -> int:
        a = info.data.get("start_ms")
        if a is not None and v <= a:
            raise ValueError("'to' must be after 'from'")
        return v


class CalendarConfig(_Model):
    """A site's working calendar. Without one a site works every day 00:00-24:00 (so calendar-following devices
    behave like any other) in Asia/Shanghai, with no holidays, and charging is allowed at any hour."""

    timezone: str = "Asia/Shanghai"
    working_hours: Annotated[list[TimeRange], Field(min_length=1)] = Field(default_factory=lambda: ["00:00-24:00"])
    rest_days: list[Weekday] = Field(default_factory=list)
    holidays: list[DateRange] = Field(default_factory=list)
    shutdowns: list[Shutdown] = Field(default_factory=list)
    charging_hours: list[TimeRange] = Field(default_factory=lambda: ["00:00-24:00"])

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not an IANA time zone name like 'Asia/Shanghai'") from None
        return v

    @property
    def working_minutes(self) -> list[tuple[int, int]]:
        return [_minutes(r) for r in self.working_hours]

    @property
    def charging_minutes(self) -> list[tuple[int, int]]:
        return [_minutes(r) for r in self.charging_hours]

    @property
    def rest_weekdays(self) -> frozenset[int]:
        return frozenset(_WEEKDAYS.index(d) for d in self.rest_days)

    @property
    def holiday_ranges(self) -> list[tuple[_dt.date, _dt.date]]:
        out = []
        for h in self.holidays:
            a, _, b = h.partition("..")
            out.append((_dt.date.fromisoformat(a), _dt.date.fromisoformat(b or a)))
        return out

    @property
    def shutdown_ranges(self) -> list[tuple[int, int]]:
        return [(s.start_ms, s.end_ms) for s in self.shutdowns]


class SiteDoc(_Model):
    """Shape check only; the override blocks are validated merged with the defaults (see ``_build_site``)."""

    site: str
    source: str | None = None  # e.g. "cz-0412 monitoring scheme rev. 3": named as the source of overridden values
    calendar: CalendarConfig | None = None
    charging_points: list[str] = Field(default_factory=list)  # non-empty: charging elsewhere is a violation
    inhibit_rules: list[InhibitRule] = Field(default_factory=list)  # appended to the global ones, this site only
    # merged by name over the defaults' proposal rules (``- {name: battery-runaway-cut-power, auto: true}``)
    proposals: list[dict[str, Any]] = Field(default_factory=list)
    family_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("charging_points")
    @classmethod
    def _point_ids(cls, v: list[str]) -> list[str]:
        for d in v:
            if not _ID_RE.match(d):
                raise ValueError(f"device id {d!r} must match {_ID_RE.pattern}")
        if len(set(v)) != len(v):
            raise ValueError("a charging point is listed twice")
        return v

    @field_validator("inhibit_rules")
    @classmethod
    def _names(cls, v):
        return _unique_names(v)

    @field_validator("site")
    @classmethod
    def _site_id(cls, v: str) -> str:
        if not _ID_RE.match(v):
            raise ValueError(f"site id must match {_ID_RE.pattern}")
        return v

    @model_validator(mode="after")
    def _keys(self) -> "SiteDoc":
        for fam in self.family_overrides:
            if fam not in FAMILIES:
                raise ValueError(f"family_overrides: unknown family {fam!r}; known: {sorted(FAMILIES)}")
        for dev in self.devices:
            if not _ID_RE.match(str(dev)):
                raise ValueError(f"devices: device id {dev!r} must match {_ID_RE.pattern}")
        return self


# ------------------------------------------------------------------------------------------------ resolved rules
@dataclass(frozen=True)
class DeviceRules:
    """The effective rules for one device plus where they came from (for evidence and ``sitewatch rules``)."""

    site: str
    device: str
    family: str
    rules: FamilyRules
    reassert_s: float
    faults: FaultRules
    overridden_by: tuple[str, ...] = ()  # "config/rules/sites/cz-0412.yaml devices.tc-01", ...
    site_source: str | None = None
    gateway: str | None = None  # from the device block's ``gateway:`` (topology override), else None


@dataclass
class _Site:
    site: str
    file: str
    source: str | None
    families: dict[str, FamilyBase]
    devices: dict[str, tuple[str, FamilyBase]]
    calendar: CalendarConfig = field(default_factory=CalendarConfig)
    charging_points: frozenset[str] = frozenset()
    inhibit_rules: list[InhibitRule] = field(default_factory=list)  # already restricted to this site
    gateways: dict[str, str] = field(default_factory=dict)  # device -> gateway (devices blocks' ``gateway:``)
    proposals: list[ProposalRule] | None = None  # None: the defaults' proposal rules


_DEFAULT_CALENDAR = CalendarConfig()


@dataclass
class RuleSet:
    defaults: Defaults = field(default_factory=Defaults)
    sites: dict[str, _Site] = field(default_factory=dict)
    origin: str = "built-in defaults"

    @classmethod
    def default(cls) -> "RuleSet":
        return cls()

    @classmethod
    def from_yaml_text(cls, text: str, filename: str = "<text>") -> "RuleSet":
        """A whole rule set from one YAML stream: a defaults document and/or site documents (``---``-separated).

        Without a defaults document the built-in defaults apply, so a stream of site documents is enough.
        """
        docs = _parse_stream(text, filename)
        defaults: Defaults | None = None
        sites: list[tuple[str, Any, dict]] = []
        problems: list = []
        for node, data in docs:
            if data is None:
                continue
            if isinstance(data, dict) and "site" in data:
                sites.append((filename, node, data))
            elif isinstance(data, dict) and defaults is None:
                try:
                    defaults = _build_defaults(filename, node, data)
                except RulesError as e:
                    problems += e.problems
            else:
                line = node.start_mark.line + 1
                problems.append((filename, line, "", "expected a defaults document (families: ...) or a site "
                                                     "document (site: ...), and at most one defaults document"))
        return cls._assemble(defaults or Defaults(), sites, problems, origin=filename)

    @classmethod
    def _assemble(cls, defaults: Defaults, site_docs: list[tuple[str, Any, dict]], problems: list,
                  origin: str) -> "RuleSet":
        out = cls(defaults=defaults, origin=origin)
        for file, node, data in site_docs:
            try:
                s = _build_site(defaults, file, node, data)
            except RulesError as e:
                problems += e.problems
                continue
            if s.site in out.sites:
                problems.append((file, _line_of(node, ["site"]), "site",
                                 f"site {s.site!r} is already defined in {out.sites[s.site].file}"))
                continue
            out.sites[s.site] = s
        if problems:
            raise RulesError(problems)
        return out

    # -------------------------------------------------------------------------------------------- lookups
    def family(self, site: str, family: str) -> FamilyBase:
        s = self.sites.get(site)
        if s is not None and family in s.families:
            return s.families[family]
        return getattr(self.defaults.families, family)

    def device(self, site: str, device: str, family: str) -> DeviceRules:
        """Effective rules; a device block for another family is ignored (the reading's family wins)."""
        s = self.sites.get(site)
        over: list[str] = []
        rules = self.family(site, family)
        if s is not None:
            if family in s.families:
                over.append(f"{s.file} family_overrides.{family}")
            dev = s.devices.get(device)
            if dev is not None and dev[0] == family:
                rules = dev[1]
                over.append(f"{s.file} devices.{device}")
        return DeviceRules(site, device, family, rules, self.defaults.reassert, self.defaults.faults,  # type: ignore[arg-type]
                           tuple(over), s.source if s else None, self.device_gateway(site, device))

    def device_gateway(self, site: str, device: str) -> str | None:
        """The gateway a device stands behind when its site file says so (``devices.<id>.gateway``), else None."""
        s = self.sites.get(site)
        return s.gateways.get(device) if s is not None else None

    def calendar_config(self, site: str) -> CalendarConfig:
        s = self.sites.get(site)
        return s.calendar if s is not None else _DEFAULT_CALENDAR

    def charging_points(self, site: str) -> frozenset[str]:
        """Approved charging points of a site; empty = not enforced (charging at any battery device is allowed)."""
        s = self.sites.get(site)
        return s.charging_points if s is not None else frozenset()

    @property
    def lateness(self) -> LatenessRules:
        return self.defaults.lateness

    def inhibit_rules(self, site: str | None = None) -> list[InhibitRule]:
        """The global inhibit rules, then the site's own (each restricted to ``site: <its site>``).

        Without ``site``: the global rules and every site's rules (safe, since site rules carry their site).
        """
        out = list(self.defaults.inhibit_rules)
        for s in self.sites.values():
            if site in (None, s.site):
                out += s.inhibit_rules
        return out

    def proposals(self, site: str | None = None) -> list[ProposalRule]:
        """The proposal rules of ``site`` (the defaults merged with its file); without a site, every rule any site
        uses (to know which finding kinds to look at)."""
        if site is not None:
            s = self.sites.get(site)
            return list(s.proposals) if s is not None and s.proposals is not None else list(self.defaults.proposals)
        out = {r.name: r for r in self.defaults.proposals}
        for s in self.sites.values():
            for r in s.proposals or ():
                out.setdefault(f"{s.site}:{r.name}", r)
        return list(out.values())

    def configured_devices(self, site: str | None = None) -> list[tuple[str, str, str]]:
        """(site, device, family) of every device named in a site file."""
        return [(s.site, d, fam) for s in self.sites.values() if site in (None, s.site)
                for d, (fam, _) in sorted(s.devices.items())]

    @property
    def fingerprint(self) -> str:
        """Stable content hash: tells hot reload whether anything changed and names the version in logs."""
        h = hashlib.sha256(self.defaults.model_dump_json().encode())
        for name in sorted(self.sites):
            s = self.sites[name]
            h.update(name.encode())
            for fam in sorted(s.families):
                h.update(fam.encode() + s.families[fam].model_dump_json().encode())
            for d in sorted(s.devices):
                h.update(d.encode() + s.devices[d][1].model_dump_json().encode())
            h.update(b"calendar" + s.calendar.model_dump_json().encode())
            h.update(b"charging_points" + ",".join(sorted(s.charging_points)).encode())
            h.update(b"gateways" + ",".join(f"{d}={g}" for d, g in sorted(s.gateways.items())).encode())
            for r in s.inhibit_rules:
                h.update(b"inhibit" + r.model_dump_json().encode())
            for r in s.proposals or ():
                h.update(b"proposal" + r.model_dump_json().encode())
        return h.hexdigest()[:16]


def load_rules(path: str | Path) -> RuleSet:
    """A rules directory (``defaults.yaml`` optional, ``sites/*.yaml``) or a single YAML file."""
    p = Path(path)
    if p.is_file():
        return RuleSet.from_yaml_text(p.read_text(encoding="utf-8"), filename=str(p))
    if not p.is_dir():
        raise RulesError([(str(p), None, "", "no such rules file or directory")])
    problems: list = []
    defaults = Defaults()
    dfile = p / "defaults.yaml"
    if dfile.exists():
        try:
            docs = _parse_stream(dfile.read_text(encoding="utf-8"), str(dfile))
            node, data = docs[0] if docs else (None, None)
            if data is not None:
                defaults = _build_defaults(str(dfile), node, data)
        except RulesError as e:
            problems += e.problems
    site_docs = []
    for f in sorted((p / "sites").glob("*.y*ml")) if (p / "sites").is_dir() else []:
        try:
            for node, data in _parse_stream(f.read_text(encoding="utf-8"), str(f)):
                if data is not None:
                    site_docs.append((str(f), node, data))
        except RulesError as e:
            problems += e.problems
    return RuleSet._assemble(defaults, site_docs, problems, origin=str(p))


def bundle_text(path: str | Path) -> str:
    """A rules directory as one YAML stream for ``sw.config``: what ``RuleSet.from_yaml_text`` reads back."""
    p = Path(path)
    parts = []
    if (p / "defaults.yaml").exists():
        parts.append((p / "defaults.yaml").read_text(encoding="utf-8"))
    if (p / "sites").is_dir():
        parts += [f.read_text(encoding="utf-8") for f in sorted((p / "sites").glob("*.y*ml"))]
    return "\n---\n".join(t.strip("\n").removeprefix("---\n") for t in parts) + "\n"


# ------------------------------------------------------------------------------------------------ validation
def _parse_stream(text: str, filename: str) -> list[tuple[Any, Any]]:
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        datas = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e)
        raise RulesError([(filename, line, "", f"YAML syntax: {problem}")]) from None
    problems: list = []
    for node in nodes:
        _find_duplicate_keys(node, filename, [], problems)
    if problems:
        raise RulesError(problems)
    return list(zip(nodes, datas))


def _find_duplicate_keys(node: Any, filename: str, path: list, problems: list) -> None:
    """PyYAML keeps the last of two equal keys silently; in a rule file that hides a typo'd override."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            key = k.value
            if key in seen:
                problems.append((filename, k.start_mark.line + 1, ".".join(map(str, path + [key])),
                                 f"duplicate key (first at line {seen[key]})"))
            seen[key] = k.start_mark.line + 1
            _find_duplicate_keys(v, filename, path + [key], problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _find_duplicate_keys(v, filename, path + [i], problems)


def _line_of(node: Any, path: list) -> int | None:
    """Line of the deepest node along ``path``; for a mapping entry the line of its key, where people look."""
    if node is None:
        return None
    mark = node.start_mark
    for item in path:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == str(item)), None)
            if pair is None:
                break
            mark, node = pair[0].start_mark, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(item, int) and item < len(node.value):
            node = node.value[item]
            mark = node.start_mark
        else:
            break
    return mark.line + 1


def _problems_from(exc: ValidationError, filename: str, root: Any, prefix: list) -> list:
    out = []
    for err in exc.errors():
        loc = [x for x in err["loc"] if not (isinstance(x, str) and x.startswith(("function-", "list[")))]
        path = prefix + loc
        msg = err["msg"].removeprefix("Value error, ")
        out.append((filename, _line_of(root, path), ".".join(map(str, path)), msg))
    return out


def _build_defaults(filename: str, node: Any, data: Any) -> Defaults:
    if not isinstance(data, dict):
        raise RulesError([(filename, _line_of(node, []), "", "a defaults document must be a mapping")])
    try:
        return Defaults.model_validate(data)
    except ValidationError as e:
        raise RulesError(_problems_from(e, filename, node, [])) from None


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _build_site(defaults: Defaults, filename: str, node: Any, data: Any) -> _Site:
    if not isinstance(data, dict):
        raise RulesError([(filename, _line_of(node, []), "", "a site document must be a mapping")])
    try:
        doc = SiteDoc.model_validate(data)
    except ValidationError as e:
        raise RulesError(_problems_from(e, filename, node, [])) from None
    problems: list = []
    families: dict[str, FamilyBase] = {}
    for fam, over in doc.family_overrides.items():
        base = getattr(defaults.families, fam).model_dump()
        if not isinstance(over, dict):
            problems.append((filename, _line_of(node, ["family_overrides", fam]), f"family_overrides.{fam}",
                             "must be a mapping"))
            continue
        try:
            families[fam] = FAMILY_MODELS[fam].model_validate(_deep_merge(base, over))
        except ValidationError as e:
            problems += _problems_from(e, filename, node, ["family_overrides", fam])
    devices: dict[str, tuple[str, FamilyBase]] = {}
    gateways: dict[str, str] = {}
    for dev, over in doc.devices.items():
        where = ["devices", dev]
        if not isinstance(over, dict) or "family" not in over:
            problems.append((filename, _line_of(node, where), ".".join(where),
                             f"each device needs 'family: <one of {sorted(FAMILIES)}>'"))
            continue
        if "gateway" in over:
            over = dict(over)
            gw = over.pop("gateway")
            if not (isinstance(gw, str) and _ID_RE.match(gw)):
                problems.append((filename, _line_of(node, where + ["gateway"]), ".".join(where + ["gateway"]),
                                 f"gateway id must be a string matching {_ID_RE.pattern}"))
            else:
                gateways[dev] = gw
        fam = over["family"]
        if fam not in FAMILIES:
            problems.append((filename, _line_of(node, where + ["family"]), ".".join(where + ["family"]),
                             f"unknown family {fam!r}; known: {sorted(FAMILIES)}"))
            continue
        base = (families.get(fam) or getattr(defaults.families, fam)).model_dump()
        rest = {k: v for k, v in over.items() if k != "family"}
        try:
            devices[dev] = (fam, FAMILY_MODELS[fam].model_validate(_deep_merge(base, rest)))
        except ValidationError as e:
            problems += _problems_from(e, filename, node, where)
    inhibit: list[InhibitRule] = []
    for i, r in enumerate(doc.inhibit_rules):
        for side in ("source_match", "target_match"):
            other = getattr(r, side).get("site", doc.site)
            if other != doc.site:
                problems.append((filename, _line_of(node, ["inhibit_rules", i, side, "site"]),
                                 f"inhibit_rules.{i}.{side}.site",
                                 f"a site file's inhibit rule applies to its own site {doc.site!r} only"))
        inhibit.append(r.model_copy(update={"source_match": {**r.source_match, "site": doc.site},
                                            "target_match": {**r.target_match, "site": doc.site}}))
    proposals: list[ProposalRule] | None = None
    if doc.proposals:
        merged = {r.name: r.model_dump() for r in defaults.proposals}
        for i, over in enumerate(doc.proposals):
            name = over.get("name")
            merged[name] = _deep_merge(merged.get(name, {}), over)
        proposals = []
        for i, (name, data) in enumerate(merged.items()):
            try:
                proposals.append(ProposalRule.model_validate(data))
            except ValidationError as e:
                at = next((j for j, o in enumerate(doc.proposals) if o.get("name") == name), None)
                problems += _problems_from(e, filename, node, ["proposals", at] if at is not None else ["proposals"])
    if problems:
        raise RulesError(problems)
    return _Site(doc.site, filename, doc.source, families, devices, doc.calendar or _DEFAULT_CALENDAR,
                 frozenset(doc.charging_points), inhibit, gateways, proposals)
