"""Routes. Each handler is thin: authenticate, validate (pydantic), call the backlog, map domain errors to 4xx.

Tickets outside a user's sites answer 404, not 403, so the API does not reveal which ticket ids exist elsewhere.
"""


from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from backlog import orgs, render, reports
from backlog.api import redact
from backlog.api.ratelimit import RESPONSES as LIMITED, Limiter, RateLimited, RateLimitSettings, too_many
from backlog.api.schemas import (AttachmentOut, AuditOut, Category, CreateTicketIn, EscalationOut, EventOut,
                                 LiftIn, MajorIn, Me, NoteIn, ReopenIn, RectifyIn, Status, TicketOut, TicketPage,
                                 VerifyIn, MAX_ID, NO_NUL)
from backlog.authz import Actor, check
from backlog.errors import BacklogError, Invalid, TooLarge
from backlog.evidence import EvidenceStore
from backlog.models import Ticket
from backlog.store import WORKING_STATUSES, Backlog

DESCRIPTION = """The supervision backlog of SiteWatch: hazard and sensor-fault tickets, their lifecycle
(open → acknowledged → rectifying → rectified → closed, reopen on 回头看), major hazards (stop-work, 挂牌督办,
credit deductions), the audit trail and the month-end reports.

Authenticate with `Authorization: Bearer <token>`; tokens are made with `sitewatch api token create --user NAME`.
"""


Code = Annotated[str | None, Query(max_length=64, pattern=NO_NUL)]  # site, company, district, family, entity
# the yearly report's range; ASCII digits only (a regex \d also takes other scripts' digits, which int() reads);
# year 0000 made datetime() raise (found by the schemathesis run)
MONTH = r"^(20[0-9]{2}|2100)-(0[1-9]|1[0-2])$"
TicketId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
AttachmentId = Annotated[int, PathParam(ge=1, le=MAX_ID)]


def create_app(backlog: Backlog, evidence_root: Path, rate_limits: RateLimitSettings | None = None) -> FastAPI:
    """``rate_limits``: default from the environment (``SW_RATE_*``, see ``backlog.api.ratelimit``)."""
    app = FastAPI(title="SiteWatch backlog API", version="1.0", description=DESCRIPTION)
    evidence = EvidenceStore(backlog, evidence_root)
    bearer = HTTPBearer(auto_error=False)
    limiter = app.state.limiter = Limiter(rate_limits)
    redact.install()  # /ack/<token> and /wall/login?k=… must not reach the access log

    @app.exception_handler(BacklogError)
    async def _domain_error(_request: Request, exc: BacklogError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        """422 naming the field and the problem, without FastAPI's echo of the submitted value: a client that
        put a token in the wrong field must not find it copied into an error body (and a proxy's logs)."""
        return JSONResponse({"detail": [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in exc.errors()]},
                            status_code=422)

    @app.exception_handler(RateLimited)
    async def _too_many(_request: Request, exc: RateLimited):
        return too_many(exc)

    def current(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Actor:
        actor = orgs.authenticate(backlog, creds.credentials) if creds else None
        if actor is None:
            raise _Unauthorized()
        return actor

    User = Annotated[Actor, Depends(current)]

    def out(t: Ticket) -> TicketOut:
        o = TicketOut.model_validate(t)
        o.overdue = t.status in WORKING_STATUSES and t.deadline_ms is not None and t.deadline_ms < backlog.clock()
        return o

    @app.exception_handler(_Unauthorized)
    async def _unauth(_request: Request, _exc: Exception):
        return JSONResponse({"detail": "missing or invalid bearer token"}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})

    app.include_router(__import__("backlog.api.ack_links", fromlist=["router"]).router(  # signed ack links
        backlog, limiter=limiter))
    app.include_router(__import__("backlog.api.devices", fromlist=["router"]).router(backlog, current))  # /devices
    app.include_router(__import__("backlog.api.wall", fromlist=["router"]).router(  # wall page: /wall
        backlog, limiter=limiter))

    @app.get("/health", tags=["meta"])
    def health() -> dict:
        return {"ok": True}

    @app.get("/me", response_model=Me, tags=["meta"])
    def me(actor: User) -> Me:
        return Me(name=actor.name, role=actor.role, sites=sorted(actor.sites) if actor.sites is not None else None)

    # ---------------------------------------------------------------------------------------------- tickets
    @app.get("/tickets", response_model=TicketPage, tags=["tickets"])
    def list_tickets(
        actor: User,
        site: Code = None, company: Annotated[Code, Query(description="company code")] = None,
        district: Annotated[Code, Query(description="district code")] = None, family: Code = None,
        level: int | None = Query(None, ge=0, le=3, description="peak level"), status: Status | None = None,
        category: Category | None = None, major: bool | None = None,
        overdue: bool | None = Query(None, description="past deadline and not yet rectified"),
        page: int = Query(1, ge=1, le=100_000), page_size: int = Query(50, ge=1, le=500),
    ) -> TicketPage:
        rows, total = backlog.search(actor, site=site, company=company, district=district, family=family,
                                     level=level, status=status, category=category, major=major, overdue=overdue,
                                     page=page, page_size=page_size)
        return TicketPage(items=[out(t) for t in rows], total=total, page=page, page_size=page_size)

    @app.post("/tickets", response_model=TicketOut, status_code=201, tags=["tickets"])
    def create_ticket(body: CreateTicketIn, actor: User) -> TicketOut:
        """A hazard found by an inspection or a self-check."""
        return out(backlog.create_ticket(actor, **body.model_dump()))

    @app.get("/tickets/{ticket_id}", response_model=TicketOut, tags=["tickets"])
    def get_ticket(ticket_id: TicketId, actor: User) -> TicketOut:
        t = backlog.ticket(ticket_id, actor)
        check(actor, "read", t)
        return out(t)

    @app.get("/tickets/{ticket_id}/events", response_model=list[EventOut], tags=["audit"])
    def ticket_events(ticket_id: TicketId, actor: User) -> list[EventOut]:
        """The ticket's append-only audit trail: who, when, what, before/after."""
        check(actor, "read", backlog.ticket(ticket_id, actor))
        return [EventOut.model_validate(e) for e in backlog.events(ticket_id)]

    @app.post("/tickets/{ticket_id}/acknowledge", response_model=TicketOut, tags=["lifecycle"], responses=LIMITED)
    def acknowledge(ticket_id: TicketId, body: NoteIn, actor: User) -> TicketOut:
        """Rate-limited per user (``SW_RATE_ACK``): acknowledging stops the alert's escalation."""
        limiter.hit("ack", f"user:{actor.name}")
        return out(backlog.acknowledge(ticket_id, actor, body.note))

    @app.post("/tickets/{ticket_id}/start-rectification", response_model=TicketOut, tags=["lifecycle"])
    def start_rectification(ticket_id: TicketId, body: NoteIn, actor: User) -> TicketOut:
        return out(backlog.start_rectification(ticket_id, actor, body.note))

    @app.post("/tickets/{ticket_id}/attachments", response_model=AttachmentOut, status_code=201,
              tags=["lifecycle"], openapi_extra={"requestBody": {"content": {
                  t: {"schema": {"type": "string", "format": "binary"}} for t in backlog.policy.evidence_types}}})
    async def upload(ticket_id: TicketId, request: Request, actor: User,
                     filename: str = Query(..., min_length=1, max_length=200, pattern=NO_NUL)) -> AttachmentOut:
        """Upload one evidence file as the raw request body (Content-Type: image/jpeg, image/png, image/webp,
        application/pdf or text/plain); then pass its id to /rectify."""
        limit = backlog.policy.evidence_max_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise TooLarge(f"evidence larger than {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"evidence larger than {limit} bytes")
            chunks.append(chunk)
        a = await run_in_threadpool(evidence.add, ticket_id, actor, filename,
                                    request.headers.get("content-type", ""), b"".join(chunks))
        return AttachmentOut.model_validate(a)

    @app.get("/tickets/{ticket_id}/attachments", response_model=list[AttachmentOut], tags=["lifecycle"])
    def list_attachments(ticket_id: TicketId, actor: User) -> list[AttachmentOut]:
        check(actor, "read", backlog.ticket(ticket_id, actor))
        return [AttachmentOut.model_validate(a) for a in backlog.attachments(ticket_id)]

    @app.get("/tickets/{ticket_id}/attachments/{attachment_id}", tags=["lifecycle"],
             responses={200: {"content": {"application/octet-stream": {}}}})
    def download(ticket_id: TicketId, attachment_id: AttachmentId, actor: User) -> Response:
        a, data = evidence.read(ticket_id, attachment_id, actor)
        return Response(data, media_type=a.content_type,
                        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{_quote(a.filename)}"})

    @app.post("/tickets/{ticket_id}/rectify", response_model=TicketOut, tags=["lifecycle"])
    def rectify(ticket_id: TicketId, body: RectifyIn, actor: User) -> TicketOut:
        return out(backlog.rectify(ticket_id, actor, body.note, body.attachment_ids))

    @app.post("/tickets/{ticket_id}/verify", response_model=TicketOut, tags=["lifecycle"])
    def verify(ticket_id: TicketId, body: VerifyIn, actor: User) -> TicketOut:
        """Accept (close) or reject a rectification. The verifier must not be the rectifier; a major hazard
        is closed by a supervisor only, after stop-work was lifted."""
        return out(backlog.verify(ticket_id, actor, body.note, body.accept))

    @app.post("/tickets/{ticket_id}/reopen", response_model=TicketOut, tags=["lifecycle"])
    def reopen(ticket_id: TicketId, body: ReopenIn, actor: User) -> TicketOut:
        return out(backlog.reopen(ticket_id, actor, body.reason))

    @app.post("/tickets/{ticket_id}/major", response_model=TicketOut, tags=["major hazards"])
    def flag_major(ticket_id: TicketId, body: MajorIn, actor: User) -> TicketOut:
        """Flag a major hazard (重大事故隐患): stop-work, listed supervision, credit deduction. Supervisor only."""
        return out(backlog.flag_major(ticket_id, actor, body.reason, body.stop_work, body.listed_supervision,
                                      body.credit_points))

    @app.post("/tickets/{ticket_id}/lift-stop-work", response_model=TicketOut, tags=["major hazards"])
    def lift_stop_work(ticket_id: TicketId, body: LiftIn, actor: User) -> TicketOut:
        return out(backlog.lift_stop_work(ticket_id, actor, body.note))

    @app.post("/escalations", response_model=EscalationOut, tags=["lifecycle"])
    def escalate(actor: User) -> EscalationOut:
        """Escalate every overdue ticket now (idempotent; also run by ``sitewatch backlog escalate-overdue``)."""
        return EscalationOut(escalated=backlog.escalate_overdue(actor))

    # ---------------------------------------------------------------------------------------------- audit, reports
    @app.get("/audit", response_model=list[AuditOut], tags=["audit"])
    def audit(actor: User, entity: Code = None, limit: int = Query(200, ge=1, le=1000)) -> list[AuditOut]:
        """Changes to organisations, users and tokens (ticket changes: /tickets/{id}/events). Supervisor only."""
        check(actor, "report")
        return [AuditOut.model_validate(e) for e in orgs.audit_trail(backlog, entity, limit)]

    def _report(r: reports.Report, fmt: str) -> Response:
        if fmt == "html":
            return HTMLResponse(render.html(r))
        if fmt == "csv":
            return PlainTextResponse(render.csv_rows(r), media_type="text/csv")
        if fmt == "ranking.csv":
            return PlainTextResponse(render.csv_ranking(r), media_type="text/csv")
        return JSONResponse(r.to_dict())

    Fmt = Literal["json", "html", "csv", "ranking.csv"]

    @app.get("/reports/monthly", tags=["reports"])
    def monthly(actor: User, month: str = Query(..., pattern=MONTH, examples=["2026-10"]),
                format: Fmt = "json") -> Response:
        check(actor, "report")
        return _report(reports.build(backlog, reports.Period.month(month), "monthly"), format)

    @app.get("/reports/yearly", tags=["reports"])
    def yearly(actor: User, year: int = Query(..., ge=2000, le=2100), format: Fmt = "json") -> Response:
        check(actor, "report")
        return _report(reports.build(backlog, reports.Period.year(year), "yearly"), format)

    return app


class _Unauthorized(Exception):
    pass


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


__all__ = ["create_app", "Invalid"]
