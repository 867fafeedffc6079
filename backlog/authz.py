"""Who may do what, on which tickets. Pure functions: the API and the CLI share them.

Roles (from the plan): the *site safety officer* works their own sites' tickets; the *company safety manager*
works and verifies all sites of their company; the bureau's *supervisor* sees everything, verifies, flags major
hazards, and alone may close a major hazard or lift a stop-work order; *ops* keeps the sensors running, so they
read everything and work only sensor-fault tickets.
"""

from __future__ import annotations

from dataclasses import dataclass

from backlog.errors import Forbidden

WORKERS = {"site_officer", "company_manager"}
ROLE_ACTIONS: dict[str, set[str]] = {
    "read": {"site_officer", "company_manager", "supervisor", "ops"},
    "create": {"site_officer", "company_manager", "supervisor"},
    "acknowledge": WORKERS,
    "start_rectification": WORKERS,
    "attach": WORKERS,
    "rectify": WORKERS,
    "verify": {"company_manager", "supervisor"},
    "reject": {"company_manager", "supervisor"},
    "reopen": {"company_manager", "supervisor"},
    "flag_major": {"supervisor"},
    "lift_stop_work": {"supervisor"},
    "escalate": {"supervisor", "ops"},
    "report": {"supervisor"},
}
# ops may do these on sensor-fault tickets (a dead sensor is theirs to fix)
OPS_FAULT_ACTIONS = {"acknowledge", "start_rectification", "attach", "rectify", "verify", "reject"}
SUPERVISOR_ONLY_ON_MAJOR = {"verify"}


@dataclass(frozen=True)
class Actor:
    name: str
    role: str
    sites: frozenset[str] | None = None  # None: every site (bureau-wide roles)

    def sees(self, site: str) -> bool:
        return self.sites is None or site in self.sites


SYSTEM = Actor("system", "system")
PIPELINE = Actor("pipeline", "system")


def check(actor: Actor, action: str, ticket=None) -> None:
    """Raise Forbidden unless ``actor`` may do ``action`` (on ``ticket``, when given)."""
    if actor.role == "system":
        return
    if ticket is not None and not actor.sees(ticket.site):
        raise Forbidden(f"{actor.name} ({actor.role}) has no access to site {ticket.site}")
    allowed = actor.role in ROLE_ACTIONS.get(action, set())
    if actor.role == "ops" and action in OPS_FAULT_ACTIONS:
        allowed = ticket is not None and ticket.category == "fault"
        if not allowed:
            raise Forbidden("ops may work sensor-fault tickets only")
    if not allowed:
        raise Forbidden(f"role {actor.role} may not {action.replace('_', ' ')}")
    if ticket is not None and ticket.major and action in SUPERVISOR_ONLY_ON_MAJOR and actor.role != "supervisor":
        raise Forbidden("only a supervisor can close a major hazard")
