"""Ledger policy defaults, each overridable from the environment (the worker and the API read the same values).

- Rectification deadlines per level: red 24 h, orange 72 h, yellow 7 d (``SW_DEADLINE_HOURS="red=24,orange=72,
  yellow=168"``). A ticket's deadline counts from the reading that raised it to that level; an upgrade can
  only shorten it.
- Credit points deducted from the responsible company for a major hazard (``SW_MAJOR_CREDIT_POINTS``, 10).
- Evidence limits: size (``SW_EVIDENCE_MAX_BYTES``, 10 MB) and the content types a phone or scanner produces.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

HOUR_MS = 3_600_000
LEVEL_NAMES = {1: "yellow", 2: "orange", 3: "red"}
DEFAULT_DEADLINE_HOURS = {"red": 24.0, "orange": 72.0, "yellow": 168.0}
EVIDENCE_TYPES = ("image/jpeg", "image/png", "image/webp", "application/pdf", "text/plain")


def _parse_hours(spec: str) -> dict[str, float]:
    out = dict(DEFAULT_DEADLINE_HOURS)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, hours = part.partition("=")
        if name.strip() not in out:
            raise ValueError(f"SW_DEADLINE_HOURS: unknown level {name!r} (use red, orange, yellow)")
        out[name.strip()] = float(hours)
    return out


@dataclass(frozen=True)
class Policy:
    deadline_hours: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_DEADLINE_HOURS))
    major_credit_points: float = 10.0
    evidence_max_bytes: int = 10 * 1024 * 1024
    evidence_types: tuple[str, ...] = EVIDENCE_TYPES

    def deadline_ms(self, level: int, from_ms: int) -> int:
        name = LEVEL_NAMES.get(max(1, min(3, int(level))))
        return from_ms + int(self.deadline_hours[name] * HOUR_MS)

    @classmethod
    def from_env(cls) -> "Policy":
        return cls(
            deadline_hours=_parse_hours(os.environ.get("SW_DEADLINE_HOURS", "")),
            major_credit_points=float(os.environ.get("SW_MAJOR_CREDIT_POINTS", "10")),
            evidence_max_bytes=int(os.environ.get("SW_EVIDENCE_MAX_BYTES", str(10 * 1024 * 1024))),
        )
