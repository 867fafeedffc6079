"""Findings: what the detectors tell every other room. A contract, so the backlog, the alerts and the tuning tools
depend on this module and never on the detectors' internals.

Serialised on ``sw.hazards`` as ``Finding.to_dict()`` JSON (``level`` as its integer)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any

from sitewatch.contracts import device_key


class Level(IntEnum):
    CLEAR = 0
    YELLOW = 1  # warning: watch closely
    ORANGE = 2  # alarm: act now
    RED = 3  # cut-off / stop-work territory

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Finding:
    """A detector's statement about one device and one hazard kind at one moment.

    Emitted when the level for (device, kind) changes — entered, upgraded, downgraded, cleared
    (``level == CLEAR``) — and re-asserted periodically while it stays raised, so the backlog can count
    how long and how often it fired.
    """

    site: str
    device: str
    family: str
    kind: str  # e.g. "crane.overload", "pit.cumulative", "fault.silent"
    category: str  # "hazard" | "fault"
    level: Level
    ts: int  # epoch ms of the reading (or clock tick) that decided it
    metric: str
    value: float
    threshold: float
    rule: str  # human-readable: "load >= 100% of rated 10.0 t"
    source: str = ""  # where the threshold comes from: standard / design document / config file
    major: bool = False  # a 重大事故隐患: stop-work and listed supervision
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return device_key(self.site, self.device)

    @property
    def dedup_key(self) -> str:
        return f"{self.site}/{self.device}/{self.kind}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["level"] = int(self.level)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Finding":
        d = dict(d)
        d["level"] = Level(d["level"])
        d.pop("v", None)
        return cls(**d)
