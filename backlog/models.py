"""The supervision backlog's tables (SQLAlchemy 2; SQLite embedded, PostgreSQL in production).

Why these shapes:

- One *open* ticket per ``site/device/kind`` is a database constraint (a partial unique index), not a
  check-then-insert in Python, so two workers racing on the same hazard cannot both open one.
- ``ticket_events`` and ``audit_events`` are append-only (the migrations install triggers that refuse UPDATE
  and DELETE): the ledger's history is never rewritten in place. Each event says who, when, what, and the
  before/after values of the fields it changed.
- ``alert_outbox`` is written in the same transaction as the ticket change it announces (transactional
  outbox), so a crash can neither lose the alert of a committed ticket nor announce an uncommitted one.
- Organisations are one tree (city → district → company) plus projects (= monitored sites, keyed by the
  pipeline's ``site`` code) and devices, so reports can roll tickets up by the *current* org mapping.

The schema is owned by the Alembic migrations in ``backlog/migrations``; these classes must match them
(``tests/backlog/test_migrations.py`` compares the two).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


OPEN_STATUSES = ("open", "acknowledged", "rectifying", "rectified")
STATUSES = OPEN_STATUSES + ("closed",)


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(200), index=True)
    site: Mapped[str] = mapped_column(String(64), index=True)
    device: Mapped[str] = mapped_column(String(64))
    family: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(16))  # hazard | fault
    status: Mapped[str] = mapped_column(String(16), default="open")
    level: Mapped[int] = mapped_column(Integer)  # current level reported by the detector (0 = condition cleared)
    peak_level: Mapped[int] = mapped_column(Integer)
    major: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)  # is the sensor condition still present?
    count: Mapped[int] = mapped_column(Integer, default=1)
    opened_ms: Mapped[int] = mapped_column(BigInteger)
    last_seen_ms: Mapped[int] = mapped_column(BigInteger)
    metric: Mapped[str] = mapped_column(String(64))
    last_value: Mapped[float] = mapped_column(Float)
    peak_value: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    rule: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text, default="")
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    # --- ledger (migration 0002) ---
    origin: Mapped[str] = mapped_column(String(16), default="sensor")  # sensor | inspection
    title: Mapped[str] = mapped_column(Text, default="")
    deadline_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    escalated_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    acknowledged_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    rectified_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    rectified_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    closed_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    closed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cleared_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # reading ts the condition cleared
    stop_work: Mapped[bool] = mapped_column(Boolean, default=False)
    listed_supervision: Mapped[bool] = mapped_column(Boolean, default=False)
    reopened_from: Mapped[int | None] = mapped_column(Integer, nullable=True)  # id of the closed ticket it follows
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)

    # --- the episode (migration 0003): what the sensor saw, not only its last word ---
    peak_ts_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # reading ts of peak_value
    first_breach_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_breach_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    clear_value: Mapped[float | None] = mapped_column(Float, nullable=True)  # the reading that cleared it
    late: Mapped[bool] = mapped_column(Boolean, default=False)  # opened from buffered (back-dated) readings
    arrival_delay_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    outage_from_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    outage_to_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (
        Index(
            "uq_tickets_one_open_per_key",
            "dedup_key",
            unique=True,
            sqlite_where=text("status != 'closed'"),
            postgresql_where=text("status != 'closed'"),
        ),
    )


class TicketEvent(Base):
    """One change to one ticket. ``detail`` carries ``before``/``after`` of the changed fields."""

    __tablename__ = "ticket_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    from_level: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_level: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AlertOutbox(Base):
    __tablename__ = "alert_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(120), unique=True)
    dedup_key: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    published_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)


class AppliedLateFinding(Base):
    """Idempotency of back-dated findings (``evidence.late``): they are older than ``last_seen_ms`` by nature, so
    the time-based replay check cannot tell a replay from news; this table can (one row per key, ts, level)."""

    __tablename__ = "applied_late_findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(200))
    ts: Mapped[int] = mapped_column(BigInteger)
    level: Mapped[int] = mapped_column(Integer)
    ticket_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    applied_ms: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (UniqueConstraint("dedup_key", "ts", "level", name="uq_applied_late_findings"),)


class InhibitedFinding(Base):
    """A finding not ticketed because an inhibition rule's source ticket was open and active (e.g. a device
    silent behind an offline gateway). One row per target key and source ticket; re-asserts update it."""

    __tablename__ = "inhibited_findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(200), index=True)
    site: Mapped[str] = mapped_column(String(64), index=True)
    device: Mapped[str] = mapped_column(String(64))
    family: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(16))
    level: Mapped[int] = mapped_column(Integer)
    ts: Mapped[int] = mapped_column(BigInteger)  # first inhibited finding
    last_ts: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer, default=1)
    rule: Mapped[str] = mapped_column(String(200))  # the inhibition rule's name
    source_ticket_id: Mapped[int] = mapped_column(Integer, index=True)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    resolved_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    resolution: Mapped[str | None] = mapped_column(String(32), nullable=True)  # source_cleared | target_cleared


HEALTH_STATES = ("ok", "off", "silent", "faulty", "inhibited")


class DeviceHealth(Base):
    """The latest health state of each device (``device.health`` findings); never a ticket nor an alert."""

    __tablename__ = "device_health"

    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    device: Mapped[str] = mapped_column(String(64), primary_key=True)
    family: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    since_ms: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text, default="")
    gateway: Mapped[str | None] = mapped_column(String(64), nullable=True)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


# ------------------------------------------------------------------------------------------ organisations
ORG_KINDS = ("city", "district", "company")


class OrgUnit(Base):
    """City, district or company: one tree, so a district's figures include everything below it."""

    __tablename__ = "org_units"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("org_units.id"), nullable=True)


class Project(Base):
    """A construction project = one monitored site; ``site`` is the pipeline's site code."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    company_id: Mapped[int] = mapped_column(ForeignKey("org_units.id"), index=True)
    district_id: Mapped[int] = mapped_column(ForeignKey("org_units.id"), index=True)


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site: Mapped[str] = mapped_column(String(64), index=True)
    code: Mapped[str] = mapped_column(String(64))
    family: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200), default="")

    __table_args__ = (UniqueConstraint("site", "code", name="uq_devices_site_code"),)


ROLES = ("site_officer", "company_manager", "supervisor", "ops")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(32))
    company_id: Mapped[int | None] = mapped_column(ForeignKey("org_units.id"), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class UserSite(Base):
    """The sites a site safety officer is responsible for (their whole world in the API)."""

    __tablename__ = "user_sites"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), primary_key=True)


class ApiToken(Base):
    """Only the SHA-256 of a token is stored; the token itself is shown once, at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(200), default="")
    created_ms: Mapped[int] = mapped_column(BigInteger)
    revoked_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Attachment(Base):
    """Rectification evidence: bytes on disk (content-addressed), metadata here."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    filename: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    uploaded_by: Mapped[str] = mapped_column(String(64))
    at_ms: Mapped[int] = mapped_column(BigInteger)


class CreditDeduction(Base):
    """A credit-score deduction against a company (for a major hazard, by rule or by a supervisor)."""

    __tablename__ = "credit_deductions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    company_id: Mapped[int | None] = mapped_column(ForeignKey("org_units.id"), nullable=True, index=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), nullable=True)
    points: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(64))
    at_ms: Mapped[int] = mapped_column(BigInteger)


class AuditEvent(Base):
    """Changes outside tickets (organisations, users, tokens): who, when, what, before/after."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
