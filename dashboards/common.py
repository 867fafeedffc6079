"""What every SiteWatch dashboard shares: the InfluxDB datasource, an InfluxQL query type for the
grafana-foundation-sdk builders, level colours, and the query fragments for the sink's layout.

Why a query type of our own: the SDK ships query builders for Prometheus, Loki, Elasticsearch… but none for
InfluxDB. A cog ``Dataquery`` is just an object with ``to_json``; registering it as the ``influxdb`` variant
lets ``Dashboard.from_json`` round-trip our JSON (the schema test relies on that).
"""

from __future__ import annotations

from typing import Any, Self

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as dm

DATASOURCE_UID = "sitewatch-influxdb"  # fixed in dashboards/provisioning/datasources/sitewatch.yaml
DATASOURCE_TYPE = "influxdb"
DATASOURCE = dm.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)

# sink layout and the site filter: one definition in dashboards/queries.py (shared with the wall page)
from dashboards.queries import HAZARD, HEALTH, READING, READING_1M, SITE  # noqa: E402,F401

LEVEL_COLOURS = {0: "green", 1: "yellow", 2: "orange", 3: "red"}
LEVEL_TEXT = {0: "CLEAR", 1: "YELLOW", 2: "ORANGE", 3: "RED"}


class InfluxQLQuery(cogvariants.Dataquery):
    """A raw InfluxQL target as Grafana's InfluxDB datasource stores it (``rawQuery: true``)."""

    def __init__(self, ref_id: str = "A", query: str = "", result_format: str = "time_series",
                 alias: str | None = None, hide: bool = False,
                 datasource: dm.DataSourceRef | None = None) -> None:
        self.ref_id = ref_id
        self.query = query
        self.result_format = result_format
        self.alias = alias
        self.hide = hide
        self.datasource = datasource or DATASOURCE

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "refId": self.ref_id,
            "datasource": self.datasource.to_json(),
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        if self.alias:
            out["alias"] = self.alias
        if self.hide:
            out["hide"] = True
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        ds = data.get("datasource")
        return cls(data.get("refId", "A"), data.get("query", ""), data.get("resultFormat", "time_series"),
                   data.get("alias"), bool(data.get("hide", False)),
                   dm.DataSourceRef.from_json(ds) if isinstance(ds, dict) else None)


class InfluxQL(cogbuilder.Builder[InfluxQLQuery]):
    """Builder so InfluxQL targets plug into ``.with_target(...)`` like the SDK's own query builders."""

    def __init__(self, query: str, ref_id: str = "A") -> None:
        self._q = InfluxQLQuery(ref_id, " ".join(query.split()))

    def build(self) -> InfluxQLQuery:
        return self._q

    def table(self) -> Self:
        self._q.result_format = "table"
        return self

    def alias(self, alias: str) -> Self:
        self._q.alias = alias
        return self


def register() -> None:
    """Register the SDK's panel/query variants plus ours (needed for ``Dashboard.from_json``)."""
    from grafana_foundation_sdk.cog.plugins import register_default_plugins

    register_default_plugins()
    cogruntime.register_dataquery_variant(cogruntime.DataqueryConfig(DATASOURCE_TYPE, InfluxQLQuery.from_json))


# ------------------------------------------------------------------------------------------ field config
def steps(*pairs: tuple[float | None, str]) -> db.ThresholdsConfig:
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=v, color=c) for v, c in pairs])


LEVEL_STEPS = steps((None, "green"), (1, "yellow"), (2, "orange"), (3, "red"))


def level_mappings() -> list[dm.ValueMapping]:
    """0..3 → CLEAR/YELLOW/ORANGE/RED with the level colour: readable from across the room."""
    return [dm.ValueMap(options={str(k): dm.ValueMappingResult(text=LEVEL_TEXT[k], color=LEVEL_COLOURS[k], index=k)
                                 for k in LEVEL_TEXT})]


def band_steps(yellow: float, orange: float, red: float) -> db.ThresholdsConfig:
    """Published yellow/orange/red defaults (docs/domain.md) — the site's design values win in the detectors."""
    return steps((None, "green"), (yellow, "yellow"), (orange, "orange"), (red, "red"))


def thresholds_override(regex: str, yellow: float, orange: float, red: float) -> tuple[str, list[dm.DynamicConfigValue]]:
    return regex, [dm.DynamicConfigValue(id_val="thresholds", value=band_steps(yellow, orange, red).build().to_json())]


def open_hazards(select: str, where: str = "", group: str = '"device", "kind"', outer_where: str = '"level" > 0',
                 outer_group: str = "") -> str:
    """Hazards whose *latest* finding in the time range is above clear (the detectors re-assert open ones
    periodically, so the last finding per device and kind is its current state)."""
    cond = f"{where} AND " if where else ""
    inner = (f'SELECT last("level") AS "level", last("value") AS "value", last("threshold") AS "threshold", '
             f'last("opened_ms") AS "opened_ms", last("major") AS "major", last("rule") AS "rule" '
             f"FROM {HAZARD} WHERE {cond}$timeFilter GROUP BY {group}")
    tail = f" GROUP BY {outer_group}" if outer_group else ""
    return f"SELECT {select} FROM ({inner}) WHERE {outer_where}{tail}"


def site_variable(include_all: bool = False) -> db.QueryVariable:
    v = (db.QueryVariable("site").label("Site").datasource(DATASOURCE)
         .query('SHOW TAG VALUES FROM "reading" WITH KEY = "site"')
         .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
    if include_all:
        v = v.include_all(True).all_value(".*").multi(True)
    return v


class Grid:
    """Places panels left to right in Grafana's 24-column grid, wrapping rows: explicit, stable positions."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_h = 0

    def at(self, w: int, h: int) -> dm.GridPos:
        if self.x + w > 24:
            self.newline()
        pos = dm.GridPos(h=h, w=w, x=self.x, y=self.y)
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def newline(self) -> None:
        if self.x:
            self.y += self.row_h
        self.x, self.row_h = 0, 0

    def row(self) -> dm.GridPos:
        self.newline()
        pos = dm.GridPos(h=1, w=24, x=0, y=self.y)
        self.y += 1
        return pos
