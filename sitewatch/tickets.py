"""What the alerts room may know about a ticket, without importing the backlog: a contract between the two.

The backlog answers it (``Backlog.ticket_state``); the notifier asks it before escalating, reminding or sending a
resolution notice."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TicketState:
    """A ticket as it stands now."""

    status: str
    level: int
    peak_level: int
    major: bool
    active: bool
    acknowledged_ms: int | None = None
