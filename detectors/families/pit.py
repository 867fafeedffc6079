"""Foundation pit (GB 50497-2019 §8): see ``monitored``; kinds ``pit.cumulative`` and ``pit.rate``."""

from __future__ import annotations

from detectors.families import monitored
from detectors.thresholds import Params
from sitewatch.rules import DeviceRules

CHECKS = monitored.checks("pit", "pit.cumulative")


def params(dr: DeviceRules) -> dict[str, Params]:
    return monitored.params(dr, "pit.cumulative")
