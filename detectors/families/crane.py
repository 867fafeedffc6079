"""Tower crane (GB 12602, GB/T 5031): load and moment against the rating, wind against the working limit.

Overload is instantaneous by default (hold_count 1): the limiter in the cab cuts off at 110 %, and a monitoring
system that waits for confirmation would report after the fact.
"""

from __future__ import annotations

from detectors.thresholds import Params, absolute, knobs, pct_of, texts
from sitewatch.rules import CraneRules, DeviceRules

CHECKS = [
    ("crane.overload", "load", "level"),
    ("crane.moment", "moment", "level"),
    ("crane.wind", "wind", "level"),
]


def params(dr: DeviceRules) -> dict[str, Params]:
    r: CraneRules = dr.rules  # type: ignore[assignment]
    out: dict[str, Params] = {}
    if r.overload.enabled:
        lines = pct_of(r.overload.levels_pct, r.rated_load_t)
        out["crane.overload:load"] = Params(
            lines=lines, unit="t", **knobs(dr, r.overload),
            rules=texts(f"load >= {{pct}}% of rated {r.rated_load_t:g} t ({{line}} t)", lines, r.overload.levels_pct),
            evidence={"rated_load_t": r.rated_load_t, "levels_pct": list(r.overload.levels_pct)})
    if r.moment.enabled:
        lines = pct_of(r.moment.levels_pct, 100.0)
        out["crane.moment:moment"] = Params(
            lines=lines, unit="%", **knobs(dr, r.moment),
            rules=texts("load moment >= {pct}% of rated moment", lines, r.moment.levels_pct),
            evidence={"levels_pct": list(r.moment.levels_pct)})
    if r.wind.enabled:
        lines = absolute(r.wind.levels)
        out["crane.wind:wind"] = Params(
            lines=lines, unit="m/s", **knobs(dr, r.wind),
            rules=texts("wind >= {line} m/s: stop lifting", lines), evidence={})
    return out
