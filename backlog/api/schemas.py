"""Pydantic models at the API edge: what clients send is validated here (422 with the field named), and what
they get back is a stable shape independent of the ORM rows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Row ids are 32-bit INTEGER columns (PostgreSQL int4): a larger id is not a row, and must not reach the database
# driver, which raises instead of answering "no such row" (found by the schemathesis run, tests/security).
MAX_ID = 2**31 - 1
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]
# PostgreSQL text cannot hold NUL: a string with one is refused here (422) instead of failing in the driver (500)
NO_NUL = r"^[^\x00]*$"

Status = Literal["open", "acknowledged", "rectifying", "rectified", "closed"]
Category = Literal["hazard", "fault"]


class TicketOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    dedup_key: str
    site: str
    device: str
    family: str
    kind: str
    category: str
    origin: str
    title: str
    status: str
    level: int
    peak_level: int
    major: bool
    stop_work: bool
    listed_supervision: bool
    active: bool
    count: int
    metric: str
    last_value: float
    peak_value: float
    threshold: float
    rule: str
    opened_ms: int
    last_seen_ms: int
    deadline_ms: int | None
    escalated_ms: int | None
    acknowledged_ms: int | None
    rectified_ms: int | None
    rectified_by: str | None
    closed_ms: int | None
    closed_by: str | None
    reopened_from: int | None
    reopen_count: int
    overdue: bool = False
    # the episode: the worst reading and when, first/last reading over a line, the reading that cleared it
    peak_ts_ms: int | None = None
    first_breach_ms: int | None = None
    last_breach_ms: int | None = None
    cleared_ms: int | None = None
    clear_value: float | None = None
    # opened from readings a gateway buffered during an outage (back-dated: opened_ms is the measurement time)
    late: bool = False
    arrival_delay_s: float | None = None
    outage_from_ms: int | None = None
    outage_to_ms: int | None = None


class TicketPage(BaseModel):
    items: list[TicketOut]
    total: int
    page: int
    page_size: int


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    ticket_id: int
    at_ms: int
    actor: str
    action: str
    from_level: int | None
    to_level: int | None
    detail: dict[str, Any]


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at_ms: int
    actor: str
    entity: str
    entity_id: str
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AttachmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    ticket_id: int
    filename: str
    content_type: str
    size: int
    sha256: str
    uploaded_by: str
    at_ms: int


class Me(BaseModel):
    name: str
    role: str
    sites: list[str] | None


class CreateTicketIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site: str = Field(min_length=1, max_length=64, pattern=NO_NUL)
    device: str = Field("-", min_length=1, max_length=64, pattern=NO_NUL)
    family: str = Field(min_length=1, max_length=32, pattern=NO_NUL)
    kind: str = Field(min_length=1, max_length=64, pattern=NO_NUL)
    level: int = Field(ge=1, le=3, description="1 yellow, 2 orange, 3 red")
    title: str = Field(min_length=1, max_length=2000, pattern=NO_NUL)
    category: Category = "hazard"
    major: bool = False


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=4000, pattern=NO_NUL)


class RectifyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(min_length=1, max_length=4000, description="what was done", pattern=NO_NUL)
    attachment_ids: list[RowId] = Field(default_factory=list, max_length=50,
                                      description="ids returned by POST /tickets/{id}/attachments")


class VerifyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accept: bool = Field(True, description="true closes the ticket; false sends it back to rectifying")
    note: str = Field("", max_length=4000, pattern=NO_NUL)


class ReopenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=4000, description="what the follow-up review (回头看) found",
                        pattern=NO_NUL)


class MajorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=4000, pattern=NO_NUL)
    stop_work: bool = True
    listed_supervision: bool = True
    credit_points: float | None = Field(None, ge=0, le=100, description="default: the policy's points")


class LiftIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(min_length=1, max_length=4000, pattern=NO_NUL)


class EscalationOut(BaseModel):
    escalated: list[int]
