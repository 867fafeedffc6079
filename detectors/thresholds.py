"""From rule objects to the numbers a vectorised check compares against.

A family module turns a device's effective rules into one ``Params`` per check. Everything a Finding needs to
explain itself later (rule text per level, the threshold's source, static evidence such as the rated load) is
prepared here once per device, so the hot path only gathers floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sitewatch.rules import LEVEL_NAMES, DeviceRules, Knobs

NEVER = 4  # a level number above red: "never major"
LEVEL_NUM = {"yellow": 1, "orange": 2, "red": 3, "none": NEVER}
DIRECTIONS = {"both": 0, "increase": 1, "decrease": 2}
PER_MS = {"s": 1000.0, "min": 60_000.0, "h": 3_600_000.0, "d": 86_400_000.0}
RATE_BUCKETS = 12  # samples kept per rate window: resolution of the window start, bound on state size


@dataclass(frozen=True)
class Params:
    lines: tuple[float, float, float]  # level lines in the check's own quantity; NaN = level off
    clear_ratio: float
    hold_count: int
    hold_ms: int
    major_from: int
    source: str
    rules: tuple[str, str, str]  # human-readable rule per level
    unit: str
    direction: int = 0  # change / rate checks: 0 both (magnitude), 1 increase, 2 decrease
    baseline: float | None = None  # change checks: fixed zero reading; None = first reading received
    window_ms: int = 0
    bucket_ms: int = 0
    consecutive: int = 1
    per_ms: float = 1.0
    min_load: float = 0.0
    evidence: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def clear_lines(self) -> tuple[float, float, float]:
        """clear_ratio × line, rounded to 12 digits so 0.95 × 9 t is the 8.55 t an engineer computes by hand."""
        return tuple(float(f"{self.clear_ratio * x:.12g}") for x in self.lines)  # type: ignore[return-value]

    @cached_property
    def static_evidence(self) -> dict[str, Any]:
        """The part of a finding's evidence that depends only on the check's parameters (do not mutate)."""
        return {"unit": self.unit,
                "lines": {LEVEL_NAMES[i]: self.lines[i] for i in range(3) if not math.isnan(self.lines[i])},
                "clear_ratio": self.clear_ratio, "hold_count": self.hold_count, "hold_s": self.hold_ms / 1000,
                **self.evidence}


def knobs(dr: DeviceRules, k: Knobs) -> dict[str, Any]:
    """A check's hold / clear / major / source, falling back to the family's."""
    fam = dr.rules
    source = k.source or fam.source
    if dr.overridden_by:
        source = f"{source}; {dr.site_source + ' ' if dr.site_source else ''}via {', '.join(dr.overridden_by)}"
    return dict(
        clear_ratio=k.clear_ratio if k.clear_ratio is not None else fam.clear_ratio,
        hold_count=k.hold_count if k.hold_count is not None else fam.hold_count,
        hold_ms=int(round(1000 * (k.hold if k.hold is not None else fam.hold))),
        major_from=LEVEL_NUM[k.major_level if k.major_level is not None else fam.major_level],
        source=source,
    )


def pct_of(levels_pct: list[float | None], base: float) -> tuple[float, float, float]:
    """pct × base / 100 rounds once, so a reading typed as exactly 90 % of the rating sits exactly on the line."""
    return tuple(math.nan if p is None else p * base / 100.0 for p in levels_pct)  # type: ignore[return-value]


def absolute(levels: list[float | None]) -> tuple[float, float, float]:
    return tuple(math.nan if x is None else float(x) for x in levels)  # type: ignore[return-value]


def texts(template: str, lines: tuple[float, float, float], pcts: list[float | None] | None = None) -> tuple[str, ...]:
    """Rule text per level; ``template`` gets {line} and {pct}."""
    out = []
    for i in range(3):
        if math.isnan(lines[i]):
            out.append("")
        else:
            out.append(template.format(line=_num(lines[i]), pct=_num(pcts[i]) if pcts and pcts[i] is not None else "",
                                       level=LEVEL_NAMES[i]))
    return tuple(out)


def _num(x: float) -> str:
    return f"{x:.6g}"
