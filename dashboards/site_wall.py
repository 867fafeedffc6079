"""Site wall screen: what a site office shows on the TV by the door (Grafana kiosk mode).

Big stat tiles readable from across a room: open hazards, worst level, major (stop-work) hazards, blind
sensors, then each family's devices with their current value coloured against the published yellow/orange/red
bands, the open-hazard list with its age, and the trends that matter on site (crane load and moment, pit
displacement against its alarm lines, battery charging temperatures). One ``site`` variable picks the site.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from dashboards import queries
from dashboards.common import (LEVEL_STEPS, SITE, Grid, InfluxQL, band_steps, level_mappings, open_hazards,
                               site_variable, thresholds_override)
from dashboards.queries import FAMILY_BANDS  # noqa: F401 - re-exported (older imports)

UID = "sitewatch-site-wall"


def _big(title: str, query: str, grid: Grid, w: int = 6, h: int = 6, mapped: bool = False,
         steps: db.ThresholdsConfig | None = None) -> stat.Panel:
    p = (stat.Panel().title(title).grid_pos(grid.at(w, h)).with_target(InfluxQL(query))
         .color_mode(cm.BigValueColorMode.BACKGROUND).graph_mode(cm.BigValueGraphMode.NONE)
         .text_mode(cm.BigValueTextMode.VALUE).justify_mode(cm.BigValueJustifyMode.CENTER)
         .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
         .thresholds(steps or LEVEL_STEPS).no_value("0"))
    if mapped:
        p = p.mappings(level_mappings())
    return p


def family_tiles(family: str, grid: Grid) -> stat.Panel:
    shared = queries.family_current(family)  # the wall page's drill-down shows the same query
    q = shared.query
    p = (stat.Panel().title(shared.title).grid_pos(grid.at(24 if family == "pit" else 12, 6))
         .with_target(InfluxQL(q).alias("$tag_device $tag_metric"))
         .color_mode(cm.BigValueColorMode.BACKGROUND).graph_mode(cm.BigValueGraphMode.AREA)
         .text_mode(cm.BigValueTextMode.VALUE_AND_NAME).orientation(cm.VizOrientation.AUTO)
         .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
         .thresholds(band_steps(1e12, 1e12, 1e12)).color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
         .decimals(1).no_value("no readings"))
    for regex, y, o, r in shared.band_overrides:
        p = p.override_by_regexp(*thresholds_override(regex, y, o, r))
    return p


def _trend(title: str, query: str, grid: Grid, unit: str, w: int = 12, h: int = 9,
           steps: db.ThresholdsConfig | None = None, time_from: str | None = None) -> timeseries.Panel:
    p = (timeseries.Panel().title(title).grid_pos(grid.at(w, h)).with_target(InfluxQL(query).alias("$tag_device $tag_metric"))
         .unit(unit).line_width(2).fill_opacity(5).span_nulls(True)
         .legend(cb.VizLegendOptions().show_legend(True).display_mode(cm.LegendDisplayMode.LIST)
                 .placement(cm.LegendPlacement.BOTTOM).calcs(["lastNotNull", "max"])))
    if steps is not None:
        p = p.thresholds(steps).thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphTresholdsStyleMode.LINE))
    if time_from:
        p = p.time_from(time_from)
    return p


def build() -> dm.Dashboard:
    g = Grid()
    d = (db.Dashboard("SiteWatch — site wall screen").uid(UID).tags(["sitewatch", "wall"])
         .description("Kiosk view for a site office: open hazards, device levels, crane, pit and battery trends.")
         .time("now-6h", "now").refresh("10s").timezone("browser").readonly()
         .with_variable(site_variable()))

    d = d.with_row(db.Row("Now").grid_pos(g.row()))
    hz = '"category" = \'hazard\' AND ' + SITE
    d = d.with_panel(_big("Open hazards", open_hazards('count("level")', hz), g,
                          steps=band_steps(1, 3, 5)))
    d = d.with_panel(_big("Worst level", open_hazards('max("level")', hz, outer_where='"level" >= 0'), g, mapped=True))
    d = d.with_panel(_big("Major hazards — stop work", open_hazards('count("level")', hz,
                                                                    outer_where='"level" > 0 AND "major" = true'),
                          g, steps=band_steps(0.5, 0.5, 1)))
    d = d.with_panel(_big("Silent / faulty sensors", open_hazards('count("level")', '"category" = \'fault\' AND ' + SITE),
                          g, steps=band_steps(1, 2, 5)))

    d = d.with_row(db.Row("Devices by family").grid_pos(g.row()))
    lvl = (stat.Panel().title("Device level (worst open finding)").grid_pos(g.at(24, 4))
           .with_target(InfluxQL(open_hazards('max("level")', SITE, outer_where='"level" >= 0',
                                              outer_group='"device"')).alias("$tag_device"))
           .color_mode(cm.BigValueColorMode.BACKGROUND).graph_mode(cm.BigValueGraphMode.NONE)
           .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
           .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
           .thresholds(LEVEL_STEPS).mappings(level_mappings()).no_value("all clear"))
    d = d.with_panel(lvl)
    for family in ("crane", "electrical", "battery", "formwork", "pit"):
        d = d.with_panel(family_tiles(family, g))

    d = d.with_row(db.Row("Open hazards").grid_pos(g.row()))
    hz_table = (table.Panel().title("Open hazards and their age").grid_pos(g.at(24, 8))
                .with_target(InfluxQL(open_hazards('"level", "value", "threshold", "opened_ms", "major", "rule"', SITE,
                                                   group='"device", "kind", "category"',
                                                   outer_group='"device", "kind", "category"')).table())
                .override_by_name("opened_ms", [dm.DynamicConfigValue(id_val="unit", value="dateTimeFromNow"),
                                                dm.DynamicConfigValue(id_val="displayName", value="open since")])
                .override_by_name("level", [dm.DynamicConfigValue(id_val="mappings",
                                                                  value=[m.to_json() for m in level_mappings()]),
                                            dm.DynamicConfigValue(id_val="custom.cellOptions",
                                                                  value={"type": "color-background"})])
                .sort_by([cb.TableSortByFieldState().display_name("level").desc(True)]))
    d = d.with_panel(hz_table)

    d = d.with_row(db.Row("Trends").grid_pos(g.row()))
    for t in queries.TRENDS:  # one definition each, also drawn by the wall page's site drill-down
        p = _trend(t.title, t.query, g, t.unit, steps=band_steps(*t.bands) if t.bands else None, time_from=t.time_from)
        for extra in t.targets[1:]:
            p = p.with_target(InfluxQL(extra.query, extra.ref_id).alias(extra.alias))
        d = d.with_panel(p)
    d = d.with_panel(_big(queries.GATEWAYS.title, queries.GATEWAYS.query, g, w=24, h=4,
                          steps=db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
                              [dm.Threshold(None, "red"), dm.Threshold(1, "green")]))
                     .mappings([dm.ValueMap(options={"0": dm.ValueMappingResult(text="OFFLINE", color="red", index=0),
                                                     "1": dm.ValueMappingResult(text="online", color="green", index=1)})])
                     .text_mode(cm.BigValueTextMode.VALUE_AND_NAME))
    return d.build()
