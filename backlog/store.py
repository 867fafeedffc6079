"""The backlog: turning detector findings into tickets, idempotently, and working tickets through their lifecycle.

Findings arrive at least once (Kafka redelivers after a crash), so applying the same finding twice must
change nothing: a finding older than or equal to the ticket's ``last_seen_ms`` is a replay and is ignored,
and alert ids are derived from (ticket, action, level) so the outbox refuses a second copy.

*Late* findings (``evidence.late``: readings a gateway buffered during an outage and flushed later) are
back-dated — older than ``last_seen_ms`` by nature — so the time rule cannot tell a replay from news; their
idempotency is the ``applied_late_findings`` table (unique key + ts + level). A late episode opens a back-dated
ticket when none is open, or is merged into the open one (peak, breach times, upgrade), and never clears a ticket
that newer readings hold. Its alert is queued once per batch and ticket, after the batch, so it tells the whole
episode (peak, outage window, clear) in one message.

Inhibition (``backlog.inhibit``): a finding whose rule source (e.g. the gateway it stands behind is offline) has
an open, active ticket is not ticketed but kept in ``inhibited_findings``. ``device.health`` findings only
update ``device_health``.

Every ledger change goes through ``_record``: the ticket row is updated and an append-only ``ticket_events``
row with who/when/what and the before/after of the changed fields is written in the same transaction.
Observation counters that change on every re-asserted finding (``count``, ``last_seen_ms``, ``last_value``,
``peak_value``, ``peak_ts_ms``, ``first_breach_ms``, ``last_breach_ms``) are telemetry, not ledger decisions, and
are not journalled one by one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from backlog import lifecycle, migrate
from backlog.authz import PIPELINE, Actor, check
from backlog.errors import Conflict, Invalid, NotFound
from backlog.inhibit import Inhibitor, finding_labels, source_kinds, ticket_labels
from backlog.models import (HEALTH_STATES, STATUSES, AlertOutbox, AppliedLateFinding, Attachment, CreditDeduction,
                            DeviceHealth, InhibitedFinding, OrgUnit, Project, Ticket, TicketEvent)
from backlog.policy import Policy
from blackbox import chain as blackbox_chain, schema as blackbox_schema
from sitewatch.findings import Finding, Level
from sitewatch.tickets import TicketState
from sitewatch.contracts import SCHEMA_VERSION, now_ms
from sitewatch.db import make_engine

log = logging.getLogger("sitewatch.backlog")

PIPELINE_ACTOR = "pipeline"
RETRACT_REASON = "buffered readings show the device was measuring"

# Fields whose every change is journalled with before/after (see module docstring).
LEDGER_FIELDS = (
    "status", "level", "peak_level", "major", "active", "stop_work", "listed_supervision", "deadline_ms",
    "escalated_ms", "acknowledged_ms", "rectified_ms", "rectified_by", "closed_ms", "closed_by", "cleared_ms",
    "clear_value", "reopen_count", "reopened_from", "title", "origin", "late", "arrival_delay_s", "outage_from_ms",
    "outage_to_ms",
)
WORKING_STATUSES = ("open", "acknowledged", "rectifying")  # a deadline still bites

InhibitRules = Sequence[Any] | Callable[[str], Sequence[Any]] | None


def ticket_summary(t: Ticket) -> dict[str, Any]:
    """What an alert says about its ticket. ``value`` is the last reading the detector reported; ``peak_value``
    (at ``peak_ts_ms``) is the worst one of the episode — the figure a message leads with."""
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
        "peak_ts_ms": t.peak_ts_ms,
        "threshold": t.threshold,
        "rule": t.rule,
        "source": t.source,
        "count": t.count,
        "opened_ms": t.opened_ms,
        "last_seen_ms": t.last_seen_ms,
        "first_breach_ms": t.first_breach_ms,
        "last_breach_ms": t.last_breach_ms,
        "active": t.active,
        "cleared_ms": t.cleared_ms,
        "clear_value": t.clear_value,
        "late": bool(t.late),
        "arrival_delay_s": t.arrival_delay_s,
        "outage_from_ms": t.outage_from_ms,
        "outage_to_ms": t.outage_to_ms,
        "gateway": (t.evidence or {}).get("gateway") if isinstance(t.evidence, dict) else None,
        "rated": _rating(t.evidence),
    }


RATING_KEYS = ("rated_load_t", "breaker_rating_a", "rcd_trip_ma")


def _rating(evidence: Any) -> float | None:
    """The rating a reading is a percentage of (crane rated load, breaker rating, RCD trip current), if any."""
    if not isinstance(evidence, dict):
        return None
    for k in RATING_KEYS:
        v = evidence.get(k)
        if isinstance(v, (int, float)) and v > 0:
            return float(v)
    return None


def snapshot(t: Ticket, fields: Iterable[str] = LEDGER_FIELDS) -> dict[str, Any]:
    return {f: getattr(t, f) for f in fields}


def _ev(f: Finding) -> dict[str, Any]:
    return f.evidence if isinstance(f.evidence, dict) else {}


def _episode(f: Finding) -> dict[str, Any]:
    ep = _ev(f).get("episode")
    return ep if isinstance(ep, dict) else {}


def _cleared_by(f: Finding) -> tuple[float, int]:
    """(value, ts) of the reading that cleared the condition: ``evidence.cleared_by``, else the finding's own."""
    cb = _ev(f).get("cleared_by")
    if isinstance(cb, dict):
        return float(cb.get("value", f.value)), int(cb.get("ts", f.ts))
    return float(f.value), int(f.ts)


def _outage(f: Finding) -> tuple[int | None, int | None]:
    o = _ev(f).get("outage")
    if isinstance(o, (list, tuple)) and len(o) == 2:
        return (int(o[0]) if o[0] is not None else None), (int(o[1]) if o[1] is not None else None)
    return None, None


def _same_outage(t: Ticket, f: Finding) -> bool:
    """The late ticket's outage and the finding's overlap: one outage, seen from two flush frames (the engine
    names it from the frames it has, so its ends can differ by a frame)."""
    a1, b1 = t.outage_from_ms, t.outage_to_ms
    a2, b2 = _outage(f)
    lo1, hi1 = a1 if a1 is not None else -2**62, b1 if b1 is not None else 2**62
    lo2, hi2 = a2 if a2 is not None else -2**62, b2 if b2 is not None else 2**62
    return lo1 <= hi2 and lo2 <= hi1


def _late_detail(f: Finding) -> dict[str, Any]:
    frm, to = _outage(f)
    return {"late": True, "outage": [frm, to], "arrival_delay_s": _ev(f).get("arrival_delay_s")}


@dataclass
class _Batch:
    """Per-transaction state of ``apply_findings``: inhibitors per site and the alerts deferred to its end."""

    inhibitor: Callable[[str], Inhibitor]
    deferred: dict[int, list] = field(default_factory=dict)  # ticket id -> [ticket, action, lead finding]
    late_events: set = field(default_factory=set)

    def defer(self, t: Ticket, action: str, f: Finding) -> None:
        d = self.deferred.get(t.id)
        if d is None:
            self.deferred[t.id] = [t, action, f]
        elif f.level >= d[2].level:
            d[2] = f  # the lead finding is the worst one; an "opened" alert stays "opened"


class Backlog:
    """One handle on the backlog database. ``create=True`` migrates the schema to head (idempotent).

    ``inhibit_rules``: None → the built-in rules (``backlog.inhibit.DEFAULT_RULES``); a sequence of rules for
    every site; or a callable ``site -> rules`` (e.g. ``RuleSet.inhibit_rules``), called once per batch and site.
    """

    def __init__(self, url: str, create: bool = True, policy: Policy | None = None,
                 clock: Callable[[], int] = now_ms, inhibit_rules: InhibitRules = None):
        self.url = url
        migrate.ensure_sqlite_dir(url)
        self.engine = make_engine(url)
        if create:
            migrate.upgrade(self.engine)
            blackbox_schema.upgrade(self.engine)
        # Every finding and ticket event also goes into the site's tamper-evident record, in the same transaction
        # (blackbox.chain.stage); a handle that does not migrate records once the record's tables exist.
        self.blackbox = create or blackbox_schema.present(self.engine)
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        self.policy = policy or Policy.from_env()
        self.clock = clock
        self._rules_fn = inhibit_rules if callable(inhibit_rules) else None
        self._static_inhibitor = None if self._rules_fn else Inhibitor(inhibit_rules)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def _inhibitor_cache(self) -> Callable[[str], Inhibitor]:
        if self._rules_fn is None:
            static = self._static_inhibitor
            return lambda _site: static  # type: ignore[return-value]
        cache: dict[str, Inhibitor] = {}

        def get(site: str) -> Inhibitor:
            if site not in cache:
                try:
                    cache[site] = Inhibitor(self._rules_fn(site))  # type: ignore[misc]
                except Exception:  # noqa: BLE001 - a broken rule source must not stop ticketing
                    log.exception("inhibit rules for site %s unavailable; using the built-in rules", site)
                    cache[site] = Inhibitor(None)
            return cache[site]

        return get

    # ------------------------------------------------------------------------------------ findings
    def apply_findings(self, findings: Iterable[Finding]) -> int:
        """Apply findings in one transaction; returns how many alerts were queued in the outbox.

        Findings are applied grouped by ticket key (then by time), so concurrent workers lock tickets in the
        same order and cannot deadlock; a serialisation/deadlock error from the database retries the batch.
        Findings that can be an inhibition *source* (a gateway going offline) go first, so the devices that fell
        silent behind it in the same batch are inhibited, not ticketed.
        """
        inhibitor = self._inhibitor_cache()
        batch = sorted(findings, key=lambda f: (not inhibitor(f.site).is_source(finding_labels(f)), f.dedup_key,
                                                f.ts))
        for attempt in range(5):
            try:
                queued = 0
                ctx = _Batch(inhibitor)
                with self.session.begin() as s:
                    if self.blackbox:
                        at = self.clock()
                        blackbox_chain.stage_many(s, [blackbox_chain.NewEntry(f.site, "finding", at, f.to_dict())
                                                      for f in batch])
                    for f in batch:
                        queued += self._apply(s, f, ctx)
                    queued += self._flush_deferred(s, ctx)
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

    def _apply(self, s: Session, f: Finding, ctx: _Batch) -> int:
        if f.category == "health" or f.kind == "device.health":
            self._health(s, f)  # never a ticket nor an alert
            return 0
        ev = _ev(f)
        if f.kind == "fault.silent" and f.level == Level.CLEAR and ev.get("retracted"):
            return self._retract(s, f)
        if ev.get("late"):
            return self._apply_late(s, f, ctx)
        t = self._open_ticket(s, f.dedup_key, lock=True)
        if t is None:
            if f.level == Level.CLEAR:
                self._target_cleared(s, f)
                return 0
            prev = self._last_closed(s, f.dedup_key)
            if prev is not None and f.ts <= prev.last_seen_ms:
                return 0  # replay of a finding the closed ticket already had
            if self._inhibit(s, f, ctx):
                return 0
            t = self._open(s, f, prev)
            if t is not None:
                return self._queue_alert(s, t, "opened", f)
            t = self._open_ticket(s, f.dedup_key, lock=True)  # a concurrent worker opened it first
        if f.ts <= t.last_seen_ms:
            return 0  # replay of something already applied
        t.last_seen_ms = f.ts
        t.last_value = f.value
        if f.level == Level.CLEAR:
            self._clear(s, t, f)
            return 0
        return self._raise(s, t, f, ctx, newer=True)

    def _open(self, s: Session, f: Finding, prev: Ticket | None, late: bool = False) -> Ticket | None:
        """Open a ticket for ``f`` (journal, major effects); None if a concurrent worker opened one first."""
        try:
            with s.begin_nested():  # savepoint: a concurrent worker may have opened it first
                t = self._new_ticket(s, f, prev, late)
        except IntegrityError:
            if self._open_ticket(s, f.dedup_key) is None:
                raise
            return None
        self._event(s, t, "opened", None, int(f.level), f, before={}, after=snapshot(t),
                    **(_late_detail(f) if late else {}))
        if t.major:
            self._major_effects(s, t, PIPELINE, f"rule: {f.rule}", self.policy.major_credit_points)
        return t

    @staticmethod
    def _fold_episode(t: Ticket, f: Finding) -> bool:
        """Fold a finding and the episode it reports into the ticket's peak and breach times. A raised finding
        is itself a breach at its ``ts``; a clear contributes only its ``episode``. True: a new peak."""
        ep = _episode(f)
        raised = f.level != Level.CLEAR
        candidates = [(float(f.value), int(f.ts))] if raised else []
        if ep.get("peak") is not None:
            candidates.append((float(ep["peak"]), int(ep.get("peak_ts") or f.ts)))
        new_peak = False
        for v, ts in candidates:
            if abs(v) > abs(t.peak_value):
                t.peak_value, t.peak_ts_ms, new_peak = v, ts, True
        first = ep.get("first_breach") or (f.ts if raised else None)
        last = ep.get("last_breach") or (f.ts if raised else None)
        if first is not None:
            t.first_breach_ms = int(first) if t.first_breach_ms is None else min(t.first_breach_ms, int(first))
        if last is not None:
            t.last_breach_ms = int(last) if t.last_breach_ms is None else max(t.last_breach_ms, int(last))
        return new_peak

    def _raise(self, s: Session, t: Ticket, f: Finding, ctx: _Batch, newer: bool, late: bool = False) -> int:
        """A raised finding on an open ticket. ``newer``: it is the ticket's latest word (sets the current
        level); a late finding older than ``last_seen_ms`` only adds to the episode (peak, breach, upgrade)."""
        before_level = t.level
        t.count += 1
        new_peak = self._fold_episode(t, f)
        if f.level > t.peak_level or (new_peak and f.level == t.peak_level):
            t.threshold, t.rule, t.source, t.evidence = f.threshold, f.rule, f.source, f.evidence
        changes: dict[str, Any] = {}
        if newer:
            changes.update(level=int(f.level), active=True, cleared_ms=None, clear_value=None)
        extra = {"_extra": _late_detail(f)} if late else {}
        queued = 0
        if f.level > t.peak_level:
            changes.update(peak_level=int(f.level),
                           deadline_ms=min(t.deadline_ms or 2**62, self.policy.deadline_ms(int(f.level), f.ts)))
            self._change(s, t, PIPELINE, "level_upgraded", f, **changes, **extra)
            if late:
                ctx.defer(t, "upgraded", f)  # kept as "opened" if this batch opened the ticket: one alert
            else:
                queued = self._queue_alert(s, t, "upgraded", f)
        elif newer and before_level == 0:
            if t.status == "rectified":  # the sensor says the rectification did not hold
                changes.update(status="rectifying", rectified_ms=None, rectified_by=None)
                self._change(s, t, PIPELINE, "rectification_failed", f, **changes, **extra)
            else:
                self._change(s, t, PIPELINE, "condition_returned", f, **changes, **extra)
        elif newer and f.level != before_level:
            self._change(s, t, PIPELINE, "level_changed", f, **changes, **extra)
        if f.major and not t.major:
            self._major_effects(s, t, PIPELINE, f"rule: {f.rule}", self.policy.major_credit_points)
        return queued

    def _clear(self, s: Session, t: Ticket, f: Finding, late: bool = False) -> None:
        self._fold_episode(t, f)  # the clear reports the whole episode: its peak may be news
        value, ts = _cleared_by(f)
        self._change(s, t, PIPELINE, "condition_cleared", f, level=0, active=False, cleared_ms=ts, clear_value=value,
                     **({"_extra": _late_detail(f)} if late else {}))
        self._source_cleared(s, t, ts)

    # ------------------------------------------------------------------------------------ late findings
    def _apply_late(self, s: Session, f: Finding, ctx: _Batch) -> int:
        """A back-dated finding from readings a gateway buffered during an outage (see module docstring)."""
        try:
            with s.begin_nested():
                mark = AppliedLateFinding(dedup_key=f.dedup_key, ts=int(f.ts), level=int(f.level),
                                          applied_ms=self.clock())
                s.add(mark)
                s.flush()
        except IntegrityError:
            return 0  # already applied (a replay after a crash, or a second worker)
        t = self._open_ticket(s, f.dedup_key, lock=True)
        if t is None:
            if f.level == Level.CLEAR:
                self._target_cleared(s, f)
                return 0  # nothing open to clear (the late ticket was already worked and closed)
            if self._inhibit(s, f, ctx):
                return 0
            prev = self._last_closed(s, f.dedup_key)
            if prev is not None and f.ts <= (prev.closed_ms or prev.last_seen_ms):
                prev = None  # the episode happened before that closure: not a repeat after it
            t = self._open(s, f, prev, late=True)
            if t is not None:
                mark.ticket_id = t.id
                ctx.defer(t, "opened", f)
                return 0
            t = self._open_ticket(s, f.dedup_key, lock=True)
        mark.ticket_id = t.id
        newer = f.ts > t.last_seen_ms
        own_episode = bool(t.late) and _same_outage(t, f)
        if own_episode and f.level != Level.CLEAR and f.ts < t.opened_ms:
            # a flush delivered newest-first: the ticket opened from its later part, this is where it began
            self._change(s, t, PIPELINE, "back_dated", f, opened_ms=int(f.ts))
        if f.level != Level.CLEAR and not own_episode and (t.id, _outage(f)) not in ctx.late_events:
            ctx.late_events.add((t.id, _outage(f)))
            self._event(s, t, "late_episode", t.level, t.level, f, **_late_detail(f),
                        episode=_episode(f) or None, held_by_newer=not newer)
        if f.level == Level.CLEAR:
            value, ts = _cleared_by(f)
            if newer and t.active:
                t.last_seen_ms, t.last_value = f.ts, f.value
                self._clear(s, t, f, late=True)
            else:  # newer live readings hold the alarm: the late episode's end is history, not news
                self._fold_episode(t, f)
                self._event(s, t, "late_episode_ended", t.level, t.level, f, **_late_detail(f), clear_value=value,
                            cleared_ms=ts, last_seen_ms=t.last_seen_ms)
            return 0
        if newer:
            t.last_seen_ms, t.last_value = f.ts, f.value
        return self._raise(s, t, f, ctx, newer=newer, late=True)

    def _flush_deferred(self, s: Session, ctx: _Batch) -> int:
        """Queue the alerts of late episodes, one per ticket and batch, now that the batch told the whole story."""
        queued = 0
        for t, action, f in ctx.deferred.values():
            alert_id = f"t{t.id}-{action}-L{t.peak_level}"
            if s.scalar(select(AlertOutbox.id).where(AlertOutbox.alert_id == alert_id)) is not None:
                continue  # announced already (e.g. a live upgrade to the same level in this batch)
            queued += self._queue_alert(s, t, action, f)
        ctx.deferred.clear()
        return queued

    def _new_ticket(self, s: Session, f: Finding, prev: Ticket | None, late: bool = False) -> Ticket:
        frm, to = _outage(f) if late else (None, None)
        delay = _ev(f).get("arrival_delay_s") if late else None
        t = Ticket(
            dedup_key=f.dedup_key, site=f.site, device=f.device, family=f.family, kind=f.kind,
            category=f.category, status="open", level=int(f.level), peak_level=int(f.level), major=f.major,
            active=True, count=1, opened_ms=f.ts, last_seen_ms=f.ts, metric=f.metric, last_value=f.value,
            peak_value=f.value, peak_ts_ms=f.ts, threshold=f.threshold, rule=f.rule, source=f.source,
            evidence=f.evidence, origin="sensor", title=f.rule,
            deadline_ms=self.policy.deadline_ms(int(f.level), f.ts), stop_work=False, listed_supervision=False,
            reopened_from=prev.id if prev else None, reopen_count=0, late=late,
            arrival_delay_s=float(delay) if isinstance(delay, (int, float)) else None,
            outage_from_ms=frm, outage_to_ms=to,
        )
        self._fold_episode(t, f)
        s.add(t)
        s.flush()
        return t

    # ------------------------------------------------------------------------------------ retracted silence
    def _retract(self, s: Session, f: Finding) -> int:
        """Buffered readings showed the device was measuring during its "silence": the silent ticket was wrong."""
        t = self._open_ticket(s, f.dedup_key, lock=True)
        if t is None:
            self._target_cleared(s, f, resolution="retracted")
            return 0
        value, ts = _cleared_by(f)
        status = lifecycle.next_status("retract", t.status)
        t.last_seen_ms = max(t.last_seen_ms, f.ts)
        self._change(s, t, PIPELINE, "retracted", f, status=status, level=0, active=False, cleared_ms=ts,
                     clear_value=value, closed_ms=self.clock(), closed_by=PIPELINE_ACTOR,
                     _extra={"reason": RETRACT_REASON, "measured_during": _ev(f).get("measured_during")})
        self._source_cleared(s, t, ts)
        return 0

    # ------------------------------------------------------------------------------------ inhibition
    def _inhibit(self, s: Session, f: Finding, ctx: _Batch) -> bool:
        """If an open, active source ticket inhibits ``f``, record it in ``inhibited_findings`` and say so."""
        inh = ctx.inhibitor(f.site)
        if not inh:
            return False
        labels = finding_labels(f)
        rules = inh.target_rules(labels)
        if not rules:
            return False
        q = select(Ticket).where(Ticket.status != "closed", Ticket.active.is_(True), Ticket.level > 0)
        if all("site" in (r.equal or ()) for r in rules):
            q = q.where(Ticket.site == f.site)
        kinds = source_kinds(inh)
        if kinds is not None:
            q = q.where(Ticket.kind.in_(sorted(kinds)))
        hit = inh.find(labels, [(t, ticket_labels(t)) for t in s.scalars(q.order_by(Ticket.id))])
        if hit is None:
            return False
        rule, src = hit
        row = s.scalars(select(InhibitedFinding).where(
            InhibitedFinding.dedup_key == f.dedup_key, InhibitedFinding.source_ticket_id == src.id,
            InhibitedFinding.resolved_ms.is_(None)).with_for_update()).first()
        if row is None:
            s.add(InhibitedFinding(dedup_key=f.dedup_key, site=f.site, device=f.device, family=f.family, kind=f.kind,
                                   category=f.category, level=int(f.level), ts=f.ts, last_ts=f.ts, count=1,
                                   rule=str(getattr(rule, "name", "") or "")[:200], source_ticket_id=src.id,
                                   evidence=f.evidence))
        elif f.ts > row.last_ts:  # a re-assert; an older or equal ts is a replay
            row.last_ts, row.level, row.evidence, row.count = f.ts, int(f.level), f.evidence, row.count + 1
        return True

    def _source_cleared(self, s: Session, t: Ticket, ts: int) -> None:
        """The ticket's condition cleared: what it inhibited is no longer inhibited."""
        s.execute(update(InhibitedFinding).where(InhibitedFinding.source_ticket_id == t.id,
                                                 InhibitedFinding.resolved_ms.is_(None))
                  .values(resolved_ms=ts, resolution="source_cleared"))

    def _target_cleared(self, s: Session, f: Finding, resolution: str = "target_cleared") -> None:
        _, ts = _cleared_by(f)
        s.execute(update(InhibitedFinding).where(InhibitedFinding.dedup_key == f.dedup_key,
                                                 InhibitedFinding.resolved_ms.is_(None))
                  .values(resolved_ms=ts, resolution=resolution))

    # ------------------------------------------------------------------------------------ device health
    def _health(self, s: Session, f: Finding) -> None:
        ev = _ev(f)
        state = ev.get("state")
        if state not in HEALTH_STATES:
            log.warning("device.health finding for %s/%s with unknown state %r ignored", f.site, f.device, state)
            return
        since = int(ev.get("since") or f.ts)
        values = dict(family=f.family, state=state, since_ms=since, reason=str(ev.get("reason") or ""),
                      gateway=ev.get("gateway"), updated_ms=int(f.ts))
        q = select(DeviceHealth).where(DeviceHealth.site == f.site, DeviceHealth.device == f.device)
        row = s.scalars(q.with_for_update()).first()
        if row is None:
            try:
                with s.begin_nested():
                    s.add(DeviceHealth(site=f.site, device=f.device, **values))
                    s.flush()
                return
            except IntegrityError:  # a concurrent worker inserted it first
                row = s.scalars(q.with_for_update()).first()
                if row is None:
                    raise
        if since < row.since_ms or (since == row.since_ms and f.ts < row.updated_ms):
            return  # older news than what is stored (out of order)
        for k, v in values.items():
            setattr(row, k, v)

    def _event(self, s: Session, t: Ticket, action: str, from_level: int | None, to_level: int | None,
               f: Finding | None = None, *, actor: str = PIPELINE_ACTOR, before: dict | None = None,
               after: dict | None = None, **extra: Any) -> None:
        detail: dict[str, Any] = {"before": before or {}, "after": after or {}}
        if f is not None:
            detail.update(reading_ts=f.ts, value=f.value, threshold=f.threshold, rule=f.rule)
        detail.update(extra)
        at = self.clock()
        s.add(TicketEvent(ticket_id=t.id, at_ms=at, actor=actor, action=action, from_level=from_level,
                          to_level=to_level, detail=detail))
        if self.blackbox:
            blackbox_chain.stage(s, t.site, "ticket", at, {"ticket": t.id, "action": action, "actor": actor,
                                                           "from_level": from_level, "to_level": to_level,
                                                           "status": t.status, "detail": detail})

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

    # ------------------------------------------------------------------------------------ readers for the notifier
    def ticket_state(self, ticket_id: int) -> TicketState | None:
        """A ticket as it stands now (acknowledged? closed? condition cleared?): the notifier escalates, reminds
        and sends resolution notices from this."""
        with self.session() as s:
            t = s.get(Ticket, ticket_id)
            if t is None:
                return None
            return TicketState(status=t.status, level=t.level, peak_level=t.peak_level, major=bool(t.major),
                               active=bool(t.active), acknowledged_ms=t.acknowledged_ms)

    def company_of(self, site: str) -> str | None:
        """The code of the company that runs ``site`` (routing by company), or None for an unknown site."""
        with self.session() as s:
            return s.scalar(select(OrgUnit.code).join(Project, Project.company_id == OrgUnit.id)
                            .where(Project.site == site))

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

    def device_health(self, actor: Actor | None = None, *, site: str | None = None,
                      state: str | None = None) -> list[DeviceHealth]:
        """Latest health per device, limited to what ``actor`` may see (like ``search``)."""
        if actor is not None:
            check(actor, "read")
        if state is not None and state not in HEALTH_STATES:
            raise Invalid(f"state must be one of {', '.join(HEALTH_STATES)}")
        q = select(DeviceHealth)
        if actor is not None and actor.sites is not None:
            q = q.where(DeviceHealth.site.in_(sorted(actor.sites)))
        if site:
            q = q.where(DeviceHealth.site == site)
        if state:
            q = q.where(DeviceHealth.state == state)
        with self.session() as s:
            return list(s.scalars(q.order_by(DeviceHealth.site, DeviceHealth.device)))

    def inhibited(self, actor: Actor | None = None, *, site: str | None = None, active: bool | None = None,
                  limit: int = 500) -> list[InhibitedFinding]:
        """Inhibited findings (newest first); ``active=True``: still inhibited (source condition present)."""
        if actor is not None:
            check(actor, "read")
        q = select(InhibitedFinding)
        if actor is not None and actor.sites is not None:
            q = q.where(InhibitedFinding.site.in_(sorted(actor.sites)))
        if site:
            q = q.where(InhibitedFinding.site == site)
        if active is not None:
            q = q.where(InhibitedFinding.resolved_ms.is_(None) if active else InhibitedFinding.resolved_ms.is_not(None))
        with self.session() as s:
            return list(s.scalars(q.order_by(InhibitedFinding.id.desc()).limit(limit)))

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
