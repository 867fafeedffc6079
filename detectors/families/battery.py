"""Battery charging: absolute pack / cell temperature, rate of rise (thermal-runaway precursor), CO and smoke.

A pack heading for runaway warms faster and faster long before it is hot, so the rate of rise over a short
window warns minutes earlier than the absolute lines; both are kept because a slow cook never shows a fast rise.

The city's plan also names *where and when* charging happens: charging current outside the site's charging
hours (``calendar.charging_hours``), or at a battery device that is not a registered charging point (when the site
lists ``charging_points``), is a violation finding of its own (``battery.charging_violation``, mode "charging":
the quantity is 1 while violating, 0 otherwise, so the usual hold and clear logic applies).
"""

from __future__ import annotations

from detectors.thresholds import LEVEL_NUM, PER_MS, RATE_BUCKETS, Params, absolute, knobs, texts
from sitewatch.rules import BatteryRules, DeviceRules

TEMPS = ("pack_temp", "cell_temp")
GASES = ("co", "smoke")

CHECKS = ([("battery.temp", m, "level") for m in TEMPS] + [("battery.temp_rise", m, "rate") for m in TEMPS]
          + [("battery.gas", m, "level") for m in GASES]
          + [("battery.charging_violation", "charge_current", "charging")])


def params(dr: DeviceRules) -> dict[str, Params]:
    r: BatteryRules = dr.rules  # type: ignore[assignment]
    out: dict[str, Params] = {}
    for m in TEMPS:
        if r.temp.enabled:
            lines = absolute(r.temp.levels)
            out[f"battery.temp:{m}"] = Params(lines=lines, unit="degC", **knobs(dr, r.temp),
                                              rules=texts(f"{m} >= {{line}} degC", lines), evidence={})
        if r.temp_rise.enabled:
            lines = absolute(r.temp_rise.levels)
            w = int(round(r.temp_rise.window * 1000))
            per = f"degC/{r.temp_rise.per}"
            out[f"battery.temp_rise:{m}"] = Params(
                lines=lines, unit=per, **knobs(dr, r.temp_rise),
                rules=texts(f"{m} rising >= {{line}} {per} over {r.temp_rise.window:g} s", lines),
                direction=1, window_ms=w, bucket_ms=max(1, w // RATE_BUCKETS), consecutive=1,
                per_ms=PER_MS[r.temp_rise.per], evidence={"window_s": r.temp_rise.window})
    if r.gas.enabled:
        lines = absolute(r.gas.levels)
        for m in GASES:
            out[f"battery.gas:{m}"] = Params(lines=lines, unit="ppm", **knobs(dr, r.gas),
                                             rules=texts(f"{m} >= {{line}} ppm", lines), evidence={})
    cv = r.charging_violation
    if cv.enabled:
        lines = tuple(1.0 if i == LEVEL_NUM[cv.level] - 1 else float("nan") for i in range(3))
        text = (f"charging (charge_current > {cv.min_current_a:g} A) outside the site's charging hours or at a "
                f"point not registered for charging")
        out["battery.charging_violation:charge_current"] = Params(
            lines=lines, unit="", **{**knobs(dr, r.temp), "hold_count": 1, "hold_ms": 0}, min_load=cv.min_current_a,
            rules=tuple(text if x == x else "" for x in lines), evidence={"min_current_a": cv.min_current_a})
    return out
