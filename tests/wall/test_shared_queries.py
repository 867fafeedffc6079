"""One definition, two renderers: the Grafana site wall's panels and the wall page's site drill-down run the
same InfluxQL (dashboards/queries.py). Checked on the generated dashboard JSON and on a real InfluxDB filled the
way the sink fills it: the wall's numbers equal what Grafana's query returns."""

from __future__ import annotations

import json

import pytest

from backlog.api import wall
from dashboards import queries
from dashboards.build import GENERATED
from tests.dashboards.conftest import NOW, render

pytestmark = pytest.mark.integration

SITE = "cz-0001"


def _site_wall() -> dict:
    return json.loads((GENERATED / "site-wall.json").read_text())


def _panel(d: dict, title: str) -> dict:
    (p,) = [p for p in d["panels"] if p["title"] == title]
    return p


def test_grafana_panels_carry_the_shared_queries():
    d = _site_wall()
    for sh in queries.SHARED.values():
        p = _panel(d, sh.title)
        assert [(t["refId"], t["query"]) for t in p["targets"]] == [(t.ref_id, t.query) for t in sh.targets]
        if sh.bands:
            steps = [s["value"] for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]]
            assert steps == [None, *sh.bands], sh.key
        if sh.time_from:
            assert p["timeFrom"] == sh.time_from


def test_wall_drilldown_returns_what_grafana_shows(filled, monkeypatch):
    monkeypatch.setenv("SW_INFLUX_URL", filled.url)
    end = NOW + 60_000  # Grafana's range in the dashboards tests ends here too
    got = wall.charts(SITE, end)
    assert got["error"] is None
    d = _site_wall()
    for tr in got["trends"]:
        sh = queries.SHARED[tr["key"]]
        p = _panel(d, sh.title)
        for t in sh.targets:
            res = filled.query(render(t.query, d, p, {"site": SITE}))["results"][0]
            # the dashboards tests' Grafana range starts 60 s earlier than the wall's: compare the common range
            start = end - tr["span_ms"]
            want = {queries.alias(t.alias, s.get("tags") or {}): [[r[0], r[1]] for r in s["values"]
                                                                  if r[1] is not None and r[0] >= start]
                    for s in res.get("series", [])}
            mine = {s["name"]: [x for x in s["points"] if x[0] >= start] for s in tr["series"]
                    if s["alarm"] == (t.ref_id != "A")}
            assert mine == want and want, (sh.key, t.ref_id)
        assert tr["bands"] == (list(sh.bands) if sh.bands else None)
    # current values: every device/metric tile of every family, the same last value Grafana shows
    for sh in queries.CURRENT:
        res = filled.query(render(sh.query, d, _panel(d, sh.title), {"site": SITE}))["results"][0]
        want = {(s["tags"]["device"], s["tags"]["metric"]): s["values"][-1][1] for s in res["series"]}
        family = sh.key.removeprefix("current_")
        mine = {(c["device"], c["metric"]): c["value"] for c in got["current"] if c["family"] == family}
        assert mine == want and want, family
    pit = next(c for c in got["current"] if c["metric"] == "wall_top_horizontal")
    assert pit["bands"] == [21, 25.5, 30]
    assert got["gateways"] == [{"gateway": "gw-01", "online": True}]


def test_wall_says_when_influxdb_is_away(monkeypatch):
    from app.localstack import free_port

    monkeypatch.setenv("SW_INFLUX_URL", f"http://127.0.0.1:{free_port()}")
    got = wall.charts(SITE, NOW)
    assert got["error"].startswith("time-series database unavailable") and got["trends"] == []
