"""Generated JSON is current, conforms to the dashboard schema, and is wired to the provisioned datasource.

Schema: the grafana-foundation-sdk wheel ships no JSON Schema file, but its models ARE generated from
Grafana's dashboard schema (the same CUE kinds Grafana validates against). ``Dashboard.from_json`` decodes
every known field into typed models, panel options/fieldConfig through the per-panel-type variants, and
drops what the schema does not know; so "decode with the library, re-encode, compare" fails on misspelled
keys, unknown option names and shape errors. A small JSON Schema of Grafana's import requirements
(below) adds what the models leave loose (ids, grid bounds, targets with refId + datasource).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.build import DASHBOARDS, GENERATED, render
from dashboards.common import DATASOURCE_TYPE, DATASOURCE_UID, register

PROVISIONING = Path(__file__).parents[2] / "dashboards" / "provisioning"

IMPORT_SCHEMA = {
    "type": "object",
    "required": ["uid", "title", "panels", "schemaVersion", "time", "templating"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "panels": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["id", "type", "title", "gridPos"],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "type": {"enum": ["row", "stat", "timeseries", "table", "bargauge", "state-timeline"]},
                "gridPos": {"type": "object", "required": ["h", "w", "x", "y"], "properties": {
                    "w": {"type": "integer", "minimum": 1, "maximum": 24},
                    "x": {"type": "integer", "minimum": 0, "maximum": 23},
                    "h": {"type": "integer", "minimum": 1}, "y": {"type": "integer", "minimum": 0}}},
                "targets": {"type": "array", "items": {
                    "type": "object", "required": ["refId", "query", "rawQuery", "datasource", "resultFormat"],
                    "properties": {"rawQuery": {"const": True},
                                   "resultFormat": {"enum": ["time_series", "table"]},
                                   "datasource": {"const": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}}}}},
            }}},
    },
}


def _load() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(GENERATED.glob("*.json"))}


def _prune(x):
    """Equal up to what JSON leaves implicit: absent vs null, absent vs empty object."""
    if isinstance(x, dict):
        out = {k: _prune(v) for k, v in x.items()}
        return {k: v for k, v in out.items() if v is not None and v != {}}
    if isinstance(x, list):
        return [_prune(v) for v in x]
    return x


def test_generated_json_is_current():
    assert sorted(_load()) == sorted(DASHBOARDS)
    for name in DASHBOARDS:
        assert (GENERATED / f"{name}.json").read_text(encoding="utf-8") == render(name), \
            f"dashboards/generated/{name}.json is stale: run `sitewatch dashboards build`"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_round_trips_through_the_sdk_schema_models(name):
    register()
    data = _load()[name]
    again = json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder))
    assert _prune(again) == _prune(data)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_import_requirements(name):
    d = _load()[name]
    jsonschema.validate(d, IMPORT_SCHEMA)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not (mine & cells), f"{p['title']} overlaps another panel"
        cells |= mine
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(refs) == len(set(refs))
    defined = {v["name"] for v in d["templating"].get("list", [])}
    used = set()
    for p in d["panels"]:
        for t in p.get("targets", []):
            used |= set(re.findall(r"\$\{?([A-Za-z_]\w*)", t["query"]))
        used |= set(re.findall(r"\$([A-Za-z_]\w*)", p["title"]))
    builtin = {"timeFilter", "__interval", "__to", "__from"}
    assert used - builtin <= defined, used - builtin - defined


def test_wall_screen_is_kiosk_friendly():
    d = _load()["site-wall"]
    assert d["refresh"] and d["editable"] is False
    assert [v["name"] for v in d["templating"]["list"]] == ["site"]
    big = [p for p in d["panels"] if p["type"] == "stat" and p["gridPos"]["y"] < 8]
    assert len(big) == 4 and all(p["gridPos"]["h"] >= 6 and p["gridPos"]["w"] >= 6 for p in big)
    assert all(p["options"]["colorMode"] == "background" for p in big)


def test_provisioning_files():
    ds = yaml.safe_load((PROVISIONING / "datasources" / "sitewatch.yaml").read_text())["datasources"][0]
    assert (ds["uid"], ds["type"], ds["jsonData"]["dbName"]) == (DATASOURCE_UID, DATASOURCE_TYPE, "sitewatch")
    assert ds["secureJsonData"]["password"] == "${SW_INFLUX_PASSWORD}"  # from Grafana's environment only
    assert ds["url"].startswith("${")
    prov = yaml.safe_load((PROVISIONING / "dashboards" / "sitewatch.yaml").read_text())["providers"][0]
    assert prov["type"] == "file" and prov["options"]["path"] == "${SW_DASHBOARDS_DIR}"
