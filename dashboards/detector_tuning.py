"""Detector tuning for the ops team: one device's raw series with the thresholds the detectors applied,
its rate of change, its noise envelope (1-minute min/max) and every finding that fired — to decide whether a
threshold, a rate window or a hold time needs changing."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import statetimeline, table, timeseries
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from dashboards.common import (DATASOURCE, HAZARD, LEVEL_STEPS, READING, READING_1M, SITE, Grid, InfluxQL,
                               level_mappings, site_variable)

UID = "sitewatch-detector-tuning"
DEV = '"device" =~ /^$device$/'
MET = '"metric" =~ /^$metric$/'


def _var(name: str, label: str, query: str) -> db.QueryVariable:
    return (db.QueryVariable(name).label(label).datasource(DATASOURCE).query(query)
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))


def build() -> dm.Dashboard:
    g = Grid()
    d = (db.Dashboard("SiteWatch — detector tuning").uid(UID).tags(["sitewatch", "ops"])
         .description("A device's raw series, the thresholds applied, its rate and the alarms that fired.")
         .time("now-6h", "now").refresh("30s").timezone("browser")
         .with_variable(site_variable())
         .with_variable(_var("device", "Device", f'SHOW TAG VALUES FROM "reading" WITH KEY = "device" WHERE {SITE}'))
         .with_variable(_var("metric", "Metric",
                             f'SHOW TAG VALUES FROM "reading" WITH KEY = "metric" WHERE {SITE} AND {DEV}'))
         .with_variable(db.CustomVariable("rate").label("Rate per").values("1m,1h,1d")
                        .current(dm.VariableOption(selected=True, text="1h", value="1h"))))

    raw = f'SELECT "value" FROM {READING} WHERE {SITE} AND {DEV} AND {MET} AND $timeFilter'
    thr = (f'SELECT last("threshold") FROM {HAZARD} WHERE {SITE} AND {DEV} AND "metric" =~ /^$metric$/ '
           f'AND $timeFilter GROUP BY time($__interval), "kind" fill(previous)')
    d = d.with_panel(timeseries.Panel().title("Raw series and applied thresholds").grid_pos(g.at(24, 10))
                     .with_target(InfluxQL(raw).alias("$metric"))
                     .with_target(InfluxQL(thr, "B").alias("threshold $tag_kind"))
                     .line_width(1).show_points(cm.VisibilityMode.NEVER)
                     .legend(cb.VizLegendOptions().show_legend(True).display_mode(cm.LegendDisplayMode.TABLE)
                             .placement(cm.LegendPlacement.BOTTOM).calcs(["min", "max", "lastNotNull"])))
    rate = (f'SELECT derivative(mean("value"), $rate) FROM {READING} WHERE {SITE} AND {DEV} AND {MET} '
            f'AND $timeFilter GROUP BY time($__interval) fill(none)')
    d = d.with_panel(timeseries.Panel().title("Rate of change (per $rate)").grid_pos(g.at(12, 8))
                     .with_target(InfluxQL(rate).alias("d$metric/d$rate")))
    env = (f'SELECT "min", "max", "value" AS "mean" FROM {READING_1M} WHERE {SITE} AND {DEV} AND {MET} '
           f'AND $timeFilter')
    d = d.with_panel(timeseries.Panel().title("Noise envelope (1-minute min / mean / max)").grid_pos(g.at(12, 8))
                     .with_target(InfluxQL(env)))
    lvl = (f'SELECT last("level") FROM {HAZARD} WHERE {SITE} AND {DEV} AND $timeFilter '
           f'GROUP BY time($__interval), "kind" fill(previous)')
    d = d.with_panel(statetimeline.Panel().title("Level by finding kind").grid_pos(g.at(24, 5))
                     .with_target(InfluxQL(lvl).alias("$tag_kind")).fill_opacity(70).line_width(0)
                     .thresholds(LEVEL_STEPS).mappings(level_mappings())
                     .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS)))
    fired = (f'SELECT "level", "value", "threshold", "metric", "major", "rule" FROM {HAZARD} '
             f'WHERE {SITE} AND {DEV} AND $timeFilter GROUP BY "kind", "category"')
    d = d.with_panel(table.Panel().title("Findings that fired").grid_pos(g.at(24, 9))
                     .with_target(InfluxQL(fired).table())
                     .override_by_name("level", [dm.DynamicConfigValue(id_val="mappings",
                                                                       value=[m.to_json() for m in level_mappings()])])
                     .sort_by([cb.TableSortByFieldState().display_name("Time").desc(True)]))
    return d.build()
