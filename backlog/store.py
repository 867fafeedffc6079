"""The backlog: turning detector findings into tickets, idempotently, and working tickets through their lifecycle.

Findings arrive at least once (Kafka redelivers after a crash), so applying the same finding twice must
change nothing: a finding older than or equal to the ticket's ``last_seen_ms`` is a replay and is ignored,
and alert ids are derived from (ticket, action, level) so the outbox refuses a second copy.

Every ledger change goes through ``_record``: the ticket row is updated and an append-only ``ticket_events``
row with who/when/what and the before/after of the changed fields is written in the same transaction.
Observation counters that change on every re-asserted finding (``count``, ``last_seen_ms``, ``last_value``,
``peak_value``) are telemetry, not ledger decisions, and are not journalled one by one.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from backlog import lifecycle, migrate
from backlog.authz import PIPELINE, Actor, check
from backlog.errors import Conflict, Invalid, NotFound
from backlog.models import (STATUSES, AlertOutbox, Attachment, CreditDeduction, OrgUnit, Project,
                            Ticket, TicketEvent)
from backlog.policy import Policy
from detectors.model import Finding, Level
from sitewatch.contracts import SCHEMA_VERSION, now_ms
from sitewatch.db import make_engine

log = logging.getLogger("sitewatch.backlog")

PIPELINE_ACTOR = "pipeline"

# Fields whose every change is journalled with before/after (see module docstring).
LEDGER_FIELDS = (
    "status", "level", "peak_level", "major", "active", "stop_work", "listed_supervision", "deadline_ms",
    "escalated_ms", "acknowledged_ms", "rectified_ms", "rectified_by", "closed_ms", "closed_by", "cleared_ms",
    "reopen_count", "reopened_from", "title", "origin",
)
WORKING_STATUSES = ("open", "acknowledged", "rectifying")  # a deadline still bites


def ticket_summary(t: Ticket) -> dict[str, Any]:
    return {
        "id": t.id,
        "dedup_key": t.dedup_key,
        "site": t.site,
        "device": t.device,
        "family": t.family,
        "kind": t.kind,
        "category": t.category,
        "status": t.status,
        "level": t.level,
        "level_label": Level(t.level).label,
        "peak_level": t.peak_level,
        "major": t.major,
        "metric": t.metric,
        "value": t.last_value,
        "peak_value": t.peak_value,
        "threshold": t.threshold,
        "rule": t.rule,
        "source": t.source,
        "count": t.count,
        "opened_ms": t.opened_ms,
        "last_seen_ms": t.last_seen_ms,
    }


def snapshot(t: Ticket, fields: Iterable[str] = LEDGER_FIELDS) -> dict[str, Any]:
    return {f: getattr(t, f) for f in fields}


class Backlog:
    """One handle on the backlog database. ``create=True`` migrates the schema to head (idempotent)."""

    def __init__(self, url: str, create: bool = True, policy: Policy | None = None,
                 clock: Callable[[], int] = now_ms):
        self.url = url
        migrate.ensure_sqlite_dir(url)
        self.engine = make_engine(url)
        if create:
            migrate.upgrade(self.engine)
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        self.policy = policy or Policy.from_env()
        self.clock = clock

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    # ------------------------------------------------------------------------------------ findings
    def apply_findings(self, findings: Iterable[Finding]) -> int:
        """Apply findings in one transaction; returns how many alerts were queued in the outbox.

        Findings are applied grouped by ticket key (then by time), so concurrent workers lock tickets in the
        same order and cannot deadlock; a serialisation/deadlock error from the database retries the batch.
        """
        batch = sorted(findings, key=lambda f: (f.dedup_key, f.ts))
        for attempt in range(5):
            try:
                queued = 0
                with self.session.begin() as s:
                    for f in batch:
                        queued += self._apply(s, f)
                return queued
            except OperationalError as e:  # deadlock / serialisation failure on PostgreSQL: retry whole batch
                if attempt == 4 or "deadlock" not in str(e).lower() and "serializ" not in str(e).lower():
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def _open_ticket(self, s: Session, dedup_key: str, lock: bool = False) -> Ticket | None:
        q = select(Ticket).where(Ticket.dedup_key == dedup_key, Ticket.status != "closed")
        if lock:
            q = q.with_for_update()  # PostgreSQL: serialise concurrent writers on one ticket (no lost count)
        return s.scalars(q).first()

    def _last_closed(self, s: Session, dedup_key: str) -> Ticket | None:
        return s.scalars(select(Ticket).where(Ticket.dedup_key == dedup_key, Ticket.status == "closed")
                         .order_by(Ticket.id.desc()).limit(1)).first()

    def _apply(self, s: Session, f: Finding) -> int:
        t = self._open_ticket(s, f.dedup_key, lock=True)
        if t is None:
            if f.level == Level.CLEAR:
                return 0
            prev = self._last_closed(s, f.dedup_key)
            if prev is not None and f.ts <= prev.last_seen_ms:
                return 0  # replay of a finding the closed ticket already had
            try:
                with s.begin_nested():  # savepoint: a concurrent worker may have opened it first
                    t = self._new_ticket(s, f, prev)
            except IntegrityError:
                t = self._open_ticket(s, f.dedup_key, lock=True)
                if t is None:
                    raise
            else:
                self._event(s, t, "opened", None, int(f.level), f, before={}, after=snapshot(t))
                if t.major:
                    self._major_effects(s, t, PIPELINE, f"rule: {f.rule}", self.policy.major_credit_points)
                return self._queue_alert(s, t, "opened", f)
        if f.ts <= t.last_seen_ms:
            return 0  # replay of something already applied
        before_level = t.level
        t.last_seen_ms = f.ts
        t.last_value = f.value
        queued = 0
        if f.level == Level.CLEAR:
            self._change(s, t, PIPELINE, "condition_cleared", f, level=0, active=False, cleared_ms=f.ts)
            return 0
        t.count += 1
        if abs(f.value) > abs(t.peak_value) or f.level > t.peak_level:
            t.peak_value = f.value
            t.threshold, t.rule, t.source, t.evidence = f.threshold, f.rule, f.source, f.evidence
        changes: dict[str, Any] = dict(level=int(f.level), active=True, cleared_ms=None)
        if f.level > t.peak_level:
            changes.update(peak_level=int(f.level),
                           deadline_ms=min(t.deadline_ms or 2**62, self.policy.deadline_ms(int(f.level), f.ts)))
            self._change(s, t, PIPELINE, "level_upgraded", f, **changes)
            queued = self._queue_alert(s, t, "upgraded", f)
        elif before_level == 0:
            if t.status == "rectified":  # the sensor says the rectification did not hold
                changes.update(status="rectifying", rectified_ms=None, rectified_by=None)
                self._change(s, t, PIPELINE, "rectification_failed", f, **changes)
            else:
                self._change(s, t, PIPELINE, "condition_returned", f, **changes)
        elif f.level != before_level:
            self._change(s, t, PIPELINE, "level_changed", f, **changes)
        if f.major and not t.major:
            self._major_effects(s, t, PIPELINE, f"rule: {f.rule}", self.policy.major_credit_points)
        return queued

    def _new_ticket(self, s: Session, f: Finding, prev: Ticket | None) -> Ticket:
        t = Ticket(
            dedup_key=f.dedup_key, site=f.site, device=f.device, family=f.family, kind=f.kind,
            category=f.category, status="open", level=int(f.level), peak_level=int(f.level), major=f.major,
            active=True, count=1, opened_ms=f.ts, last_seen_ms=f.ts, metric=f.metric, last_value=f.value,
            peak_value=f.value, threshold=f.threshold, rule=f.rule, source=f.source, evidence=f.evidence,
            origin="sensor", title=f.rule, deadline_ms=self.policy.deadline_ms(int(f.level), f.ts),
            stop_work=False, listed_supervision=False, reopened_from=prev.id if prev else None, reopen_count=0,
        )
        s.add(t)
        s.flush()
        return t

    def _event(self, s: Session, t: Ticket, action: str, from_level: int | None, to_level: int | None,
               f: Finding | None = None, *, actor: str = PIPELINE_ACTOR, before: dict | None = None,
               after: dict | None = None, **extra: Any) -> None:
        detail: dict[str, Any] = {"before": before or {}, "after": after or {}}
        if f is not None:
            detail.update(reading_ts=f.ts, value=f.value, threshold=f.threshold, rule=f.rule)
        detail.update(extra)
        s.add(TicketEvent(ticket_id=t.id, at_ms=self.clock(), actor=actor, action=action, from_level=from_level,
                          to_level=to_level, detail=detail))

    def _change(self, s: Session, t: Ticket, actor: Actor, action: str, f: Finding | None = None,
                **changes: Any) -> None:
        """Apply ``changes`` to the ticket and journal exactly what changed (before/after)."""
        extra = changes.pop("_extra", None)
        from_level = t.level
        before = {k: getattr(t, k) for k in changes if getattr(t, k) != changes[k]}
        for k, v in changes.items():
            setattr(t, k, v)
        after = {k: getattr(t, k) for k in before}
        self._event(s, t, action, from_level, t.level, f, actor=actor.name, before=before, after=after,
                    **(extra or {}))

    def _queue_alert(self, s: Session, t: Ticket, action: str, f: Finding) -> int:
        alert_id = f"t{t.id}-{action}-L{t.peak_level}"
        payload = {
            "v": SCHEMA_VERSION,
            "alert_id": alert_id,
            "action": action,
            "ticket": ticket_summary(t),
            "finding": f.to_dict(),
            "reading_ts": f.ts,
            "created_ms": now_ms(),
        }
        s.add(AlertOutbox(alert_id=alert_id, dedup_key=t.dedup_key, payload=payload, created_ms=now_ms()))
        return 1

    # ------------------------------------------------------------------------------------ major hazards
    def _company_of(self, s: Session, site: str) -> int | None:
        return s.scalar(select(Project.company_id).where(Project.site == site))

    def _major_effects(self, s: Session, t: Ticket, actor: Actor, reason: str, points: float,
                       stop_work: bool = True, listed: bool = True) -> None:
        """A 重大事故隐患: stop-work, listed supervision, and a credit deduction against the company."""
        self._change(s, t, actor, "major_flagged", major=True, stop_work=t.stop_work or stop_work,
                     listed_supervision=t.listed_supervision or listed)
        company_id = self._company_of(s, t.site)
        if points > 0:
            s.add(CreditDeduction(company_id=company_id, ticket_id=t.id, points=points, reason=reason,
                                  actor=actor.name, at_ms=self.clock()))
            self._event(s, t, "credit_deducted", t.level, t.level, actor=actor.name,
                        after={"points": points, "company_id": company_id, "reason": reason})

    # ------------------------------------------------------------------------------------ outbox
    def pending_alerts(self, limit: int = 500) -> list[tuple[int, dict[str, Any]]]:
        with self.session() as s:
            rows = s.execute(
                select(AlertOutbox.id, AlertOutbox.payload)
                .where(AlertOutbox.published_ms.is_(None))
                .order_by(AlertOutbox.id)
                .limit(limit)
            ).all()
            return [(r[0], r[1]) for r in rows]

    def mark_published(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self.session.begin() as s:
            s.execute(update(AlertOutbox).where(AlertOutbox.id.in_(ids)).values(published_ms=now_ms()))

    # ------------------------------------------------------------------------------------ reads
    def tickets(self, site: str | None = None, kind: str | None = None) -> list[Ticket]:
        with self.session() as s:
            q = select(Ticket).order_by(Ticket.id)
            if site:
                q = q.where(Ticket.site == site)
            if kind:
                q = q.where(Ticket.kind == kind)
            return list(s.scalars(q))

    def events(self, ticket_id: int) -> list[TicketEvent]:
        with self.session() as s:
            return list(s.scalars(select(TicketEvent).where(TicketEvent.ticket_id == ticket_id).order_by(TicketEvent.id)))

    def ticket(self, ticket_id: int, actor: Actor | None = None) -> Ticket:
        with self.session() as s:
            t = s.get(Ticket, ticket_id)
            if t is None or (actor is not None and not actor.sees(t.site)):
                raise NotFound(f"ticket {ticket_id} not found")  # other sites' tickets do not exist for you
            return t

    def search(self, actor: Actor, *, site: str | None = None, company: str | None = None,
               district: str | None = None, family: str | None = None, level: int | None = None,
               status: str | None = None, category: str | None = None, major: bool | None = None,
               overdue: bool | None = None, page: int = 1, page_size: int = 50) -> tuple[list[Ticket], int]:
        """Filtered, paginated ticket list, limited to what ``actor`` may see. Returns (page, total)."""
        check(actor, "read")
        if status is not None and status not in STATUSES:
            raise Invalid(f"status must be one of {', '.join(STATUSES)}")
        q = select(Ticket)
        if actor.sites is not None:
            q = q.where(Ticket.site.in_(sorted(actor.sites)))
        if site:
            q = q.where(Ticket.site == site)
        if company or district:
            q = q.join(Project, Project.site == Ticket.site)
            if company:
                q = q.where(Project.company_id == select(OrgUnit.id).where(OrgUnit.code == company).scalar_subquery())
            if district:
                q = q.where(Project.district_id == select(OrgUnit.id).where(OrgUnit.code == district).scalar_subquery())
        if family:
            q = q.where(Ticket.family == family)
        if level is not None:
            q = q.where(Ticket.peak_level == level)
        if status:
            q = q.where(Ticket.status == status)
        if category:
            q = q.where(Ticket.category == category)
        if major is not None:
            q = q.where(Ticket.major.is_(major))
        if overdue is not None:
            cond = Ticket.status.in_(WORKING_STATUSES) & (Ticket.deadline_ms < self.clock())
            q = q.where(cond if overdue else ~cond)
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            rows = list(s.scalars(q.order_by(Ticket.id.desc()).offset((page - 1) * page_size).limit(page_size)))
            return rows, total

    def attachments(self, ticket_id: int) -> list[Attachment]:
        with self.session() as s:
            return list(s.scalars(select(Attachment).where(Attachment.ticket_id == ticket_id).order_by(Attachment.id)))

    def credit_deductions(self) -> list[CreditDeduction]:
        with self.session() as s:
            return list(s.scalars(select(CreditDeduction).order_by(CreditDeduction.id)))

    # ------------------------------------------------------------------------------------ people's actions
    def _locked(self, s: Session, ticket_id: int, actor: Actor) -> Ticket:
        t = s.scalars(select(Ticket).where(Ticket.id == ticket_id).with_for_update()).first()
        if t is None or not actor.sees(t.site):
            raise NotFound(f"ticket {ticket_id} not found")
        return t

    def create_ticket(self, actor: Actor, *, site: str, family: str, kind: str, level: int, title: str,
                      device: str = "-", category: str = "hazard", major: bool = False) -> Ticket:
        """A hazard found by an inspection or self-check (no sensor sees it)."""
        if level not in (1, 2, 3):
            raise Invalid("level must be 1 (yellow), 2 (orange) or 3 (red)")
        if category not in ("hazard", "fault"):
            raise Invalid("category must be hazard or fault")
        if not actor.sees(site):
            raise NotFound(f"site {site} not found")
        probe = Ticket(site=site, category=category, major=False)
        check(actor, "create", probe)
        if major:
            check(actor, "flag_major")
        now = self.clock()
        with self.session.begin() as s:
            t = Ticket(
                dedup_key=f"{site}/{device}/{kind}", site=site, device=device, family=family, kind=kind,
                category=category, status="open", level=level, peak_level=level, major=False, active=True,
                count=1, opened_ms=now, last_seen_ms=now, metric="", last_value=0.0, peak_value=0.0,
                threshold=0.0, rule=title, source=f"inspection by {actor.name}", evidence={}, origin="inspection",
                title=title, deadline_ms=self.policy.deadline_ms(level, now), stop_work=False,
                listed_supervision=False, reopen_count=0,
            )
            try:
                with s.begin_nested():
                    s.add(t)
                    s.flush()
            except IntegrityError:
                existing = self._open_ticket(s, t.dedup_key)
                raise Conflict(f"ticket {existing.id if existing else '?'} is already open for "
                               f"{site}/{device}/{kind}") from None
            self._event(s, t, "opened", None, level, actor=actor.name, before={}, after=snapshot(t))
            if major:
                self._major_effects(s, t, actor, f"inspection: {title}", self.policy.major_credit_points)
        return t

    def acknowledge(self, ticket_id: int, actor: Actor, note: str = "") -> Ticket:
        return self._transition(ticket_id, actor, "acknowledge", note, acknowledged_ms=self.clock())

    def start_rectification(self, ticket_id: int, actor: Actor, note: str = "") -> Ticket:
        return self._transition(ticket_id, actor, "start_rectification", note)

    def rectify(self, ticket_id: int, actor: Actor, note: str, attachment_ids: Sequence[int] = ()) -> Ticket:
        """Rectification done: a note is required; attachments must already be uploaded to this ticket."""
        if not note.strip():
            raise Invalid("a rectification note is required")
        with self.session.begin() as s:
            t = self._locked(s, ticket_id, actor)
            check(actor, "rectify", t)
            found = set(s.scalars(select(Attachment.id).where(Attachment.ticket_id == t.id,
                                                              Attachment.id.in_(list(attachment_ids)))))
            missing = sorted(set(attachment_ids) - found)
            if missing:
                raise Invalid(f"attachments {missing} do not belong to ticket {t.id}")
            status = lifecycle.next_status("rectify", t.status)
            self._change(s, t, actor, "rectified", status=status, rectified_ms=self.clock(),
                         rectified_by=actor.name,
                         _extra={"note": note, "attachments": sorted(found)})
            return t

    def verify(self, ticket_id: int, actor: Actor, note: str = "", accept: bool = True) -> Ticket:
        """Re-check a rectification: accept closes the ticket, reject sends it back to rectifying."""
        with self.session.begin() as s:
            t = self._locked(s, ticket_id, actor)
            check(actor, "verify" if accept else "reject", t)
            if not accept:
                status = lifecycle.next_status("reject", t.status)
                self._change(s, t, actor, "verification_rejected", status=status, rectified_ms=None,
                             rectified_by=None, _extra={"note": note})
                return t
            status = lifecycle.next_status("verify", t.status)
            if t.rectified_by == actor.name:
                raise Conflict("the person who rectified a hazard cannot verify it; ask someone else")
            if t.origin == "sensor" and t.active and t.level > 0:
                raise Conflict(f"the sensor still reports level {t.level}; it cannot be closed while alarming")
            if t.stop_work:
                raise Conflict("stop-work is still in force; a supervisor must lift it before closing")
            self._change(s, t, actor, "closed", status=status, closed_ms=self.clock(), closed_by=actor.name,
                         _extra={"note": note})
            return t

    def reopen(self, ticket_id: int, actor: Actor, reason: str) -> Ticket:
        """回头看: a follow-up review found the hazard back; the ticket reopens with a fresh deadline."""
        if not reason.strip():
            raise Invalid("a reason is required to reopen")
        with self.session.begin() as s:
            t = self._locked(s, ticket_id, actor)
            check(actor, "reopen", t)
            status = lifecycle.next_status("reopen", t.status)
            now = self.clock()
            try:
                with s.begin_nested():
                    self._change(s, t, actor, "reopened", status=status, reopen_count=t.reopen_count + 1,
                                 closed_ms=None, closed_by=None, rectified_ms=None, rectified_by=None,
                                 acknowledged_ms=None, escalated_ms=None,
                                 deadline_ms=self.policy.deadline_ms(t.peak_level, now), _extra={"reason": reason})
                    s.flush()
            except IntegrityError:
                raise Conflict("another ticket is already open for the same site/device/kind; work that one") from None
            return t

    def flag_major(self, ticket_id: int, actor: Actor, reason: str, stop_work: bool = True,
                   listed_supervision: bool = True, credit_points: float | None = None) -> Ticket:
        """Flag a major hazard by hand (the supervisor's call)."""
        if not reason.strip():
            raise Invalid("a reason is required")
        points = self.policy.major_credit_points if credit_points is None else credit_points
        if points < 0:
            raise Invalid("credit points cannot be negative")
        with self.session.begin() as s:
            t = self._locked(s, ticket_id, actor)
            check(actor, "flag_major", t)
            if t.status == "closed":
                raise Conflict("the ticket is closed; reopen it first")
            if t.major:
                raise Conflict("the ticket is already a major hazard")
            self._major_effects(s, t, actor, reason, points, stop_work, listed_supervision)
            return t

    def lift_stop_work(self, ticket_id: int, actor: Actor, note: str) -> Ticket:
        with self.session.begin() as s:
            t = self._locked(s, ticket_id, actor)
            check(actor, "lift_stop_work", t)
            if not t.stop_work:
                raise Conflict("no stop-work order is in force on this ticket")
            self._change(s, t, actor, "stop_work_lifted", stop_work=False, _extra={"note": note})
            return t

    def _transition(self, ticket_id: int, actor: Actor, action: str, note: str, **changes: Any) -> Ticket:
        with self.session.begin() as s:
            t = self._locked(s, ticket_id, actor)
            check(actor, action, t)
            status = lifecycle.next_status(action, t.status)
            event = {"acknowledge": "acknowledged", "start_rectification": "rectification_started"}[action]
            self._change(s, t, actor, event, status=status, **changes, _extra={"note": note})
            return t

    # ------------------------------------------------------------------------------------ escalation
    def escalate_overdue(self, actor: Actor | None = None) -> list[int]:
        """Mark tickets past their deadline (not yet rectified) as escalated, once per deadline. Idempotent."""
        from backlog.authz import SYSTEM

        actor = actor or SYSTEM
        check(actor, "escalate")
        now = self.clock()
        with self.session.begin() as s:
            q = (select(Ticket).where(Ticket.status.in_(WORKING_STATUSES), Ticket.deadline_ms < now,
                                      Ticket.escalated_ms.is_(None)).order_by(Ticket.id).with_for_update())
            done = []
            for t in s.scalars(q):
                self._change(s, t, actor, "escalated", escalated_ms=now,
                             _extra={"overdue_by_ms": now - (t.deadline_ms or now)})
                done.append(t.id)
            return done
