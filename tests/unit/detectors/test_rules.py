"""Rule files: schema, per-site / per-device overrides, and errors that name file, line and field."""

from pathlib import Path

import pytest

from detectors.plan import explain
from sitewatch.rules import Defaults, RuleSet, RulesError, bundle_text, load_rules

REPO = Path(__file__).resolve().parents[3]


def errors_of(text: str, filename: str = "cz-0412.yaml") -> str:
    with pytest.raises(RulesError) as e:
        RuleSet.from_yaml_text(text, filename)
    return str(e.value)


def test_shipped_defaults_file_matches_the_built_in_defaults():
    rules = load_rules(REPO / "config" / "rules")
    assert rules.defaults == Defaults()
    assert "cz-0412" in rules.sites


def test_site_and_device_overrides_layer_on_the_defaults():
    rules = load_rules(REPO / "config" / "rules")
    assert rules.device("cz-0412", "tc-01", "crane").rules.rated_load_t == 8.0
    assert rules.device("cz-0412", "tc-99", "crane").rules.rated_load_t == 10.0  # not listed: defaults
    assert rules.device("other", "tc-01", "crane").rules.rated_load_t == 10.0  # other site
    jc07 = rules.device("cz-0412", "jc-07", "pit").rules
    assert jc07.metrics["wall_top_horizontal"].alarm == 20.0  # device beats site
    assert jc07.grade == 1  # from the site's family_overrides
    assert jc07.metrics["deep_horizontal"].alarm == 45.0  # untouched default
    jc08 = rules.device("cz-0412", "jc-08", "pit").rules
    assert jc08.metrics["wall_top_horizontal"].alarm == 25.0  # site override
    assert rules.device("cz-0412", "zl-03", "pit").rules.metrics["strut_force"].alarm_value == 3200 * 0.7
    assert rules.device("cz-0412", "eb-01", "electrical").rules.rcd_trip_ma == 15.0


def test_device_block_for_another_family_is_ignored():
    rules = RuleSet.from_yaml_text("site: s\ndevices:\n  x: {family: crane, rated_load_t: 3}\n")
    assert rules.device("s", "x", "pit").rules.family == "pit"


def test_error_names_file_line_and_field():
    text = """site: cz-0412
devices:
  tc-01:
    family: crane
    rated_load_t: 0
"""
    assert errors_of(text, "config/rules/sites/cz-0412.yaml") == \
        "config/rules/sites/cz-0412.yaml:5: devices.tc-01.rated_load_t: Input should be greater than 0"


def test_value_error_inside_a_nested_block():
    text = "site: s\nfamily_overrides:\n  pit:\n    metrics:\n      wall_top_horizontal: {alarm: -1}\n"
    assert errors_of(text, "s.yaml") == \
        "s.yaml:5: family_overrides.pit.metrics.wall_top_horizontal.alarm: Input should be greater than 0"


def test_unknown_field_is_rejected_with_its_line():
    text = "site: s\ndevices:\n  tc-01:\n    family: crane\n    rated_laod_t: 8\n"
    assert errors_of(text) == "cz-0412.yaml:5: devices.tc-01.rated_laod_t: Extra inputs are not permitted"


def test_levels_must_rise_and_errors_point_into_lists():
    msg = errors_of("families:\n  crane:\n    overload: {levels_pct: [90, 80, 110]}\n", "d.yaml")
    assert msg == "d.yaml:3: families.crane.overload.levels_pct: levels must rise strictly: yellow < orange < red"
    msg = errors_of("families:\n  crane:\n    overload:\n      levels_pct:\n        - 90\n        - abc\n        - 110\n",
                    "d.yaml")
    assert msg.startswith("d.yaml:6: families.crane.overload.levels_pct.1: Input should be a valid number")


def test_several_problems_are_all_reported():
    text = """site: s
family_overrides:
  pit:
    metrics:
      wall_top_horizontal: {alarm: -1}
      no_such_metric: {alarm: 3}
devices:
  a: {rated_load_t: 3}
  b: {family: lorry}
"""
    msg = errors_of(text, "s.yaml")
    lines = msg.splitlines()
    assert any(x.startswith("s.yaml:4: family_overrides.pit.metrics: unknown metric(s) ['no_such_metric']") for x in lines)
    assert any(x.startswith("s.yaml:8: devices.a: each device needs 'family:") for x in lines)
    assert any(x.startswith("s.yaml:9: devices.b.family: unknown family 'lorry'") for x in lines)


def test_duplicate_keys_and_syntax_errors():
    assert errors_of("site: s\ndevices:\n  a: {family: crane}\n  a: {family: pit}\n") == \
        "cz-0412.yaml:4: devices.a: duplicate key (first at line 3)"
    assert errors_of("site: s\ndevices: [\n", "x.yaml").startswith("x.yaml:3: YAML syntax")


def test_durations_accept_units():
    rules = RuleSet.from_yaml_text("reassert: 2min\nfamilies:\n  pit: {rate_window: 2d, expected_interval: 90}\n")
    assert rules.defaults.reassert == 120.0
    assert rules.defaults.families.pit.rate_window == 172800.0
    assert rules.defaults.families.pit.expected_interval == 90.0
    assert "not a duration" in errors_of("reassert: soon\n")


def test_duplicate_site_across_documents_is_an_error():
    assert "already defined" in errors_of("site: s\n---\nsite: s\n")


def test_bundle_round_trip_for_hot_reload():
    d = REPO / "config" / "rules"
    assert RuleSet.from_yaml_text(bundle_text(d), "sw.config").fingerprint == load_rules(d).fingerprint
    assert RuleSet.default().fingerprint != load_rules(d).fingerprint


def test_missing_directory_is_a_rules_error(tmp_path):
    with pytest.raises(RulesError):
        load_rules(tmp_path / "nope")
    (tmp_path / "sites").mkdir()
    (tmp_path / "sites" / "a.yaml").write_text("site: a\ndevices:\n  x: {family: crane, rated_load_t: -1}\n")
    with pytest.raises(RulesError, match=r"sites/a.yaml:3: devices.x.rated_load_t"):
        load_rules(tmp_path)


def test_explain_lists_effective_checks_and_sources():
    rules = load_rules(REPO / "config" / "rules")
    out = explain(rules, "cz-0412", "tc-01", "crane")
    overload = next(x for x in out if x["kind"] == "crane.overload")
    assert overload["levels"] == {"yellow": 7.2, "orange": 8.0, "red": 8.8}
    assert "GB 12602" in overload["source"] and "devices.tc-01" in overload["source"]
    silent = next(x for x in out if x["kind"] == "fault.silent")
    assert silent["after_s"] == 60.0, "10 x the crane's 1 s, lifted to its 60 s silent_floor"
    assert silent["follows_calendar"] and silent["calendar"]["rest_days"] == ["sun"]
