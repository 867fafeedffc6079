"""The supervision backlog's tables (SQLAlchemy 2; SQLite embedded, PostgreSQL in production).

Why these shapes:

- One *open* ticket per ``site/device/kind`` is a database constraint (a partial unique index), not a
  check-then-insert in Python, so two workers racing on the same hazard cannot both open one.
- ``ticket_events`` is append-only: the ledger's history is never rewritten in place.
- ``alert_outbox`` is written in the same transaction as the ticket change it announces (transactional
  outbox), so a crash can neither lose the alert of a committed ticket nor announce an uncommitted one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


OPEN_STATUSES = ("open", "acknowledged", "rectifying", "rectified")


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
