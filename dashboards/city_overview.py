"""City overview for the bureau: every site as a tile coloured by its worst open level, the major
(stop-work) hazards, hazards open past the default rectification deadline, and sensor uptime per site and
company (``company`` tag, present when the sink is given a site → company map)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, stat, table
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from dashboards.common import (HAZARD, HEALTH, LEVEL_STEPS, READING, Grid, InfluxQL, band_steps,
                               level_mappings, open_hazards)

UID = "sitewatch-city-overview"
OVERDUE_MS = 24 * 3600 * 1000  # default rectification deadline shown here; the backlog holds the real ones


def build() -> dm.Dashboard:
    g = Grid()
    d = (db.Dashboard("SiteWatch — city overview").uid(UID).tags(["sitewatch", "city"])
         .description("Bureau view: sites by worst open level, major hazards, overdue rectifications, uptime.")
         .time("now-24h", "now").refresh("30s").timezone("browser").readonly())

    tiles = (stat.Panel().title("Sites by worst open level").grid_pos(g.at(24, 8))
             .with_target(InfluxQL(open_hazards('max("level")', group='"site", "device", "kind"',
                                                outer_where='"level" >= 0', outer_group='"site"')).alias("$tag_site"))
             .color_mode(cm.BigValueColorMode.BACKGROUND).graph_mode(cm.BigValueGraphMode.NONE)
             .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
             .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
             .thresholds(LEVEL_STEPS).mappings(level_mappings()))
    d = d.with_panel(tiles)

    major = (table.Panel().title("Major hazards (重大事故隐患) — stop-work rectification").grid_pos(g.at(12, 9))
             .with_target(InfluxQL(open_hazards('"level", "value", "threshold", "opened_ms", "rule"',
                                                group='"site", "device", "kind"',
                                                outer_where='"level" > 0 AND "major" = true',
                                                outer_group='"site", "device", "kind"')).table())
             .override_by_name("opened_ms", [dm.DynamicConfigValue(id_val="unit", value="dateTimeFromNow"),
                                             dm.DynamicConfigValue(id_val="displayName", value="open since")]))
    d = d.with_panel(major)
    overdue = (table.Panel().title("Open longer than 24 h (rectification overdue)").grid_pos(g.at(12, 9))
               .with_target(InfluxQL(open_hazards('"level", "opened_ms", "rule"', group='"site", "device", "kind"',
                                                  outer_where=f'"level" > 0 AND "opened_ms" < ${{__to}} - {OVERDUE_MS}',
                                                  outer_group='"site", "device", "kind"')).table())
               .override_by_name("opened_ms", [dm.DynamicConfigValue(id_val="unit", value="dateTimeFromNow"),
                                               dm.DynamicConfigValue(id_val="displayName", value="open since")]))
    d = d.with_panel(overdue)

    up = lambda by: (f'SELECT mean("online") * 100 FROM {HEALTH} WHERE $timeFilter GROUP BY "{by}"')  # noqa: E731
    for by, title in (("site", "Gateway uptime per site"), ("company", "Gateway uptime per company")):
        d = d.with_panel(bargauge.Panel().title(title).grid_pos(g.at(12, 8))
                         .with_target(InfluxQL(up(by)).alias(f"$tag_{by}"))
                         .unit("percent").min(0).max(100).orientation(cm.VizOrientation.HORIZONTAL)
                         .display_mode(cm.BarGaugeDisplayMode.LCD)
                         .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
                         .thresholds(db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
                             [dm.Threshold(None, "red"), dm.Threshold(90, "orange"), dm.Threshold(99, "green")])))

    active = f'SELECT count("value") FROM {READING} WHERE time > now() - 5m GROUP BY "site"'
    d = d.with_panel(stat.Panel().title("Readings in the last 5 min per site").grid_pos(g.at(12, 6))
                     .with_target(InfluxQL(active).alias("$tag_site"))
                     .graph_mode(cm.BigValueGraphMode.NONE).text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
                     .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
                     .thresholds(db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
                         [dm.Threshold(None, "red"), dm.Threshold(1, "green")])))
    by_family = (f'SELECT count("level") FROM {HAZARD} WHERE "level" > 0 AND "category" = \'hazard\' AND $timeFilter '
                 f'GROUP BY "family"')
    d = d.with_panel(bargauge.Panel().title("Hazard findings by family").grid_pos(g.at(12, 6))
                     .with_target(InfluxQL(by_family).alias("$tag_family"))
                     .orientation(cm.VizOrientation.HORIZONTAL)
                     .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
                     .thresholds(band_steps(1, 10, 50)))
    return d.build()
