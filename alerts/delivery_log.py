"""Durable state of the notifier: the delivery log, the per-receiver queue, incidents, silences, the audit trail.

An alert can reach the notifier more than once (Kafka redelivery after a restart, outbox re-publish after a
crash). ``(alert_id, receiver)`` is unique in ``alert_deliveries``: one row per thing a receiver must be told
(an alert, an escalation, a reminder, a resolution notice — each has its own deterministic id), so a second
copy is refused by the database, and a receiver that already has it ``delivered`` is never sent it again.

Tables (in the backlog's database, migrated by this room's own Alembic scripts in ``alerts/migrations/`` with
their own version table, at start; tables made by ``create_all`` before that are adopted in place):

- ``alert_deliveries``    one row per (item, receiver): pending → delivered | silenced | unrouted
- ``alert_notifications`` one message to one receiver carrying one or more items (a grouped storm is one):
                          pending → sending (leased to one notifier) → delivered; retried durably with backoff
- ``alert_attempts``      every attempt on every channel, with its outcome
- ``alert_incidents``     per ticket: when it started, which tiers were told, reminders and resolution notices
- ``alert_silences``      maintenance windows (matchers, start, end, author, reason, who expired it)
- ``alert_audit``         append-only: silences added/expired, test messages sent
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable

from sqlalchemy import (JSON, BigInteger, Boolean, Integer, String, Text, UniqueConstraint, inspect, or_, select,
                        text, update)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from blackbox import chain as blackbox_chain, schema as blackbox_schema
from sitewatch.db import make_engine
from sitewatch.migrations import Migrations, ensure_sqlite_dir


class AlertsBase(DeclarativeBase):
    pass


class Delivery(AlertsBase):
    __tablename__ = "alert_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(120))  # the item id: alert id, or t{ticket}-remind-{k} etc.
    receiver: Mapped[str] = mapped_column(String(120))
    channel: Mapped[str] = mapped_column(String(32))  # the channel that delivered it ("" until then)
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | silenced | unrouted
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    first_attempt_ms: Mapped[int] = mapped_column(BigInteger)  # when it was queued
    delivered_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # added by issue 6 (nullable, so an older table is extended in place)
    kind: Mapped[str | None] = mapped_column(String(16), nullable=True)  # alert|escalation|reminder|resolved|test
    ticket_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    group_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    urgent: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # red or major: never held back
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    notification_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)  # route/tier, or the silence that held it

    __table_args__ = (UniqueConstraint("alert_id", "receiver", name="uq_delivery_alert_receiver"),)


class Notification(AlertsBase):
    __tablename__ = "alert_notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(160))  # idempotency key sent to the channel
    receiver: Mapped[str] = mapped_column(String(120))
    group_key: Mapped[str] = mapped_column(String(200), default="")
    items: Mapped[int] = mapped_column(Integer)
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | sending | delivered
    created_ms: Mapped[int] = mapped_column(BigInteger)
    next_attempt_ms: Mapped[int] = mapped_column(BigInteger)
    lease_until_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(120), nullable=True)
    rounds: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    channel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (UniqueConstraint("key", "receiver", name="uq_notification_key_receiver"),)


class Attempt(AlertsBase):
    __tablename__ = "alert_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notification_id: Mapped[int] = mapped_column(Integer, index=True)
    receiver: Mapped[str] = mapped_column(String(120))
    channel: Mapped[str] = mapped_column(String(64))
    at_ms: Mapped[int] = mapped_column(BigInteger)
    ok: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)


class Incident(AlertsBase):
    __tablename__ = "alert_incidents"

    ticket_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_ms: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # the latest alert for the ticket
    notified: Mapped[list[str]] = mapped_column(JSON, default=list)  # tier ids told so far ("route#i")
    acked_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    resolved_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    resolutions: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[bool] = mapped_column(Boolean, default=False)  # ticket closed and notice sent: stop polling
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class Silence(AlertsBase):
    __tablename__ = "alert_silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    matchers: Mapped[dict[str, Any]] = mapped_column(JSON)
    starts_ms: Mapped[int] = mapped_column(BigInteger)
    ends_ms: Mapped[int] = mapped_column(BigInteger)
    author: Mapped[str] = mapped_column(String(120))
    reason: Mapped[str] = mapped_column(Text)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    expired_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expired_by: Mapped[str | None] = mapped_column(String(120), nullable=True)

    def active(self, at_ms: int) -> bool:
        end = self.ends_ms if self.expired_ms is None else min(self.ends_ms, self.expired_ms)
        return self.starts_ms <= at_ms < end


class AuditRecord(AlertsBase):
    __tablename__ = "alert_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(32))
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


def _adopt(engine) -> None:
    """Bring alert tables made by ``create_all`` (before Alembic) to the baseline's shape before stamping it: the
    tables that did not exist yet, the nullable columns ``alert_deliveries`` gained in issue 6, the triggers."""
    AlertsBase.metadata.create_all(engine)
    have = {c["name"] for c in inspect(engine).get_columns(Delivery.__tablename__)}
    with engine.begin() as conn:
        for col in Delivery.__table__.columns:
            if col.name not in have:
                ddl = col.type.compile(dialect=engine.dialect)
                conn.execute(text(f"ALTER TABLE {Delivery.__tablename__} ADD COLUMN {col.name} {ddl}"))
        if engine.dialect.name == "sqlite":  # the PostgreSQL triggers were always there (CREATE OR REPLACE)
            for op in ("update", "delete"):
                conn.execute(text(f"CREATE TRIGGER IF NOT EXISTS alert_audit_no_{op} BEFORE {op.upper()} ON "
                                  "alert_audit BEGIN SELECT RAISE(ABORT, 'alert_audit is append-only'); END"))


MIGRATIONS = Migrations(Path(__file__).resolve().parent / "migrations", version_table="alembic_version_alerts",
                        baseline="0001_alerts", adopt_table="alert_deliveries", before_adopt=_adopt, lock_key=7406)


class DeliveryLog:
    def __init__(self, url: str):
        ensure_sqlite_dir(url)
        self.engine = make_engine(url)
        MIGRATIONS.upgrade(self.engine)
        blackbox_schema.upgrade(self.engine)  # every delivery also goes into the site's tamper-evident record
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        self._unit = threading.local()  # the transaction of ``unit()`` on this thread, if one is open

    @contextmanager
    def unit(self):
        """One transaction for every write made inside (``enqueue``, ``upsert_incident``, ``update_incident``):
        an alert's incident, its queued items and the tiers told commit together or not at all, and the worker's
        event loop pays one commit for them instead of one each. Each write is a savepoint inside it, so a
        refused duplicate (``enqueue`` returning False) rolls back that write only."""
        if getattr(self._unit, "s", None) is not None:  # nested: the outer unit commits
            yield
            return
        with self.session.begin() as s:
            self._unit.s = s
            try:
                yield
            finally:
                self._unit.s = None

    @contextmanager
    def _write(self):
        s = getattr(self._unit, "s", None)
        if s is None:
            with self.session.begin() as s:
                yield s
        else:
            with s.begin_nested():
                yield s

    # -------------------------------------------------------------------------------------------- items
    def _row(self, s, alert_id: str, receiver: str) -> Delivery | None:
        return s.scalars(select(Delivery).where(Delivery.alert_id == alert_id, Delivery.receiver == receiver)).first()

    def delivered(self, alert_id: str, receiver: str) -> bool:
        with self.session() as s:
            row = self._row(s, alert_id, receiver)
            return row is not None and row.status == "delivered"

    def item(self, alert_id: str, receiver: str) -> Delivery | None:
        with self.session() as s:
            return self._row(s, alert_id, receiver)

    def enqueue(self, item_id: str, receiver: str, *, kind: str, payload: dict[str, Any], ticket_id: int | None,
                group_key: str, urgent: bool, at_ms: int, status: str = "pending", note: str = "") -> bool:
        """Queue one item for one receiver; False if it was already there (the idempotency guard)."""
        try:
            with self._write() as s:
                s.add(Delivery(alert_id=item_id, receiver=receiver, channel="", status=status, attempts=0,
                               first_attempt_ms=at_ms, kind=kind, ticket_id=ticket_id, group_key=group_key,
                               urgent=urgent, payload=payload, note=note or None,
                               delivered_ms=None))
                s.flush()  # inside a unit: the duplicate is refused here, by this write's savepoint
            return True
        except IntegrityError:
            return False

    def unbatched(self) -> list[Delivery]:
        with self.session() as s:
            return list(s.scalars(select(Delivery).where(Delivery.status == "pending",
                                                         Delivery.notification_id.is_(None))
                                  .order_by(Delivery.id)))

    def mark_items(self, ids: Iterable[int], status: str, note: str | None = None) -> None:
        ids = list(ids)
        if not ids:
            return
        with self.session.begin() as s:
            values: dict[str, Any] = {"status": status}
            if note is not None:
                values["note"] = note
            s.execute(update(Delivery).where(Delivery.id.in_(ids), Delivery.status == "pending").values(**values))

    # -------------------------------------------------------------------------------------------- notifications
    def create_notification(self, key: str, receiver: str, group_key: str, item_ids: list[int], urgent: bool,
                            at_ms: int) -> int | None:
        """One message for ``item_ids``; None if another notifier batched (some of) them first."""
        try:
            with self.session.begin() as s:
                n = Notification(key=key, receiver=receiver, group_key=group_key, items=len(item_ids),
                                 urgent=urgent, status="pending", created_ms=at_ms, next_attempt_ms=at_ms,
                                 rounds=0, attempts=0)
                s.add(n)
                s.flush()
                res = s.execute(update(Delivery).where(Delivery.id.in_(item_ids), Delivery.notification_id.is_(None),
                                                       Delivery.status == "pending")
                                .values(notification_id=n.id))
                if res.rowcount != len(item_ids):
                    raise _Lost()
                return n.id
        except (_Lost, IntegrityError):
            return None

    def last_notification_ms(self, receiver: str, group_key: str) -> int | None:
        with self.session() as s:
            return s.scalar(select(Notification.created_ms).where(Notification.receiver == receiver,
                                                                  Notification.group_key == group_key)
                            .order_by(Notification.created_ms.desc()).limit(1))

    def sent_since(self, receiver: str, since_ms: int) -> list[int]:
        """Creation times of the receiver's messages since ``since_ms`` (for its rate limit)."""
        with self.session() as s:
            return list(s.scalars(select(Notification.created_ms).where(Notification.receiver == receiver,
                                                                        Notification.created_ms >= since_ms)
                                  .order_by(Notification.created_ms)))

    def due(self, at_ms: int) -> list[Notification]:
        with self.session() as s:
            return list(s.scalars(select(Notification).where(
                or_((Notification.status == "pending") & (Notification.next_attempt_ms <= at_ms),
                    (Notification.status == "sending") & (Notification.lease_until_ms < at_ms)))
                .order_by(Notification.urgent.desc(), Notification.id)))

    def claim(self, notification_id: int, owner: str, at_ms: int, lease_ms: int) -> list[Delivery] | None:
        """Lease one due notification to ``owner`` and read its items in the same transaction; None if it is not
        due or another notifier has it. A notifier that dies mid-send loses the lease when it ends."""
        with self.session.begin() as s:
            res = s.execute(update(Notification).where(
                Notification.id == notification_id,
                or_((Notification.status == "pending") & (Notification.next_attempt_ms <= at_ms),
                    (Notification.status == "sending") & (Notification.lease_until_ms < at_ms)))
                .values(status="sending", owner=owner, lease_until_ms=at_ms + lease_ms))
            if res.rowcount != 1:
                return None
            return list(s.scalars(select(Delivery).where(Delivery.notification_id == notification_id)
                                  .order_by(Delivery.id)))

    def renew(self, notification_id: int, owner: str, lease_until_ms: int) -> bool:
        with self.session.begin() as s:
            res = s.execute(update(Notification).where(Notification.id == notification_id,
                                                       Notification.owner == owner,
                                                       Notification.status == "sending")
                            .values(lease_until_ms=lease_until_ms))
            return res.rowcount == 1

    def release_dead(self, host: str, alive: "Callable[[int], bool]") -> int:
        """Messages leased by a notifier process on this host that no longer exists go back to pending."""
        with self.session.begin() as s:
            rows = list(s.scalars(select(Notification).where(Notification.status == "sending",
                                                             Notification.owner.like(f"{host}:%"))))
            n = 0
            for row in rows:
                try:
                    pid = int((row.owner or "").split(":")[1])
                except (IndexError, ValueError):
                    continue
                if not alive(pid):
                    row.status, row.lease_until_ms = "pending", None
                    n += 1
            return n

    def record_attempt_of(self, n: Notification, channel: str, at_ms: int, error: str | None,
                          duration_ms: int) -> None:
        with self.session.begin() as s:
            s.add(Attempt(notification_id=n.id, receiver=n.receiver, channel=channel, at_ms=at_ms,
                          ok=error is None, error=error, duration_ms=duration_ms))
            s.execute(update(Notification).where(Notification.id == n.id)
                      .values(attempts=Notification.attempts + 1, last_error=error))
            s.execute(update(Delivery).where(Delivery.notification_id == n.id)
                      .values(attempts=Delivery.attempts + 1, last_error=error))

    def finish(self, n: Notification, owner: str, channel: str, at_ms: int, duration_ms: int = 0) -> None:
        """The channel accepted it: the successful attempt and the delivered state in ONE commit, so the window
        in which a crash can still cause a resend (provider said yes, we have not recorded it) stays minimal."""
        with self.session.begin() as s:
            s.add(Attempt(notification_id=n.id, receiver=n.receiver, channel=channel, at_ms=at_ms, ok=True,
                          error=None, duration_ms=duration_ms))
            s.execute(update(Notification).where(Notification.id == n.id)
                      .values(status="delivered", channel=channel, delivered_ms=at_ms, lease_until_ms=None,
                              last_error=None, rounds=Notification.rounds + 1, attempts=Notification.attempts + 1))
            s.execute(update(Delivery).where(Delivery.notification_id == n.id)
                      .values(status="delivered", channel=channel, delivered_ms=at_ms, last_error=None,
                              attempts=Delivery.attempts + 1))
            for d in s.scalars(select(Delivery).where(Delivery.notification_id == n.id).order_by(Delivery.id)):
                site = ((d.payload or {}).get("ticket") or {}).get("site") or (d.payload or {}).get("site")
                if site:
                    blackbox_chain.stage(s, site, "delivery", at_ms, {
                        "item": d.alert_id, "kind": d.kind, "ticket": d.ticket_id, "receiver": d.receiver,
                        "channel": channel, "notification": n.id, "key": n.key})

    def retry_later(self, n: Notification, owner: str, next_ms: int) -> None:
        with self.session.begin() as s:
            s.execute(update(Notification).where(Notification.id == n.id, Notification.owner == owner)
                      .values(status="pending", next_attempt_ms=next_ms, lease_until_ms=None,
                              rounds=Notification.rounds + 1))

    def notification(self, notification_id: int) -> Notification | None:
        with self.session() as s:
            return s.get(Notification, notification_id)

    def notifications(self) -> list[Notification]:
        with self.session() as s:
            return list(s.scalars(select(Notification).order_by(Notification.id)))

    def attempts(self, limit: int = 10_000) -> list[Attempt]:
        with self.session() as s:
            return list(s.scalars(select(Attempt).order_by(Attempt.id.desc()).limit(limit)))[::-1]

    # -------------------------------------------------------------------------------------------- incidents
    def incident(self, ticket_id: int) -> Incident | None:
        with self.session() as s:
            return s.get(Incident, ticket_id)

    def open_incidents(self) -> list[Incident]:
        with self.session() as s:
            return list(s.scalars(select(Incident).where(Incident.done.is_(False)).order_by(Incident.ticket_id)))

    def upsert_incident(self, ticket_id: int, payload: dict[str, Any], at_ms: int) -> Incident:
        for _ in range(2):
            try:
                with self._write() as s:
                    inc = s.get(Incident, ticket_id)
                    if inc is None:
                        # escalation counts from when the backlog raised the alert, not from when a notifier
                        # that was down for a while first saw it
                        created = payload.get("created_ms")
                        started = min(at_ms, int(created)) if isinstance(created, (int, float)) else at_ms
                        inc = Incident(ticket_id=ticket_id, started_ms=started, payload=payload, notified=[],
                                       resolutions=0, done=False, updated_ms=at_ms)
                        s.add(inc)
                        s.flush()  # a concurrent insert is refused here, inside this write's savepoint
                    elif _newer(payload, inc.payload):
                        inc.payload = payload
                        inc.updated_ms = at_ms
                    return inc
            except IntegrityError:
                continue
        raise RuntimeError(f"could not record incident for ticket {ticket_id}")

    def update_incident(self, ticket_id: int, **values: Any) -> None:
        with self._write() as s:
            inc = s.get(Incident, ticket_id)
            if inc is None:
                return
            for k, v in values.items():
                if k == "add_notified":
                    inc.notified = sorted(set(inc.notified or []) | set(v))
                else:
                    setattr(inc, k, v)

    # -------------------------------------------------------------------------------------------- silences
    def add_silence(self, matchers: dict[str, Any], starts_ms: int, ends_ms: int, author: str, reason: str,
                    at_ms: int) -> Silence:
        with self.session.begin() as s:
            sil = Silence(matchers=matchers, starts_ms=starts_ms, ends_ms=ends_ms, author=author, reason=reason,
                          created_ms=at_ms)
            s.add(sil)
            s.flush()
            s.add(AuditRecord(at_ms=at_ms, actor=author, action="silence_added", entity="silence",
                              entity_id=str(sil.id), detail={"matchers": matchers, "starts_ms": starts_ms,
                                                             "ends_ms": ends_ms, "reason": reason}))
            return sil

    def expire_silence(self, silence_id: int, author: str, at_ms: int, reason: str = "") -> Silence | None:
        with self.session.begin() as s:
            sil = s.get(Silence, silence_id)
            if sil is None:
                return None
            if sil.expired_ms is None:
                sil.expired_ms, sil.expired_by = at_ms, author
                s.add(AuditRecord(at_ms=at_ms, actor=author, action="silence_expired", entity="silence",
                                  entity_id=str(sil.id), detail={"reason": reason}))
            return sil

    def silences(self, active_at_ms: int | None = None) -> list[Silence]:
        with self.session() as s:
            rows = list(s.scalars(select(Silence).order_by(Silence.id)))
        return rows if active_at_ms is None else [r for r in rows if r.active(active_at_ms)]

    def audit(self, actor: str, action: str, entity: str, entity_id: str, detail: dict, at_ms: int) -> None:
        with self.session.begin() as s:
            s.add(AuditRecord(at_ms=at_ms, actor=actor, action=action, entity=entity, entity_id=entity_id,
                              detail=detail))

    def audit_trail(self) -> list[AuditRecord]:
        with self.session() as s:
            return list(s.scalars(select(AuditRecord).order_by(AuditRecord.id)))

    # -------------------------------------------------------------------------------------------- reads
    def all(self) -> list[Delivery]:
        with self.session() as s:
            return list(s.scalars(select(Delivery).order_by(Delivery.id)))

    def recent(self, limit: int = 50, receiver: str | None = None) -> list[Delivery]:
        with self.session() as s:
            q = select(Delivery).order_by(Delivery.id.desc()).limit(limit)
            if receiver:
                q = q.where(Delivery.receiver == receiver)
            return list(s.scalars(q))[::-1]


class _Lost(Exception):
    pass


def _newer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Is alert ``a`` about a later state of the ticket than ``b``? (higher peak level, then later reading)"""
    ta, tb = a.get("ticket", {}), b.get("ticket", {})
    return (ta.get("peak_level", 0), a.get("reading_ts", 0)) >= (tb.get("peak_level", 0), b.get("reading_ts", 0))


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
