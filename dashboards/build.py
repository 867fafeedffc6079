"""Build every dashboard to JSON (``sitewatch dashboards build``): the code is the source, the JSON in
``dashboards/generated/`` is what Grafana provisioning and ``dashboards push`` read. A test fails if the
committed JSON is stale, so nobody hand-edits it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm

from dashboards import city_overview, detector_tuning, site_wall

GENERATED = Path(__file__).parent / "generated"

DASHBOARDS: dict[str, Callable[[], dm.Dashboard]] = {
    "site-wall": site_wall.build,
    "city-overview": city_overview.build,
    "detector-tuning": detector_tuning.build,
}


def to_dict(d: dm.Dashboard) -> dict:
    """SDK model → plain JSON, with stable panel ids (Grafana links and kiosk URLs use them)."""
    data = json.loads(json.dumps(d, cls=JSONEncoder))
    next_id = 1
    for p in data.get("panels", []):
        # the SDK writes "options": null for panels left at their defaults; Grafana and the SDK's own
        # from_json expect the key absent instead
        for k in [k for k, v in p.items() if v is None]:
            del p[k]
        p["id"] = next_id
        next_id += 1
        for sub in p.get("panels", []) or []:
            sub["id"] = next_id
            next_id += 1
    return data


def render(name: str) -> str:
    return json.dumps(to_dict(DASHBOARDS[name]()), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def build_all(out: Path = GENERATED) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in DASHBOARDS:
        p = out / f"{name}.json"
        p.write_text(render(name), encoding="utf-8")
        paths.append(p)
    return paths
