"""``/commands``: request, approve, decline, list, get — with the backlog API's bearer tokens and site scoping.

The backlog's app factory knows nothing of commands (the backlog room sits below this one); ``mount`` adds this
router to an app ``backlog.api.create_app`` made, and ``sitewatch api serve`` does so (commands.cli).
Commands outside a token's sites answer 404, like tickets.
"""

# No ``from __future__ import annotations``: FastAPI must see the real Annotated dependencies.
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path as PathParam, Query
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from backlog import orgs
from backlog.authz import Actor
from commands.ledger import Ledger

ID = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
CommandId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$")]
State = Literal["proposed", "requested", "approved", "sent", "accepted", "done", "rejected", "declined", "expired",
                "escalated"]


class RequestIn(BaseModel):
    site: str = Field(pattern=ID)
    device: str = Field(pattern=ID)
    action: str = Field(min_length=1, max_length=32, pattern=r"^[a-z_]+$")
    args: dict[str, Any] = Field(default_factory=dict)
    gateway: str | None = Field(None, pattern=ID)
    family: str | None = Field(None, max_length=32, pattern=r"^[a-z_]+$")
    ticket_id: int | None = Field(None, ge=1, le=2**62)
    note: str = Field("", max_length=2000)


class NoteIn(BaseModel):
    note: str = Field("", max_length=2000)


class ApprovalOut(BaseModel):
    actor: str
    role: str
    decision: str
    at_ms: int
    note: str


class EventOut(BaseModel):
    at_ms: int
    action: str
    from_state: str | None
    to_state: str | None
    actor: str
    detail: dict[str, Any]


class CommandOut(BaseModel):
    id: str
    site: str
    gateway: str
    device: str
    family: str | None
    action: str
    args: dict[str, Any]
    dangerous: bool
    approvals_needed: int
    state: str
    source: str
    rule: str | None
    ticket_id: int | None
    requested_by: str
    requested_ms: int
    approval_expires_ms: int
    attempts: int
    expires_ms: int | None
    ack_status: str | None
    ack_reason: str | None
    escalation_ticket_id: int | None
    approvals: list[ApprovalOut] = Field(default_factory=list)
    events: list[EventOut] = Field(default_factory=list)


def router(ledger: Ledger) -> APIRouter:
    r = APIRouter(prefix="/commands", tags=["commands"])
    bearer = HTTPBearer(auto_error=False)

    def current(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Actor:
        actor = orgs.authenticate(ledger.backlog, creds.credentials) if creds else None
        if actor is None:
            raise _Unauthorized()
        return actor

    User = Annotated[Actor, Depends(current)]

    @r.post("", response_model=CommandOut, status_code=201)
    def request(body: RequestIn, actor: User) -> CommandOut:
        """Ask for a command. Dangerous actions need a second approver (a different account) before the
        approval window closes; a requester with an approving role counts as the first."""
        return CommandOut.model_validate(ledger.request(actor, **body.model_dump()))

    @r.post("/{command_id}/approve", response_model=CommandOut)
    def approve(command_id: CommandId, body: NoteIn, actor: User) -> CommandOut:
        return CommandOut.model_validate(ledger.approve(command_id, actor, body.note))

    @r.post("/{command_id}/reject", response_model=CommandOut)
    def reject(command_id: CommandId, body: NoteIn, actor: User) -> CommandOut:
        """Decline: the command is never sent."""
        return CommandOut.model_validate(ledger.decline(command_id, actor, body.note))

    @r.get("", response_model=list[CommandOut])
    def list_commands(actor: User, site: Annotated[str | None, Query(pattern=ID)] = None,
                      state: State | None = None, limit: int = Query(200, ge=1, le=1000)) -> list[CommandOut]:
        return [CommandOut.model_validate(c) for c in ledger.list(actor, site=site, state=state, limit=limit)]

    @r.get("/{command_id}", response_model=CommandOut)
    def get(command_id: CommandId, actor: User) -> CommandOut:
        """The command with its approvals and every step (the same steps are in the site's hash chain)."""
        return CommandOut.model_validate(ledger.get(command_id, actor))

    return r


class _Unauthorized(Exception):
    pass


def mount(app: FastAPI, ledger: Ledger) -> FastAPI:
    """Add ``/commands`` to an app made by ``backlog.api.create_app`` (its BacklogError handler maps the ledger's
    errors to 4xx)."""
    app.include_router(router(ledger))

    @app.exception_handler(_Unauthorized)
    async def _unauth(_request, _exc):
        return JSONResponse({"detail": "missing or invalid bearer token"}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})

    return app
