"""Battery charging: absolute pack / cell temperature, rate of rise (thermal-runaway precursor), CO and smoke.

A pack heading for runaway warms faster and faster long before it is hot, so the rate of rise over a short
window warns minutes earlier than the absolute lines; both are kept because a slow cook never shows a fast rise.
"""

from __future__ import annotations

from detectors.thresholds import PER_MS, RATE_BUCKETS, Params, absolute, knobs, texts
from sitewatch.rules import BatteryRules, DeviceRules

TEMPS = ("pack_temp", "cell_temp")
GASES = ("co", "smoke")

CHECKS = ([("battery.temp", m, "level") for m in TEMPS] + [("battery.temp_rise", m, "rate") for m in TEMPS]
          + [("battery.gas", m, "level") for m in GASES])


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
    return out
