"""``sitewatch rules``: validate, list, explain and (refusing to) publish — run through the click object."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import tuning.rules_cli as rules_cli
from tuning.rules_cli import rules
from sitewatch.rules import load_rules

REPO_RULES = Path(__file__).resolve().parents[2] / "config" / "rules"


def invoke(*args: str):
    return CliRunner().invoke(rules, list(args), catch_exceptions=False)


@pytest.fixture
def bad_rules(tmp_path) -> Path:
    d = tmp_path / "bad"
    shutil.copytree(REPO_RULES, d)
    (d / "sites" / "x-01.yaml").write_text(
        "site: x-01\n"
        "devices:\n"
        "  tc-09:\n"
        "    family: crane\n"
        "    rated_load_t: -3\n"
        "  jc-01:\n"
        "    family: pit\n"
        "    metrics:\n"
        "      wall_top_horizontal: {alarm: 30, rate: 3, colour: red}\n")
    return d


def test_validate_good_dir_prints_summary_and_fingerprint():
    res = invoke("validate", str(REPO_RULES))
    assert res.exit_code == 0, res.output
    fp = load_rules(REPO_RULES).fingerprint
    assert f"fingerprint {fp}" in res.stdout
    assert "1 site(s) cz-0412" in res.stdout and "4 device(s) overridden" in res.stdout
    assert "cz-0412/tc-01 (crane)" in res.stdout


def test_validate_uses_sw_rules_path_by_default(monkeypatch):
    monkeypatch.setenv("SW_RULES_PATH", str(REPO_RULES))
    res = invoke("validate")
    assert res.exit_code == 0 and str(REPO_RULES) in res.stdout


def test_validate_bad_dir_names_every_problem_with_file_line_and_field(bad_rules):
    res = invoke("validate", str(bad_rules))
    assert res.exit_code == 1
    err = res.stderr
    site_file = bad_rules / "sites" / "x-01.yaml"
    assert f"{site_file}:5: devices.tc-09.rated_load_t: Input should be greater than 0" in err
    assert f"{site_file}:9: devices.jc-01.metrics.wall_top_horizontal.colour" in err
    assert "2 problem(s)" in err


def test_validate_missing_dir_exits_1():
    res = invoke("validate", "/nonexistent/rules")
    assert res.exit_code == 1 and "no such rules file or directory" in res.stderr


def test_explain_shows_the_device_override_and_its_source():
    res = invoke("explain", "--rules", str(REPO_RULES), "--site", "cz-0412", "--device", "tc-01")
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "overridden by: config/rules/sites/cz-0412.yaml devices.tc-01" in out or "devices.tc-01" in out
    load = out.split("crane.overload")[1].split("crane.moment")[0]
    assert "7.2 t" in load and "8 t" in load and "8.8 t" in load, "90/100/110 % of the crane's own 8 t"
    assert "< 6.84 t" in load, "clears below 0.95 x 7.2 t"
    assert "device override (" in load and "cz-0412.yaml devices.tc-01)" in load
    moment = out.split("crane.moment")[1].split("crane.wind")[0]
    assert "device override" not in moment and "default (" in moment
    assert "major hazard from: red" in load
    assert "silent: no reading for 60 s" in out  # 10 x 1 s, raised to the crane floor of 60 s
    assert "clamp(10 x cadence, 60 s, 600 s)" in out and "counted in working time only" in out


def test_explain_json_names_the_layer_of_each_value():
    res = invoke("explain", "--rules", str(REPO_RULES), "--site", "cz-0412", "--device", "jc-07", "--family", "pit",
                 "--json")
    data = json.loads(res.stdout)
    wall = next(c for c in data["checks"] if c["kind"] == "pit.cumulative" and c["metric"] == "wall_top_horizontal")
    assert wall["levels"] == {"yellow": 14.0, "orange": 17.0, "red": 20.0}
    assert wall["value_sources"]["red"].startswith("device override")
    rate = next(c for c in data["checks"] if c["kind"] == "pit.rate" and c["metric"] == "wall_top_horizontal")
    # jc-07 repeats the site's rate of 2.0 mm/d: the value comes from the innermost layer that changed it
    assert rate["value_sources"]["red"].startswith("site file")
    vert = next(c for c in data["checks"] if c["kind"] == "pit.cumulative" and c["metric"] == "wall_top_vertical")
    assert vert["value_sources"]["red"].startswith("default")
    assert vert["value_sources"]["hold_count"].startswith("default")
    strut_site = json.loads(invoke("explain", "--rules", str(REPO_RULES), "--site", "cz-0412", "--device", "jc-99",
                                   "--family", "pit", "--json").stdout)
    wall_site = next(c for c in strut_site["checks"]
                     if c["kind"] == "pit.cumulative" and c["metric"] == "wall_top_horizontal")
    assert wall_site["value_sources"]["red"].startswith("site file"), "the site's family override, not a device"


def test_explain_needs_family_for_a_device_not_in_a_site_file():
    res = CliRunner().invoke(rules, ["explain", "--rules", str(REPO_RULES), "--site", "cz-0412", "--device", "zz"])
    assert res.exit_code == 2 and "--family" in res.output


def test_list_shows_defaults_and_site_overrides():
    res = invoke("list", "--rules", str(REPO_RULES), "--family", "crane")
    assert res.exit_code == 0
    assert "crane.overload" in res.stdout and "site cz-0412" in res.stdout
    assert "device tc-02 (crane): crane.overload load 5.4/6/6.6 t (was 9/10/11); crane.wind wind -/15/- m/s" \
        in res.stdout
    res = invoke("list", "--rules", str(REPO_RULES), "--site", "cz-0412", "--family", "pit")
    assert "pit @ cz-0412" in res.stdout
    assert "family_overrides.pit: pit.cumulative wall_top_horizontal 17.5/21.25/25 mm (was 21/25.5/30)" in res.stdout


def test_publish_refuses_invalid_rules_and_sends_nothing(bad_rules, monkeypatch):
    sent = []
    monkeypatch.setattr(rules_cli, "send_config", lambda *a, **k: sent.append(a))
    res = invoke("publish", str(bad_rules), "--bootstrap", "127.0.0.1:1")
    assert res.exit_code == 1
    assert "rated_load_t" in res.stderr
    assert sent == []


def test_publish_dry_run_shows_the_record(monkeypatch):
    monkeypatch.setenv("USER", "ops-li")
    res = invoke("publish", str(REPO_RULES), "--dry-run")
    rec = json.loads(res.stdout)
    assert rec["v"] == 1 and rec["author"] == "ops-li"
    assert rec["fingerprint"] == load_rules(REPO_RULES).fingerprint
