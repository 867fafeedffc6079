"""Rule config for field conditions: cadence and deadman bounds, site calendar, charging points and violations,
late data, inhibit rules and gateway topology — schema, errors with file:line, lookups and the device plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors import DetectorEngine
from detectors.calendar import Calendar
from detectors.plan import build_plan, explain
from sitewatch.rules import Defaults, InhibitRule, RuleSet, RulesError, load_rules

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "config" / "rules"


def errors_of(text: str, filename: str = "s.yaml") -> str:
    with pytest.raises(RulesError) as e:
        RuleSet.from_yaml_text(text, filename)
    return str(e.value)


# ------------------------------------------------------------------------------------------------ cadence
@pytest.mark.parametrize("family, interval_s, floor_s, ceiling_s, follows, silent_s", [
    ("crane", 1, 60, 600, True, 60),  # 10 x 1 s lifted to the 60 s floor
    ("pit", 1800, 7200, 93600, False, 18000),  # 10 x 30 min
    ("formwork", 1, 60, 7200, False, 60),
    ("electrical", 30, 300, 3600, False, 300),
    ("battery", 30, 300, 3600, True, 300),
])
def test_family_cadence_defaults_and_the_clamped_deadman(family, interval_s, floor_s, ceiling_s, follows, silent_s):
    fam = getattr(Defaults().families, family)
    assert (fam.expected_interval, fam.silent_floor, fam.silent_ceiling, fam.follows_calendar) == \
        (interval_s, floor_s, ceiling_s, follows)
    assert fam.calendar_grace == 1800
    plan = build_plan(RuleSet.default(), "s", "d", family)
    assert plan.silent_ms == silent_s * 1000
    assert (plan.default_interval_ms, plan.silent_floor_ms, plan.silent_ceiling_ms) == \
        (interval_s * 1000, floor_s * 1000, ceiling_s * 1000)
    assert plan.silent_after == 10.0 and plan.min_gaps == 5
    assert plan.follows_calendar is follows and plan.calendar_grace_ms == 1_800_000 and plan.gateway is None


def test_silent_limit_uses_the_learned_cadence_only_after_enough_gaps():
    plan = build_plan(RuleSet.default(), "s", "d", "pit")
    assert plan.silent_limit_ms() == 18_000_000
    assert plan.silent_limit_ms(600_000, gaps_seen=4) == 18_000_000  # not learned yet: 30 min default
    assert plan.silent_limit_ms(600_000, gaps_seen=5) == 7_200_000  # 10 x 10 min = 100 min -> floor 2 h
    assert plan.silent_limit_ms(3_600_000, gaps_seen=5) == 36_000_000
    assert plan.silent_limit_ms(86_400_000, gaps_seen=9) == 93_600_000  # once a day -> ceiling 26 h


def test_cadence_overrides_per_site_and_device():
    text = """faults: {min_gaps_to_learn: 3, silent_after_intervals: 4}
---
site: s
family_overrides:
  pit: {expected_interval: 10min, silent_floor: 30min}
devices:
  hoist-01: {family: electrical, follows_calendar: true, calendar_grace: 15min, gateway: gw-07}
  jc-01: {family: pit, silent_ceiling: 2h}
"""
    rs = RuleSet.from_yaml_text(text)
    p = build_plan(rs, "s", "jc-01", "pit")
    assert (p.default_interval_ms, p.silent_floor_ms, p.silent_ceiling_ms, p.min_gaps) == \
        (600_000, 1_800_000, 7_200_000, 3)
    assert p.silent_ms == 2_400_000  # 4 x 10 min
    h = build_plan(rs, "s", "hoist-01", "electrical")
    assert h.follows_calendar and h.calendar_grace_ms == 900_000 and h.gateway == "gw-07"
    assert not build_plan(rs, "s", "eb-02", "electrical").follows_calendar


def test_floor_above_ceiling_is_an_error_on_its_line():
    assert errors_of("families:\n  pit:\n    silent_floor: 3h\n    silent_ceiling: 1h\n", "d.yaml") == \
        "d.yaml:4: families.pit.silent_ceiling: silent_ceiling (3600 s) must be at least silent_floor (10800 s)"
    msg = errors_of("site: s\ndevices:\n  jc-01:\n    family: pit\n    silent_floor: 30h\n")
    assert msg.startswith("s.yaml:3: devices.jc-01.silent_ceiling: silent_ceiling (93600 s) must be at least")
    assert "min_gaps_to_learn" in errors_of("faults: {min_gaps_to_learn: 0}\n")
    assert "Input should be greater than 0" in errors_of("families:\n  crane: {expected_interval: 0}\n")


# ------------------------------------------------------------------------------------------------ gateway
def test_device_gateway_lookup_and_errors():
    rs = load_rules(RULES)
    assert rs.device_gateway("cz-0412", "zl-03") == "gw-02"
    assert rs.device("cz-0412", "zl-03", "pit").gateway == "gw-02"
    assert build_plan(rs, "cz-0412", "zl-03", "pit").gateway == "gw-02"
    assert rs.device_gateway("cz-0412", "tc-01") is None and rs.device_gateway("nowhere", "zl-03") is None
    assert errors_of("site: s\ndevices:\n  a:\n    family: crane\n    gateway: 'GW 1'\n") == \
        "s.yaml:5: devices.a.gateway: gateway id must be a string matching ^[a-z0-9][a-z0-9_.-]{0,62}$"
    assert errors_of("site: s\nfamily_overrides:\n  crane: {gateway: gw-1}\n") == \
        "s.yaml:3: family_overrides.crane.gateway: Extra inputs are not permitted"


# ------------------------------------------------------------------------------------------------ calendar
def test_the_example_site_calendar():
    rs = load_rules(RULES)
    cfg = rs.calendar_config("cz-0412")
    assert cfg.timezone == "Asia/Shanghai" and cfg.working_hours == ["07:00-12:00", "13:00-19:00"]
    assert cfg.rest_weekdays == {6} and cfg.charging_minutes == [(480, 1080)]
    engine = DetectorEngine(rs)
    cal = engine.calendar("cz-0412")
    assert isinstance(cal, Calendar) and engine.calendar("cz-0412") is cal  # cached per site
    assert cal.state_at(1_791_000_000_000) == "holiday"  # 2026-10-03 Asia/Shanghai
    assert rs.charging_points("cz-0412") == frozenset({"cab-01", "cab-02"})


def test_a_site_without_calendar_is_always_working_and_unenforced():
    rs = RuleSet.from_yaml_text("site: s\n")
    for site in ("s", "not-in-any-file"):
        cal = DetectorEngine(rs).calendar(site)
        assert cal.timezone == "Asia/Shanghai" and cal.always_working and cal.always_charging
        assert rs.charging_points(site) == frozenset()


def test_calendar_values_are_normalised_and_yaml_dates_accepted():
    text = """site: s
calendar:
  timezone: Europe/Berlin
  working_hours: ["7:00-12:00", "13:00 - 24:00"]
  rest_days: [Sat, sunday]
  holidays: [2026-12-25, "2026-12-31..2027-01-01"]
  shutdowns:
    - {from: 2026-11-03T00:00:00+01:00, to: 1793833200000}
    - {from: "2026-11-20T08:00:00Z", to: "2026-11-20T12:00:00Z", reason: inspection}
"""
    cfg = RuleSet.from_yaml_text(text).calendar_config("s")
    assert cfg.working_hours == ["07:00-12:00", "13:00-24:00"] and cfg.working_minutes == [(420, 720), (780, 1440)]
    assert cfg.rest_days == ["sat", "sun"] and cfg.holidays == ["2026-12-25", "2026-12-31..2027-01-01"]
    assert cfg.shutdown_ranges == [(1_793_660_400_000, 1_793_833_200_000), (1_795_161_600_000, 1_795_176_000_000)]
    assert cfg.charging_hours == ["00:00-24:00"]


@pytest.mark.parametrize("block, line, path, msg", [
    ("  timezone: Asia/Shanghi\n", 3, "calendar.timezone", "'Asia/Shanghi' is not an IANA time zone name"),
    ("  working_hours: ['22:00-06:00']\n", 3, "calendar.working_hours.0",
     "'22:00-06:00': the end must be after the start (overnight ranges are not supported yet"),
    ("  working_hours:\n    - '07:00-12:00'\n    - '7am-noon'\n", 5, "calendar.working_hours.1",
     "'7am-noon' is not a local time range like '07:00-12:00'"),
    ("  working_hours: ['07:00-24:30']\n", 3, "calendar.working_hours.0", "times run from 00:00 to 24:00"),
    ("  working_hours: []\n", 3, "calendar.working_hours", "List should have at least 1 item"),
    ("  rest_days: [sun, holiday]\n", 3, "calendar.rest_days.1", "'holiday' is not a weekday"),
    ("  holidays: ['2026-10-07..2026-10-01']\n", 3, "calendar.holidays.0", "the range ends before it starts"),
    ("  holidays: ['2026-13-01']\n", 3, "calendar.holidays.0", "is not a date like '2026-10-01'"),
    ("  shutdowns:\n    - {from: '2026-11-03T00:00:00', to: '2026-11-04T00:00:00+08:00'}\n", 4,
     "calendar.shutdowns.0.from", "has no UTC offset"),
    ("  shutdowns:\n    - {from: '2026-11-03T00:00:00+08:00', to: '2026-11-02T00:00:00+08:00'}\n", 4,
     "calendar.shutdowns.0.to", "'to' must be after 'from'"),
    ("  shutdowns:\n    - {from: 1, to: 2, why: x}\n", 4, "calendar.shutdowns.0.why", "Extra inputs are not permitted"),
    ("  charging_hours: ['18:00-08:00']\n", 3, "calendar.charging_hours.0", "the end must be after the start"),
    ("  workhours: ['07:00-12:00']\n", 3, "calendar.workhours", "Extra inputs are not permitted"),
])
def test_calendar_errors_name_file_line_and_field(block, line, path, msg):
    got = errors_of("site: s\ncalendar:\n" + block)
    assert got.startswith(f"s.yaml:{line}: {path}: ") and msg in got and "\n" not in got, got


def test_charging_points_errors():
    assert errors_of("site: s\ncharging_points: [cab-01, cab-01]\n") == \
        "s.yaml:2: charging_points: a charging point is listed twice"
    assert errors_of("site: s\ncharging_points: [cab-01, 'Cab 2']\n").startswith(
        "s.yaml:2: charging_points: device id 'Cab 2' must match")


# ------------------------------------------------------------------------------------------------ charging, lateness
def test_charging_violation_config():
    cv = Defaults().families.battery.charging_violation
    assert (cv.enabled, cv.min_current_a, cv.level) == (True, 0.5, "orange")
    rs = RuleSet.from_yaml_text("site: s\ndevices:\n  cab-09: {family: battery, charging_violation: {level: red}}\n")
    cv = rs.device("s", "cab-09", "battery").rules.charging_violation
    assert (cv.enabled, cv.min_current_a, cv.level) == (True, 0.5, "red")
    assert errors_of("families:\n  battery:\n    charging_violation: {min_current: 1}\n", "d.yaml") == \
        "d.yaml:3: families.battery.charging_violation.min_current: Extra inputs are not permitted"
    assert "Extra inputs" in errors_of("families:\n  crane:\n    charging_violation: {enabled: false}\n")


def test_lateness_defaults_and_override():
    assert (RuleSet.default().lateness.allowed, RuleSet.default().lateness.gap_factor,
            RuleSet.default().lateness.max_gaps) == (72 * 3600, 3.0, 3)
    rs = RuleSet.from_yaml_text("lateness: {allowed: 2d, max_gaps: 5}\n")
    assert rs.lateness.allowed == 172800 and rs.lateness.max_gaps == 5 and rs.lateness.gap_factor == 3.0
    assert errors_of("lateness:\n  gap_factor: 1\n", "d.yaml") == \
        "d.yaml:2: lateness.gap_factor: Input should be greater than 1"


# ------------------------------------------------------------------------------------------------ inhibit rules
def test_built_in_inhibit_rule():
    (r,) = RuleSet.default().inhibit_rules()
    assert r == InhibitRule(name="gateway-offline-silences-its-devices", source_match={"kind": "fault.gateway_offline"},
                            target_match={"kind": "fault.silent"}, equal=["site", "gateway"])
    src = {"site": "s", "gateway": "gw-1", "kind": "fault.gateway_offline", "category": "fault"}
    assert r.matches(src, "source") and not r.matches(src, "target")
    assert r.matches({"site": "s", "gateway": "gw-1", "kind": "fault.silent"}, "target")
    none = InhibitRule(name="n", source_match={"gateway": "None"}, target_match={"category": "fault"})
    assert not none.matches({"gateway": None}, "source") and not none.matches({}, "source")


@pytest.mark.parametrize("source, target", [
    ("{kind: fault.gateway_offline}", "{kind: crane.overload}"),
    ("{category: fault}", "{family: crane}"),
    ("{device: tc-01}", "{kind: crane.overload}"),  # no category / kind constraint: may be a fault
    ("{}", "{category: hazard}"),
])
def test_a_fault_source_must_not_inhibit_hazards(source, target):
    text = ("inhibit_rules:\n  - name: bad\n"
            f"    source_match: {source}\n    target_match: {target}\n    equal: [site]\n")
    msg = errors_of(text, "d.yaml")
    assert msg.startswith("d.yaml:4: inhibit_rules.0.target_match: the source can match a sensor fault, so the "
                          "target must be restricted to faults"), msg
    assert "must never inhibit a hazard on another sensor" in msg


def test_hazard_sources_may_inhibit_anything_and_fault_targets_are_fine():
    text = """inhibit_rules:
  - name: red-overload-hides-yellow
    source_match: {kind: crane.overload, level: red}
    target_match: {kind: crane.moment}
    equal: [site, device]
  - name: silent-hides-flatline
    source_match: {kind: fault.silent}
    target_match: {category: fault}
    equal: [site, device]
"""
    rs = RuleSet.from_yaml_text(text)
    assert [r.name for r in rs.inhibit_rules()] == ["red-overload-hides-yellow", "silent-hides-flatline"]


def test_inhibit_rule_shape_errors():
    assert errors_of("inhibit_rules:\n  - name: x\n    source_match: {kind: fault.silent}\n"
                     "    target_match: {kind: fault.flatline, colour: red}\n    equal: [site]\n", "d.yaml") \
        .startswith("d.yaml:4: inhibit_rules.0.target_match: unknown label(s) ['colour']; known: ['site', 'device'")
    assert errors_of("inhibit_rules:\n  - name: x\n    source_match: {kind: fault.silent}\n"
                     "    target_match: {kind: fault.flatline}\n    equal: [zone]\n", "d.yaml") \
        .startswith("d.yaml:5: inhibit_rules.0.equal: unknown label(s) ['zone']")
    dup = "  - {name: x, source_match: {kind: fault.silent}, target_match: {kind: fault.flatline}}\n"
    assert "inhibit rule name 'x' is used twice" in errors_of("inhibit_rules:\n" + dup + dup)
    assert "Field required" in errors_of("inhibit_rules:\n  - {name: x, source_match: {}}\n")


def test_site_inhibit_rules_are_appended_and_restricted_to_their_site():
    text = """site: s1
inhibit_rules:
  - name: shed-power-cut
    source_match: {kind: fault.gateway_offline, gateway: gw-shed}
    target_match: {category: fault}
    equal: []
---
site: s2
"""
    rs = RuleSet.from_yaml_text(text)
    assert [r.name for r in rs.inhibit_rules("s2")] == ["gateway-offline-silences-its-devices"]
    glob, own = rs.inhibit_rules("s1")
    assert own.source_match == {"kind": "fault.gateway_offline", "gateway": "gw-shed", "site": "s1"}
    assert own.target_match == {"category": "fault", "site": "s1"}
    assert [r.name for r in rs.inhibit_rules()] == [glob.name, own.name]
    assert errors_of("site: s1\ninhibit_rules:\n  - name: x\n    source_match: {kind: fault.silent, site: s2}\n"
                     "    target_match: {kind: fault.flatline}\n") == \
        "s.yaml:4: inhibit_rules.0.source_match.site: a site file's inhibit rule applies to its own site 's1' only"
    assert errors_of("site: s1\ninhibit_rules:\n  - name: x\n    source_match: {kind: fault.silent}\n"
                     "    target_match: {kind: crane.overload}\n").startswith("s.yaml:5: inhibit_rules.0.target_match")


# ------------------------------------------------------------------------------------------------ fingerprint, explain
SITE_BASE = "site: s\ndevices:\n  a: {family: pit}\n"


@pytest.mark.parametrize("changed", [
    SITE_BASE + "calendar: {rest_days: [sun]}\n",
    SITE_BASE + "charging_points: [cab-01]\n",
    SITE_BASE.replace("{family: pit}", "{family: pit, gateway: gw-1}"),
    SITE_BASE + "inhibit_rules:\n  - {name: x, source_match: {kind: fault.silent},"
                " target_match: {kind: fault.flatline}}\n",
])
def test_fingerprint_covers_the_new_site_config(changed):
    assert RuleSet.from_yaml_text(changed).fingerprint != RuleSet.from_yaml_text(SITE_BASE).fingerprint


def test_fingerprint_covers_global_config():
    fp = RuleSet.default().fingerprint
    assert RuleSet.from_yaml_text("lateness: {allowed: 24h}\n").fingerprint != fp
    assert RuleSet.from_yaml_text("inhibit_rules: []\n").fingerprint != fp
    assert RuleSet.from_yaml_text("faults: {min_gaps_to_learn: 9}\n").fingerprint != fp


def test_explain_shows_cadence_deadman_and_calendar():
    rs = load_rules(RULES)
    silent = next(x for x in explain(rs, "cz-0412", "tc-01", "crane") if x["kind"] == "fault.silent")
    assert silent["after_s"] == 60.0 and silent["expected_interval_s"] == 1.0
    assert (silent["silent_floor_s"], silent["silent_ceiling_s"], silent["min_gaps_to_learn"]) == (60.0, 600.0, 5)
    assert silent["follows_calendar"] is True and silent["calendar_grace_s"] == 1800.0
    assert silent["calendar"]["working_hours"] == ["07:00-12:00", "13:00-19:00"]
    assert silent["calendar"]["shutdowns"][0]["from"] == "2026-11-03T00:00:00+08:00"
    assert "working time only" in silent["rule"]
    bat = next(x for x in explain(rs, "cz-0412", "cab-01", "battery") if x["kind"] == "fault.silent")
    assert bat["charging_violation"]["charging_points"] == ["cab-01", "cab-02"]
    pit = next(x for x in explain(rs, "cz-0412", "zl-03", "pit") if x["kind"] == "fault.silent")
    assert pit["gateway"] == "gw-02" and pit["follows_calendar"] is False and "working time" not in pit["rule"]
