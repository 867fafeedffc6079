"""The ticket state machine. Transitions not listed here are refused (HTTP 409), whoever asks.

    open ─acknowledge→ acknowledged ─start_rectification→ rectifying ─rectify→ rectified ─verify→ closed
                                                            ↑                     │
                                                            └──────reject─────────┘   (verification failed)
    closed ─reopen→ open    (回头看: the follow-up review found the hazard back)
    open/acknowledged/rectifying/rectified ─retract→ closed
                            (pipeline only: a silent-sensor fault that buffered readings later disproved —
                             the device was measuring all along; journalled as ``retracted`` with the reason)

A sensor that alarms again after closure does not reopen the closed ticket: the pipeline opens a *new* ticket
with ``reopened_from`` pointing at the closed one, so the verified closure stays on record and the repeat counts
against the company (see docs/backlog.md).
"""

from __future__ import annotations

from backlog.errors import Conflict

TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "acknowledge": (frozenset({"open"}), "acknowledged"),
    "start_rectification": (frozenset({"acknowledged"}), "rectifying"),
    "rectify": (frozenset({"rectifying"}), "rectified"),
    "verify": (frozenset({"rectified"}), "closed"),
    "reject": (frozenset({"rectified"}), "rectifying"),
    "reopen": (frozenset({"closed"}), "open"),
    # No role may retract: only the pipeline calls it (``Backlog._retract``), never the API.
    "retract": (frozenset({"open", "acknowledged", "rectifying", "rectified"}), "closed"),
}


def next_status(action: str, status: str) -> str:
    """The status after ``action`` from ``status``; Conflict if the lifecycle does not allow it."""
    allowed, target = TRANSITIONS[action]
    if status not in allowed:
        raise Conflict(f"cannot {action.replace('_', ' ')} a ticket that is {status} "
                       f"(allowed from: {', '.join(sorted(allowed))})")
    return target
