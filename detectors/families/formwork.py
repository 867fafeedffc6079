"""High-support formwork (JGJ 162 and the scheme's control values): ``formwork.control`` and ``formwork.rate``.

The dangerous moment is the pour: a post that starts to settle or lean moves within minutes, so the rate window
is minutes (default 5 min, mm/min), not days as for a pit.
"""

from __future__ import annotations

from detectors.families import monitored
from detectors.thresholds import Params
from sitewatch.rules import DeviceRules

CHECKS = monitored.checks("formwork", "formwork.control")


def params(dr: DeviceRules) -> dict[str, Params]:
    return monitored.params(dr, "formwork.control")
