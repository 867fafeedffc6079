"""Which actions exist, which are dangerous, who may ask for and approve them, and the service's timings.

Defaults are sane for a site (cut_power and lock_lifting dangerous, a siren not); a YAML file named by
``$SW_COMMANDS_POLICY`` replaces any of them. Roles are the backlog's (``backlog.authz``) and scoping is the
tickets' scoping: an actor acts on a site only if ``actor.sees(site)``.

The two-person rule: a dangerous action needs ``dangerous_approvals`` (2) approvals from *different* accounts with
an approving role, before ``approval_ttl_s`` after the request. A requester with an approving role counts as the
first; the system (a rule's proposal) never counts — a person approves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field

from backlog.authz import Actor
from backlog.errors import Forbidden, Invalid, NotFound

POLICY_ENV = "SW_COMMANDS_POLICY"


class ActionPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dangerous: bool = True  # unknown new actions are dangerous until someone says otherwise
    families: list[str] = Field(default_factory=list)  # device families it applies to (empty: any)
    description: str = ""


def _default_actions() -> dict[str, ActionPolicy]:
    return {
        "cut_power": ActionPolicy(dangerous=True, families=["battery", "electrical"],
                                  description="open the supply breaker of a charging cabinet or distribution box"),
        "restore_power": ActionPolicy(dangerous=True, families=["battery", "electrical"],
                                      description="close it again (a runaway pack re-energised is a fire)"),
        "lock_lifting": ActionPolicy(dangerous=True, families=["crane"],
                                     description="lock a tower crane's lifting circuit (a suspended load stays)"),
        "unlock_lifting": ActionPolicy(dangerous=True, families=["crane"], description="release the lock"),
        "siren": ActionPolicy(dangerous=False, description="sound the site siren / beacon at the device"),
        "siren_off": ActionPolicy(dangerous=False, description="silence it"),
    }


class CommandPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actions: dict[str, ActionPolicy] = Field(default_factory=_default_actions)
    request_roles: list[str] = Field(default_factory=lambda: ["site_officer", "company_manager", "supervisor"])
    approve_roles: list[str] = Field(default_factory=lambda: ["site_officer", "company_manager", "supervisor"])
    approve_dangerous_roles: list[str] = Field(default_factory=lambda: ["company_manager", "supervisor"])
    dangerous_approvals: Annotated[int, Field(ge=2)] = 2
    approval_ttl_s: Annotated[float, Field(gt=0)] = 600.0  # a request not approved in time expires
    command_ttl_s: Annotated[float, Field(gt=0)] = 120.0  # a sent command's expiry (the device refuses it after)
    retry_s: Annotated[float, Field(gt=0)] = 5.0  # resend an unanswered command this often
    max_retries: Annotated[int, Field(ge=0)] = 3  # then escalate it as a ticket (and keep waiting until expiry)
    skew_ms: Annotated[int, Field(ge=0)] = 30_000
    default_gateway: str = "gw-01"  # when neither the request, the rules nor device health names one

    @classmethod
    def from_env(cls) -> "CommandPolicy":
        path = os.environ.get(POLICY_ENV)
        return cls.load(Path(path)) if path else cls()

    @classmethod
    def load(cls, path: Path) -> "CommandPolicy":
        return cls.model_validate(yaml.safe_load(path.read_text()) or {})

    # -------------------------------------------------------------------------------------------- decisions
    def action(self, name: str, family: str | None = None) -> ActionPolicy:
        a = self.actions.get(name)
        if a is None:
            raise Invalid(f"unknown action {name!r}; known: {', '.join(sorted(self.actions))}")
        if family and a.families and family not in a.families:
            raise Invalid(f"{name} does not apply to a {family} device (only {', '.join(a.families)})")
        return a

    def approvals_needed(self, action: str) -> int:
        return self.dangerous_approvals if self.action(action).dangerous else 1

    def check_request(self, actor: Actor, site: str) -> None:
        if not actor.sees(site):
            raise NotFound(f"site {site} not found")
        if actor.role != "system" and actor.role not in self.request_roles:
            raise Forbidden(f"role {actor.role} may not request commands")

    def may_approve(self, actor: Actor, action: str) -> bool:
        roles = self.approve_dangerous_roles if self.action(action).dangerous else self.approve_roles
        return actor.role in roles

    def check_approve(self, actor: Actor, site: str, action: str) -> None:
        if not actor.sees(site):
            raise NotFound("command not found")
        if actor.role == "system":
            raise Forbidden("a command is approved by a person, not by the system")
        if not self.may_approve(actor, action):
            raise Forbidden(f"role {actor.role} may not approve {action}")
