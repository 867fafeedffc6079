"""Turning detector findings into tickets, idempotently.

Findings arrive at least once (Kafka redelivers after a crash), so applying the same finding twice must
change nothing: a finding older than or equal to the ticket's ``last_seen_ms`` is a replay and is ignored,
and alert ids are derived from (ticket, action, level) so the outbox refuses a second copy.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Sequence

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from backlog.models import AlertOutbox, Base, Ticket, TicketEvent
from detectors.model import Finding, Level
from sitewatch.contracts import SCHEMA_VERSION, now_ms
from sitewatch.db import make_engine

log = logging.getLogger("sitewatch.backlog")

PIPELINE_ACTOR = "pipeline"


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


class Backlog:
    def __init__(self, url: str, create: bool = True):
        self.url = url
        self.engine = make_engine(url)
        if create:
            Base.metadata.create_all(self.engine)
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    # ------------------------------------------------------------------------------------ findings
    def apply_findings(self, findings: Iterable[Finding]) -> int:
        """Apply findings in one transaction; returns how many alerts were queued in the outbox."""
        queued = 0
        with self.session.begin() as s:
            for f in sorted(findings, key=lambda f: f.ts):
                queued += self._apply(s, f)
        return queued

    def _open_ticket(self, s: Session, dedup_key: str) -> Ticket | None:
        return s.scalars(select(Ticket).where(Ticket.dedup_key == dedup_key, Ticket.status != "closed")).first()

    def _apply(self, s: Session, f: Finding) -> int:
        t = self._open_ticket(s, f.dedup_key)
        if t is None:
            if f.level == Level.CLEAR:
                return 0
            try:
                with s.begin_nested():  # savepoint: a concurrent worker may have opened it first
                    t = self._new_ticket(s, f)
            except IntegrityError:
                t = self._open_ticket(s, f.dedup_key)
                if t is None:
                    raise
            else:
                self._event(s, t, "opened", None, int(f.level), f)
                return self._queue_alert(s, t, "opened", f)
        if f.ts <= t.last_seen_ms:
            return 0  # replay of something already applied
        before = t.level
        t.last_seen_ms = f.ts
        t.last_value = f.value
        t.major = t.major or f.major
        if f.level == Level.CLEAR:
            t.level, t.active = 0, False
            self._event(s, t, "condition_cleared", before, 0, f)
            return 0
        t.count += 1
        t.level, t.active = int(f.level), True
        if abs(f.value) > abs(t.peak_value) or f.level > t.peak_level:
            t.peak_value = f.value
            t.threshold, t.rule, t.source, t.evidence = f.threshold, f.rule, f.source, f.evidence
        if f.level > t.peak_level:
            t.peak_level = int(f.level)
            self._event(s, t, "level_upgraded", before, int(f.level), f)
            return self._queue_alert(s, t, "upgraded", f)
        if before == 0:
            self._event(s, t, "condition_returned", before, int(f.level), f)
        elif f.level != before:
            self._event(s, t, "level_changed", before, int(f.level), f)
        return 0

    @staticmethod
    def _new_ticket(s: Session, f: Finding) -> Ticket:
        t = Ticket(
            dedup_key=f.dedup_key, site=f.site, device=f.device, family=f.family, kind=f.kind,
            category=f.category, status="open", level=int(f.level), peak_level=int(f.level), major=f.major,
            active=True, count=1, opened_ms=f.ts, last_seen_ms=f.ts, metric=f.metric, last_value=f.value,
            peak_value=f.value, threshold=f.threshold, rule=f.rule, source=f.source, evidence=f.evidence,
        )
        s.add(t)
        s.flush()
        return t

    @staticmethod
    def _event(s: Session, t: Ticket, action: str, from_level: int | None, to_level: int | None, f: Finding) -> None:
        s.add(TicketEvent(
            ticket_id=t.id, at_ms=now_ms(), actor=PIPELINE_ACTOR, action=action, from_level=from_level,
            to_level=to_level, detail={"reading_ts": f.ts, "value": f.value, "threshold": f.threshold, "rule": f.rule},
        ))

    @staticmethod
    def _queue_alert(s: Session, t: Ticket, action: str, f: Finding) -> int:
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
