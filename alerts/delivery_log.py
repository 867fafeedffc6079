"""Durable delivery log: every attempt and its outcome, and the idempotency guard.

An alert can reach the notifier more than once (Kafka redelivery after a restart, outbox re-publish after a
crash). ``(alert_id, receiver)`` is unique here, and a receiver that already has a ``delivered`` row is never
sent the same alert again.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from sitewatch.contracts import now_ms
from sitewatch.db import make_engine


class AlertsBase(DeclarativeBase):
    pass


class Delivery(AlertsBase):
    __tablename__ = "alert_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(120))
    receiver: Mapped[str] = mapped_column(String(120))
    channel: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    first_attempt_ms: Mapped[int] = mapped_column(BigInteger)
    delivered_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (UniqueConstraint("alert_id", "receiver", name="uq_delivery_alert_receiver"),)


class DeliveryLog:
    def __init__(self, url: str):
        self.engine = make_engine(url)
        AlertsBase.metadata.create_all(self.engine)
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    def _row(self, s, alert_id: str, receiver: str) -> Delivery | None:
        return s.scalars(select(Delivery).where(Delivery.alert_id == alert_id, Delivery.receiver == receiver)).first()

    def delivered(self, alert_id: str, receiver: str) -> bool:
        with self.session() as s:
            row = self._row(s, alert_id, receiver)
            return row is not None and row.status == "delivered"

    def record_attempt(self, alert_id: str, receiver: str, channel: str, error: str | None) -> None:
        """One attempt, one update: ``error=None`` means the receiver accepted it."""
        for _ in range(2):  # a concurrent first insert is retried as an update
            try:
                with self.session.begin() as s:
                    row = self._row(s, alert_id, receiver)
                    if row is None:
                        row = Delivery(alert_id=alert_id, receiver=receiver, channel=channel, status="pending",
                                       attempts=0, first_attempt_ms=now_ms())
                        s.add(row)
                    row.attempts += 1
                    row.last_error = error
                    if error is None:
                        row.status, row.delivered_ms = "delivered", now_ms()
                return
            except IntegrityError:
                continue

    def all(self) -> list[Delivery]:
        with self.session() as s:
            return list(s.scalars(select(Delivery).order_by(Delivery.id)))
