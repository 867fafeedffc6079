"""Device health and inhibited findings: ``GET /devices/health``, ``GET /findings/inhibited``.

Site-scoped exactly like ``/tickets``: a token sees only its sites' rows (others are simply not listed). The
router takes the app's bearer-token dependency, so authentication is the one ``create_app`` defines.
"""

# No ``from __future__ import annotations``: FastAPI must see the real ``Annotated[Actor, Depends(...)]`` of the
# local ``User`` alias, not a string it cannot resolve.
from typing import Annotated, Any, Callable, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict

from backlog.api.schemas import NO_NUL
from backlog.authz import Actor
from backlog.store import Backlog

Site = Annotated[str | None, Query(max_length=64, pattern=NO_NUL)]
HealthState = Literal["ok", "off", "silent", "faulty", "inhibited"]


class DeviceHealthOut(BaseModel):
    """A device's latest health state, since when and why."""

    model_config = ConfigDict(from_attributes=True)

    site: str
    device: str
    family: str
    state: str  # ok | off (not expected to report: outside working hours, switched off) | silent | faulty | inhibited
    since_ms: int
    reason: str
    gateway: str | None
    updated_ms: int


class InhibitedFindingOut(BaseModel):
    """A finding not ticketed because an inhibition rule's source ticket was open and active."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    dedup_key: str
    site: str
    device: str
    family: str
    kind: str
    category: str
    level: int
    ts: int
    last_ts: int
    count: int
    rule: str
    source_ticket_id: int
    evidence: dict[str, Any]
    resolved_ms: int | None
    resolution: str | None
    active: bool = True


def router(backlog: Backlog, current: Callable[..., Actor]) -> APIRouter:
    r = APIRouter()
    User = Annotated[Actor, Depends(current)]

    @r.get("/devices/health", response_model=list[DeviceHealthOut], tags=["devices"])
    def device_health(actor: User, site: Site = None, state: HealthState | None = None) -> list[DeviceHealthOut]:
        """Latest health of each device of your sites (``device.health`` findings; never tickets)."""
        return [DeviceHealthOut.model_validate(h) for h in backlog.device_health(actor, site=site, state=state)]

    @r.get("/findings/inhibited", response_model=list[InhibitedFindingOut], tags=["devices"])
    def inhibited(actor: User, site: Site = None,
                  active: bool | None = Query(None, description="true: still inhibited; false: resolved"),
                  limit: int = Query(500, ge=1, le=5000)) -> list[InhibitedFindingOut]:
        """Findings an inhibition rule kept from becoming tickets (e.g. devices silent behind an offline
        gateway), newest first, with the rule and the source ticket."""
        out = []
        for row in backlog.inhibited(actor, site=site, active=active, limit=limit):
            o = InhibitedFindingOut.model_validate(row)
            o.active = row.resolved_ms is None
            out.append(o)
        return out

    return r
