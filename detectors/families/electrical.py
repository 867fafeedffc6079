"""Temporary electricity (JGJ 46): overcurrent, leakage, three-phase imbalance, terminal temperature.

Leakage is judged against the RCD trip rating: a switch box RCD trips at 30 mA (15 mA in wet places), so a
leakage that *stays* above half of it means the insulation is going and the next fault may not trip in time —
hence a hold time by default. Imbalance is only meaningful under load, so it is judged only while the busiest
phase carries ``min_load_pct`` of the breaker rating.
"""

from __future__ import annotations

from detectors.thresholds import Params, absolute, knobs, pct_of, texts
from sitewatch.rules import DeviceRules, ElectricalRules

PHASES = ("current_a", "current_b", "current_c")

CHECKS = [("electrical.overcurrent", p, "level") for p in PHASES] + [
    ("electrical.leakage", "leakage", "level"),
    ("electrical.terminal_temp", "terminal_temp", "level"),
    ("electrical.imbalance", "*", "imbalance"),
]


def params(dr: DeviceRules) -> dict[str, Params]:
    r: ElectricalRules = dr.rules  # type: ignore[assignment]
    out: dict[str, Params] = {}
    if r.overcurrent.enabled:
        lines = pct_of(r.overcurrent.levels_pct, r.breaker_rating_a)
        for p in PHASES:
            out[f"electrical.overcurrent:{p}"] = Params(
                lines=lines, unit="A", **knobs(dr, r.overcurrent),
                rules=texts(f"{p} >= {{pct}}% of breaker rating {r.breaker_rating_a:g} A ({{line}} A)", lines,
                            r.overcurrent.levels_pct),
                evidence={"breaker_rating_a": r.breaker_rating_a, "levels_pct": list(r.overcurrent.levels_pct)})
    if r.leakage.enabled:
        lines = pct_of(r.leakage.levels_pct, r.rcd_trip_ma)
        out["electrical.leakage:leakage"] = Params(
            lines=lines, unit="mA", **knobs(dr, r.leakage),
            rules=texts(f"leakage >= {{pct}}% of RCD trip rating {r.rcd_trip_ma:g} mA ({{line}} mA)", lines,
                        r.leakage.levels_pct),
            evidence={"rcd_trip_ma": r.rcd_trip_ma, "levels_pct": list(r.leakage.levels_pct)})
    if r.terminal_temp.enabled:
        lines = absolute(r.terminal_temp.levels)
        out["electrical.terminal_temp:terminal_temp"] = Params(
            lines=lines, unit="degC", **knobs(dr, r.terminal_temp),
            rules=texts("terminal temperature >= {line} degC", lines), evidence={})
    if r.imbalance.enabled:
        lines = absolute(r.imbalance.levels_pct)
        min_load = r.imbalance.min_load_pct * r.breaker_rating_a / 100.0
        out["electrical.imbalance:*"] = Params(
            lines=lines, unit="%", **knobs(dr, r.imbalance),
            rules=texts(f"three-phase imbalance (Imax-Imin)/Imax >= {{line}}% while Imax >= {min_load:g} A", lines),
            min_load=min_load, evidence={"min_load_a": min_load, "breaker_rating_a": r.breaker_rating_a})
    return out
