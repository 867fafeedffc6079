"""One definition of every InfluxQL query that both the Grafana dashboards and SiteWatch's own wall page
(``/wall``, backlog/api/wall.py) show — two renderers, one query, so the two screens cannot disagree.

A query is stored the way Grafana's InfluxDB datasource receives it: with Grafana's macros ``$timeFilter``,
``$__interval`` and the ``$site`` template variable. Grafana substitutes them itself; the wall calls
:func:`render`, which substitutes them the same way (time range, a Grafana-like interval, one site) and sends
the result to the same InfluxDB. This module has no Grafana SDK import, so the API process can load it cheaply.

What is shared (everything the wall's per-site drill-down draws from the time-series database):

- the four site-wall trends with their yellow/orange/red lines (crane load, crane moment, pit displacement with
  the thresholds the detectors applied, battery charging temperatures);
- each family's current values per device and metric, coloured against :data:`FAMILY_BANDS`;
- the gateways' online state.

The wall's hazard counts, majors, stop-work state and ticket feed come from the backlog (the ledger), which
Grafana cannot read; they are not duplicated here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# sink layout (streams/sinks/lineproto.py, schema.py): retention policy qualified measurements
READING = '"raw"."reading"'
READING_1M = '"rollup_1m"."reading_1m"'
HAZARD = '"events"."hazard"'
HEALTH = '"events"."device_health"'

SITE = '"site" =~ /^$site$/'

FAMILIES = ("crane", "electrical", "battery", "formwork", "pit")

# metric regex → published yellow/orange/red bands (docs/domain.md), shown as tile colours and trend lines
FAMILY_BANDS: dict[str, list[tuple[str, float, float, float]]] = {
    "crane": [(r".* moment$", 90, 100, 110), (r".* wind$", 15, 18, 20)],
    "formwork": [],
    "pit": [(r".* wall_top_horizontal$", 21, 25.5, 30)],
    "electrical": [(r".* leakage$", 15, 22.5, 30), (r".* terminal_temp$", 60, 70, 80)],
    "battery": [(r".* (pack|cell)_temp$", 45, 55, 65), (r".* (smoke|co)$", 50, 100, 200)],
}

FAMILY_ZH = {"crane": "塔吊", "formwork": "高支模", "pit": "深基坑", "electrical": "临时用电", "battery": "电池充电"}


def _norm(q: str) -> str:
    """Whitespace collapsed, exactly as the dashboards' ``InfluxQL`` builder stores a target."""
    return " ".join(q.split())


@dataclass(frozen=True)
class Target:
    ref_id: str
    query: str
    alias: str = "$tag_device $tag_metric"


@dataclass(frozen=True)
class Shared:
    """One panel's queries, shown by Grafana (site wall) and by the wall page's site drill-down."""

    key: str
    title: str  # the Grafana panel title
    title_zh: str
    unit: str  # Grafana unit id
    targets: tuple[Target, ...]
    bands: tuple[float, float, float] | None = None  # yellow / orange / red lines
    time_from: str | None = None  # panel-specific range; else the dashboard's
    band_overrides: tuple[tuple[str, float, float, float], ...] = field(default=())

    @property
    def query(self) -> str:
        return self.targets[0].query


_CRANE = (f'SELECT mean("value") FROM {READING} WHERE {SITE} AND "family" = \'crane\' AND "metric" = \'{{m}}\' '
          f'AND $timeFilter GROUP BY time($__interval), "device", "metric" fill(none)')

CRANE_LOAD = Shared("crane_load", "Crane load", "塔吊起重量", "masst", (Target("A", _norm(_CRANE.format(m="load"))),))
CRANE_MOMENT = Shared("crane_moment", "Crane moment (% of rated)", "塔吊力矩（额定百分比）", "percent",
                      (Target("A", _norm(_CRANE.format(m="moment"))),), bands=(90, 100, 110))
PIT_DISPLACEMENT = Shared(
    "pit_displacement", "Pit displacement — 7 days (alarm lines 70/85/100 % of 30 mm)",
    "基坑位移 · 7天（报警线 30 mm 的 70/85/100 %）", "lengthmm",
    (Target("A", _norm(f'SELECT mean("value") FROM {READING_1M} WHERE {SITE} AND "family" = \'pit\' AND "metric" =~ '
                       f'/^(wall_top_horizontal|wall_top_vertical|deep_horizontal|surface_settlement)$/ AND '
                       f'$timeFilter GROUP BY time($__interval), "device", "metric" fill(none)')),
     Target("B", _norm(f'SELECT last("threshold") FROM {HAZARD} WHERE {SITE} AND "family" = \'pit\' AND $timeFilter '
                       f'GROUP BY time($__interval), "device", "kind" fill(previous)'),
            "alarm $tag_device $tag_kind")),
    bands=(21, 25.5, 30), time_from="7d")
BATTERY_TEMPS = Shared(
    "battery_temps", "Battery charging temperatures", "电池充电温度", "celsius",
    (Target("A", _norm(f'SELECT max("value") FROM {READING} WHERE {SITE} AND "family" = \'battery\' AND "metric" =~ '
                       f'/^(pack_temp|cell_temp)$/ AND $timeFilter GROUP BY time($__interval), "device", "metric" '
                       f'fill(none)')),),
    bands=(45, 55, 65))

TRENDS: tuple[Shared, ...] = (CRANE_LOAD, CRANE_MOMENT, PIT_DISPLACEMENT, BATTERY_TEMPS)


def family_current(family: str) -> Shared:
    q = (f'SELECT last("value") FROM {READING} WHERE {SITE} AND "family" = \'{family}\' AND $timeFilter '
         f'GROUP BY "device", "metric"')
    return Shared(f"current_{family}", f"{family.capitalize()} — current values", f"{FAMILY_ZH[family]} · 当前值",
                  "", (Target("A", _norm(q)),), band_overrides=tuple(FAMILY_BANDS[family]))


CURRENT: tuple[Shared, ...] = tuple(family_current(f) for f in FAMILIES)

GATEWAYS = Shared("gateways", "Gateways online", "网关在线", "",
                  (Target("A", _norm(f'SELECT last("online") FROM {HEALTH} WHERE {SITE} AND $timeFilter '
                                     f'GROUP BY "gateway"')),))

SHARED: dict[str, Shared] = {s.key: s for s in (*TRENDS, *CURRENT, GATEWAYS)}

SITE_WALL_SPAN = "6h"  # the Grafana site wall's default time range (dashboards/site_wall.py)

# ------------------------------------------------------------------------------------------ the wall's renderer
_SPAN = re.compile(r"^(\d+)([smhd])$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
SITE_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def span_ms(spec: str) -> int:
    m = _SPAN.match(spec.removeprefix("now-"))
    if not m:
        raise ValueError(f"not a span like 6h or 7d: {spec!r}")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def interval(span: int, max_points: int = 1000, min_ms: int = 1000) -> str:
    """Grafana's ``$__interval``: span / max data points, rounded up to a friendly step, at least 1 s (the
    provisioned datasource's timeInterval)."""
    raw = max(span / max_points, min_ms)
    for step in (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 21600, 43200, 86400):
        if step * 1000 >= raw:
            return f"{step}s"
    return "1d"


def render(query: str, site: str, end_ms: int, span: int, max_points: int = 1000) -> str:
    """Substitute what Grafana substitutes, for one site and the range ``[end_ms - span, end_ms]``."""
    if not SITE_CODE.match(site):
        raise ValueError(f"bad site code {site!r}")
    out = query.replace("$timeFilter", f"time >= {end_ms - span}ms and time <= {end_ms}ms")
    out = out.replace("$__interval", interval(span, max_points)).replace("$site", re.escape(site))
    if re.search(r"\$(\{|[A-Za-z_])", out):
        raise ValueError(f"unsubstituted macro in {out}")
    return out


def span_of(s: Shared) -> int:
    return span_ms(s.time_from or SITE_WALL_SPAN)


def alias(template: str, tags: dict[str, str]) -> str:
    """Grafana's ``$tag_x`` alias expansion."""
    return re.sub(r"\$tag_(\w+)", lambda m: str(tags.get(m.group(1), "")), template).strip()
