"""Every panel query and template-variable query of every generated dashboard runs against a real InfluxDB
filled with simulated data and returns the series the panel needs (not just "no error")."""

from __future__ import annotations

import json

import pytest

from dashboards.build import GENERATED

from .conftest import NOW, render

pytestmark = pytest.mark.integration

VARS = {"site": "cz-0001", "device": "pt-01", "metric": "wall_top_horizontal", "rate": "1h"}
HZ_COLS = ["time", "level", "value", "threshold", "opened_ms", "major", "rule"]

# (dashboard, panel title, refId) → (columns, tag keys of each series, number of series, check on the rows)
EXPECT = {
    ("site-wall", "Open hazards", "A"): (["time", "count"], set(), 1, lambda v: v == [[0, 2]]),
    ("site-wall", "Worst level", "A"): (["time", "max"], set(), 1, lambda v: v[0][1] == 3),
    ("site-wall", "Major hazards — stop work", "A"): (["time", "count"], set(), 1, lambda v: v == [[0, 1]]),
    ("site-wall", "Silent / faulty sensors", "A"): (["time", "count"], set(), 1, lambda v: v == [[0, 1]]),
    ("site-wall", "Device level (worst open finding)", "A"): (["time", "max"], {"device"}, 4, None),
    ("site-wall", "Crane — current values", "A"): (["time", "last"], {"device", "metric"}, 4, None),
    ("site-wall", "Electrical — current values", "A"): (["time", "last"], {"device", "metric"}, 5, None),
    ("site-wall", "Battery — current values", "A"): (["time", "last"], {"device", "metric"}, 5, None),
    ("site-wall", "Formwork — current values", "A"): (["time", "last"], {"device", "metric"}, 4, None),
    ("site-wall", "Pit — current values", "A"): (["time", "last"], {"device", "metric"}, 6, None),
    ("site-wall", "Open hazards and their age", "A"): (HZ_COLS, {"device", "kind", "category"}, 3, None),
    ("site-wall", "Crane load", "A"): (["time", "mean"], {"device", "metric"}, 1, None),
    ("site-wall", "Crane moment (% of rated)", "A"): (["time", "mean"], {"device", "metric"}, 1, None),
    ("site-wall", "Pit displacement — 7 days (alarm lines 70/85/100 % of 30 mm)", "A"):
        (["time", "mean"], {"device", "metric"}, 4, None),
    ("site-wall", "Pit displacement — 7 days (alarm lines 70/85/100 % of 30 mm)", "B"):
        (["time", "last"], {"device", "kind"}, 1, lambda v: v[-1][1] == 25.5),
    ("site-wall", "Battery charging temperatures", "A"): (["time", "max"], {"device", "metric"}, 2, None),
    ("site-wall", "Gateways online", "A"): (["time", "last"], {"gateway"}, 1, lambda v: v[0][1] == 1),
    ("city-overview", "Sites by worst open level", "A"): (["time", "max"], {"site"}, 2, None),
    ("city-overview", "Major hazards (重大事故隐患) — stop-work rectification", "A"):
        (["time", "level", "value", "threshold", "opened_ms", "rule"], {"site", "device", "kind"}, 1,
         lambda v: v[0][1] == 3 and v[0][4] == NOW - 30 * 3600_000),
    ("city-overview", "Open longer than 24 h (rectification overdue)", "A"):
        (["time", "level", "opened_ms", "rule"], {"site", "device", "kind"}, 1, None),
    ("city-overview", "Gateway uptime per site", "A"): (["time", "mean"], {"site"}, 2, None),
    ("city-overview", "Gateway uptime per company", "A"): (["time", "mean"], {"company"}, 2, None),
    ("city-overview", "Readings in the last 5 min per site", "A"): (["time", "count"], {"site"}, 2, None),
    ("city-overview", "Hazard findings by family", "A"): (["time", "count"], {"family"}, 4, None),
    ("detector-tuning", "Raw series and applied thresholds", "A"): (["time", "value"], set(), 1,
                                                                    lambda v: len(v) >= 180),  # 6 h at 2 min
    ("detector-tuning", "Raw series and applied thresholds", "B"): (["time", "last"], {"kind"}, 1, None),
    ("detector-tuning", "Rate of change (per $rate)", "A"): (["time", "derivative"], set(), 1, None),
    ("detector-tuning", "Noise envelope (1-minute min / mean / max)", "A"): (["time", "min", "max", "mean"], set(), 1,
                                                                            None),
    ("detector-tuning", "Level by finding kind", "A"): (["time", "last"], {"kind"}, 1, lambda v: v[-1][1] == 2),
    ("detector-tuning", "Findings that fired", "A"):
        (["time", "level", "value", "threshold", "metric", "major", "rule"], {"kind", "category"}, 1,
         lambda v: [r[1] for r in v] == [2, 2]),
}

# per-dashboard (per-site) expectations for the city view: worst level per site
CITY_WORST = {"cz-0001": 3, "cz-0002": 1}


def _dashboards() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(GENERATED.glob("*.json"))}


def _targets():
    for name, d in _dashboards().items():
        for p in d["panels"]:
            for t in p.get("targets", []):
                yield pytest.param(name, d, p, t, id=f"{name}:{p['title']}:{t['refId']}")


def test_every_target_has_an_expectation():
    seen = {(n, p["title"], t["refId"]) for n, _, p, t in (x.values for x in _targets())}
    assert seen == set(EXPECT)


@pytest.mark.parametrize("name,dashboard,panel,target", list(_targets()))
def test_panel_query_returns_expected_series(filled, name, dashboard, panel, target):
    q = render(target["query"], dashboard, panel, VARS)
    res = filled.query(q)["results"][0]
    assert "error" not in res, f"{q}\n→ {res['error']}"
    series = res.get("series", [])
    columns, tags, n, check = EXPECT[(name, panel["title"], target["refId"])]
    assert len(series) == n, f"{q}\n→ {series}"
    for s in series:
        assert s["columns"] == columns
        assert set(s.get("tags") or {}) == tags
        assert s["values"], s
        assert any(row[1] is not None for row in s["values"]), s  # the plotted value is there
    if check is not None:
        assert check(series[0]["values"]), series[0]
    if panel["title"] == "Sites by worst open level":
        assert {s["tags"]["site"]: s["values"][0][1] for s in series} == CITY_WORST


def test_template_variable_queries(filled):
    got = {}
    for name, d in _dashboards().items():
        for v in d.get("templating", {}).get("list", []):
            if v["type"] == "query":
                res = filled.query(render(v["query"], d, {}, VARS))["results"][0]
                got[(name, v["name"])] = [row[1] for s in res.get("series", []) for row in s["values"]]
    assert got[("site-wall", "site")] == ["cz-0001", "cz-0002"]
    assert got[("detector-tuning", "device")] == ["bt-01", "el-01", "fw-01", "pt-01", "tc-01"]
    assert got[("detector-tuning", "metric")] == ["deep_horizontal", "groundwater_level", "strut_force",
                                                  "surface_settlement", "wall_top_horizontal", "wall_top_vertical"]
