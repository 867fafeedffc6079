"""Pit (GB 50497-2019 §8) and high formwork (JGJ 162): cumulative change and rate against design alarm values.

Both report per monitoring point a few quantities, each with an alarm value for its cumulative change since the
zero reading (or its absolute value, e.g. strut axial force) and one for its rate. GB 50497 alarms when *either*
reaches its value, so they are separate checks whose findings are separate tickets. Levels are graded at
``level_pcts`` (70 / 85 / 100 %) of the alarm value. "Rate above X for N consecutive days" is
``rate_consecutive: N``: every one of the last N windows must have moved at least the rate line.
"""

from __future__ import annotations

from detectors.thresholds import DIRECTIONS, PER_MS, RATE_BUCKETS, Params, knobs, pct_of, texts
from sitewatch.contracts import FAMILIES
from sitewatch.rules import DeviceRules, MonitoredFamily


def checks(family: str, control_kind: str) -> list[tuple[str, str, str]]:
    ms = list(FAMILIES[family])
    return [(control_kind, m, "change") for m in ms] + [(f"{family}.rate", m, "rate") for m in ms]


def params(dr: DeviceRules, control_kind: str) -> dict[str, Params]:
    r: MonitoredFamily = dr.rules  # type: ignore[assignment]
    fam = dr.family
    out: dict[str, Params] = {}
    grade = getattr(r, "grade", None)
    for metric, pm in r.metrics.items():
        unit = FAMILIES[fam][metric]
        alarm = pm.alarm_value
        direction = DIRECTIONS[pm.direction]
        sign = {"both": "|change|", "increase": "rise", "decrease": "fall"}[pm.direction]
        if r.cumulative.enabled and alarm is not None:
            lines = pct_of(r.level_pcts, alarm)
            absolute = pm.measure == "absolute"
            what = f"{metric}" if absolute else f"{metric} {sign} since baseline"
            ev = {"alarm_value": alarm, "level_pcts": list(r.level_pcts), "measure": pm.measure}
            if pm.design_value is not None and pm.alarm is None:
                ev["design_value"] = pm.design_value
                ev["alarm_pct_of_design"] = pm.alarm_pct_of_design
            if grade is not None:
                ev["grade"] = grade
            out[f"{control_kind}:{metric}"] = Params(
                lines=lines, unit=unit, **knobs(dr, r.cumulative),
                rules=texts(f"{what} >= {{pct}}% of alarm value {alarm:g} {unit} ({{line}} {unit})", lines,
                            r.level_pcts),
                direction=1 if absolute else direction,
                baseline=0.0 if absolute else (None if pm.baseline == "first" else float(pm.baseline)),
                evidence=ev)
        if r.rate.enabled and pm.rate is not None:
            lines = pct_of(r.level_pcts, pm.rate)
            window_ms = int(round(r.rate_window * 1000))
            per = f"{unit}/{r.rate_per}"
            n = r.rate_consecutive
            over = f"over {r.rate_window / 3600:g} h" if r.rate_window >= 3600 else f"over {r.rate_window / 60:g} min"
            span = f" in each of {n} consecutive windows" if n > 1 else ""
            ev = {"rate_alarm": pm.rate, "level_pcts": list(r.level_pcts), "window_s": r.rate_window,
                  "consecutive": n, "per": r.rate_per}
            if grade is not None:
                ev["grade"] = grade
            out[f"{fam}.rate:{metric}"] = Params(
                lines=lines, unit=per, **knobs(dr, r.rate),
                rules=texts(f"{metric} rate {over} >= {{pct}}% of {pm.rate:g} {per} ({{line}} {per}){span}", lines,
                            r.level_pcts),
                direction=direction, window_ms=window_ms, bucket_ms=max(1, window_ms // RATE_BUCKETS),
                consecutive=n, per_ms=PER_MS[r.rate_per], evidence=ev)
    return out
