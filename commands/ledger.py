"""The command ledger: every command's life, one transaction per step, each step also an entry of the site's
tamper-evident record (``blackbox`` kind ``command``) in the same transaction.

States::

    proposed ─┐                         ┌─> accepted ─> done
    requested ┴─> approved ─> sent ─────┼─> done
         │                     │  ↻ retried (same id and nonce)   └─> rejected (by the device, with its reason)
         ├─> declined          └─> escalated (a ticket; still waiting) ─> done | rejected | expired
         └─> expired (not approved in time)        sent/accepted/escalated ─> expired (no answer before expiry)

Why the ledger decides and the service only publishes: the API, the CLI and the service are separate processes
that may all touch one command; each step is a conditional update of the row, so the second of two racing
writers finds the state moved on and does nothing.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Iterable

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from backlog.authz import SYSTEM, Actor
from backlog.errors import Conflict, Invalid, NotFound
from backlog.models import DeviceHealth, Ticket
from backlog.store import Backlog
from blackbox import chain as blackbox_chain, schema as blackbox_schema
from commands import schema
from commands.policy import CommandPolicy
from commands.schema import approvals, commands, events
from sitewatch.commands import Ack, Command, canonical_json
from sitewatch.contracts import InvalidReading, check_id, now_ms

log = logging.getLogger("sitewatch.commands")

OPEN_FOR_APPROVAL = ("proposed", "requested")
AWAITING_ACK = ("sent", "accepted", "escalated")
FINAL = ("done", "rejected", "declined", "expired")
ESCALATION_KIND = "command.unanswered"
LEVEL_RANK = {"yellow": 1, "orange": 2, "red": 3}


def _json(obj: Any) -> str:
    return canonical_json(obj).decode()


class Ledger:
    """One handle on the command ledger (and the backlog it escalates into, in the same database)."""

    def __init__(self, backlog: Backlog, policy: CommandPolicy | None = None, rules=None,
                 clock: Callable[[], int] | None = None, create: bool = True):
        self.backlog = backlog
        self.engine = backlog.engine
        if create:
            schema.upgrade(self.engine)
            blackbox_schema.upgrade(self.engine)
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        self.policy = policy or CommandPolicy.from_env()
        self.rules = rules  # sitewatch.rules.RuleSet: device gateways and the proposal rules
        self.clock = clock or backlog.clock

    # -------------------------------------------------------------------------------------------- plumbing
    def _tx(self, fn: Callable[[Session], Any]) -> Any:
        """Run ``fn`` in one transaction; SQLite's "database is locked" (a writer committed between our read and
        our write) and PostgreSQL's serialisation failures are retried from the start."""
        for attempt in range(8):
            try:
                with self.session.begin() as s:
                    return fn(s)
            except OperationalError as e:
                msg = str(e).lower()
                if attempt == 7 or not ("locked" in msg or "deadlock" in msg or "serializ" in msg):
                    raise
                time.sleep(0.02 * (attempt + 1))
        raise AssertionError("unreachable")

    def _row(self, s: Session, command_id: str, lock: bool = True):
        q = select(commands).where(commands.c.id == command_id)
        if lock and self.engine.dialect.name == "postgresql":
            q = q.with_for_update()
        return s.execute(q).mappings().first()

    def _step(self, s: Session, row, action: str, actor: str, to_state: str | None = None,
              detail: dict[str, Any] | None = None, expect: Iterable[str] | None = None, **changes: Any) -> bool:
        """One step: the row's change (conditional on its state, so a racing writer's step wins once), an event
        row, and the record's entry — all in ``s``'s transaction. False if the state had moved on."""
        now = self.clock()
        frm = row["state"]
        values = dict(changes)
        if to_state is not None:
            values["state"] = to_state
        if values:
            values["updated_ms"] = now
            cond = commands.c.id == row["id"]
            states = tuple(expect) if expect is not None else (frm,)
            res = s.execute(update(commands).where(cond, commands.c.state.in_(states)).values(**values))
            if res.rowcount != 1:
                return False
        detail = detail or {}
        s.execute(insert(events).values(command_id=row["id"], at_ms=now, action=action, from_state=frm,
                                        to_state=to_state or frm, actor=actor, detail=_json(detail)))
        blackbox_chain.stage(s, row["site"], "command", now, {
            "command": row["id"], "step": action, "from": frm, "to": to_state or frm, "actor": actor,
            "target": f"{row['site']}/{row['gateway']}/{row['device']}", "action": row["action"],
            "args": json.loads(row["args"]), "detail": detail,
        })
        return True

    # -------------------------------------------------------------------------------------------- requests
    def resolve_gateway(self, s: Session, site: str, device: str, gateway: str | None) -> str:
        if gateway:
            return gateway
        if self.rules is not None:
            gw = self.rules.device_gateway(site, device)
            if gw:
                return gw
        h = s.get(DeviceHealth, (site, device))
        if h is not None and h.gateway:
            return h.gateway
        return self.policy.default_gateway

    def _family(self, s: Session, site: str, device: str, family: str | None, ticket: Ticket | None) -> str | None:
        if family:
            return family
        if ticket is not None:
            return ticket.family
        h = s.get(DeviceHealth, (site, device))
        return h.family if h is not None else None

    def request(self, actor: Actor, *, site: str, device: str, action: str, args: dict[str, Any] | None = None,
                gateway: str | None = None, family: str | None = None, ticket_id: int | None = None,
                note: str = "") -> dict[str, Any]:
        """A person asks for a command. A requester who may approve it counts as its first approval."""
        try:
            for kind, value in (("site", site), ("device", device)) + ((("gateway", gateway),) if gateway else ()):
                check_id(kind, value)
        except InvalidReading as e:
            raise Invalid(e.detail) from None
        self.policy.check_request(actor, site)
        if len(_json(args or {})) > 2048:
            raise Invalid("args too large")

        def go(s: Session) -> str:
            ticket = None
            if ticket_id is not None:
                ticket = s.get(Ticket, ticket_id)
                if ticket is None or ticket.site != site or not actor.sees(ticket.site):
                    raise NotFound(f"ticket {ticket_id} not found on site {site}")
            fam = self._family(s, site, device, family, ticket)
            pol = self.policy.action(action, fam)
            cid = Command.new(site, "x", device, action, 0, 0).id
            now = self.clock()
            row = dict(id=cid, site=site, gateway=self.resolve_gateway(s, site, device, gateway), device=device,
                       family=fam, action=action, args=_json(args or {}), dangerous=pol.dangerous,
                       approvals_needed=self.policy.approvals_needed(action), state="requested", source="request",
                       rule=None, ticket_id=ticket_id, requested_by=actor.name, requested_ms=now,
                       approval_expires_ms=now + int(self.policy.approval_ttl_s * 1000), note=note, attempts=0,
                       updated_ms=now)
            s.execute(insert(commands).values(**row))
            self._step(s, row, "requested", actor.name, detail={"note": note, "dangerous": pol.dangerous,
                                                                  "approvals_needed": row["approvals_needed"]})
            if self.policy.may_approve(actor, action):
                self._approve(s, self._row(s, cid), actor, "requester")
            return cid

        return self.get(self._tx(go))

    def approve(self, command_id: str, actor: Actor, note: str = "") -> dict[str, Any]:
        self.expire_stale()
        self._tx(lambda s: self._approve(s, self._for(s, command_id, actor), actor, note))
        return self.get(command_id)

    def decline(self, command_id: str, actor: Actor, note: str = "") -> dict[str, Any]:
        """A person with approving rights says no: the command is never sent."""

        def go(s: Session) -> None:
            row = self._for(s, command_id, actor)
            if row["state"] not in OPEN_FOR_APPROVAL:
                raise Conflict(f"command is {row['state']}, not awaiting approval")
            self.policy.check_approve(actor, row["site"], row["action"])
            self._decide(s, row, actor, "reject", note)
            self._step(s, row, "declined", actor.name, "declined", {"note": note})

        self._tx(go)
        return self.get(command_id)

    def _for(self, s: Session, command_id: str, actor: Actor):
        row = self._row(s, command_id)
        if row is None or not actor.sees(row["site"]):
            raise NotFound(f"command {command_id} not found")
        return row

    def _decide(self, s: Session, row, actor: Actor, decision: str, note: str) -> None:
        prior = s.execute(select(approvals.c.decision).where(approvals.c.command_id == row["id"],
                                                             approvals.c.actor == actor.name)).first()
        if prior is not None:
            raise Conflict(f"{actor.name} already {prior.decision}d this command; the second approver must be a "
                           "different account")
        try:
            with s.begin_nested():
                s.execute(insert(approvals).values(command_id=row["id"], actor=actor.name, role=actor.role,
                                                   decision=decision, at_ms=self.clock(), note=note))
        except IntegrityError:
            raise Conflict(f"{actor.name} already decided on this command") from None

    def _approve(self, s: Session, row, actor: Actor, note: str) -> None:
        if row["state"] not in OPEN_FOR_APPROVAL:
            raise Conflict(f"command is {row['state']}, not awaiting approval")
        if self.clock() > row["approval_expires_ms"]:
            raise Conflict("the approval window has closed")
        self.policy.check_approve(actor, row["site"], row["action"])
        self._decide(s, row, actor, "approve", note)
        n = s.execute(select(approvals.c.id).where(approvals.c.command_id == row["id"],
                                                   approvals.c.decision == "approve")).all()
        done = len(n) >= row["approvals_needed"]
        ok = self._step(s, row, "approval", actor.name, "approved" if done else None,
                        {"note": note, "approvals": len(n), "needed": row["approvals_needed"]})
        if not ok:
            raise Conflict("the command changed meanwhile; try again")

    # -------------------------------------------------------------------------------------------- proposals
    def propose_from_tickets(self) -> list[str]:
        """Open hazard tickets that a proposal rule matches become ``proposed`` commands — once per ticket and
        rule (UNIQUE(ticket, rule)); a rule the site's file marks ``auto: true`` is approved by that rule."""
        if self.rules is None:
            return []
        rules_by_kind: dict[str, list] = {}
        for site_rules in [self.rules.proposals(None)]:
            for r in site_rules:
                for k in r.kinds:
                    rules_by_kind.setdefault(k, []).append(r)
        if not rules_by_kind:
            return []
        with self.session() as s:
            tickets = s.scalars(select(Ticket).where(Ticket.kind.in_(list(rules_by_kind)), Ticket.status != "closed",
                                                     Ticket.active.is_(True), Ticket.category == "hazard")).all()
            have = {(r.ticket_id, r.rule) for r in s.execute(
                select(commands.c.ticket_id, commands.c.rule).where(commands.c.source == "proposal",
                                                                    commands.c.ticket_id.in_([t.id for t in tickets])))}
        made = []
        for t in tickets:
            for r in self.rules.proposals(t.site):
                if t.kind not in r.kinds or t.level < LEVEL_RANK[r.min_level] or (t.id, r.name) in have:
                    continue
                try:
                    cid = self._tx(lambda s, t=t, r=r: self._propose(s, t, r))
                except IntegrityError:  # another service instance proposed it first
                    continue
                except Invalid as e:  # e.g. the rule's action does not fit this device's family
                    log.error("proposal %s on ticket #%d not made: %s", r.name, t.id, e)
                    continue
                made.append(cid)
        return made

    def _propose(self, s: Session, t: Ticket, rule) -> str:
        pol = self.policy.action(rule.action, t.family)
        now = self.clock()
        cid = Command.new(t.site, "x", t.device, rule.action, 0, 0).id
        row = dict(id=cid, site=t.site, gateway=self.resolve_gateway(s, t.site, t.device, None), device=t.device,
                   family=t.family, action=rule.action, args=_json(rule.args), dangerous=pol.dangerous,
                   approvals_needed=self.policy.approvals_needed(rule.action), state="proposed", source="proposal",
                   rule=rule.name, ticket_id=t.id, requested_by=f"rule:{rule.name}", requested_ms=now,
                   approval_expires_ms=now + int(self.policy.approval_ttl_s * 1000),
                   note=f"proposed for ticket #{t.id}: {t.title}", attempts=0, updated_ms=now)
        with s.begin_nested():
            s.execute(insert(commands).values(**row))
        detail = {"ticket": t.id, "rule": rule.name, "kind": t.kind, "level": t.level, "auto": rule.auto}
        self._step(s, row, "proposed", f"rule:{rule.name}", detail=detail)
        if rule.auto:  # the site's file said so, explicitly, for this rule
            self._step(s, self._row(s, cid), "auto_approved", f"rule:{rule.name}", "approved", detail)
        return cid

    # -------------------------------------------------------------------------------------------- service side
    def expire_stale(self) -> list[str]:
        """Requests not approved in time, and sent commands not answered before their expiry."""
        now = self.clock()
        skew = self.policy.skew_ms
        with self.session() as s:
            stale = s.execute(select(commands.c.id).where(or_(
                and_(commands.c.state.in_(OPEN_FOR_APPROVAL), commands.c.approval_expires_ms < now),
                and_(commands.c.state.in_(AWAITING_ACK), commands.c.expires_ms + skew < now)))).scalars().all()
        out = []
        for cid in stale:
            def go(s: Session, cid=cid) -> bool:
                row = self._row(s, cid)
                why = "not approved in time" if row["state"] in OPEN_FOR_APPROVAL else "no answer before expiry"
                return self._step(s, row, "expired", "system", "expired", {"why": why})

            if self._tx(go):
                out.append(cid)
        return out

    def to_send(self) -> list[Command]:
        """Approved commands get their nonce and expiry now (the moment they first go out) and become ``sent``."""
        with self.session() as s:
            ids = s.execute(select(commands.c.id).where(commands.c.state == "approved")).scalars().all()
        out = []
        for cid in ids:
            def go(s: Session, cid=cid) -> Command | None:
                row = self._row(s, cid)
                now = self.clock()
                cmd = Command.new(row["site"], row["gateway"], row["device"], row["action"], now,
                                  int(self.policy.command_ttl_s * 1000), json.loads(row["args"]), id=row["id"])
                ok = self._step(s, row, "sent", "system", "sent",
                                {"attempt": 1, "nonce": cmd.nonce, "issued_ms": cmd.issued_ms,
                                 "expires_ms": cmd.expires_ms, "digest": cmd.digest()},
                                nonce=cmd.nonce, issued_ms=cmd.issued_ms, expires_ms=cmd.expires_ms, attempts=1,
                                last_sent_ms=now)
                return cmd if ok else None

            cmd = self._tx(go)
            if cmd is not None:
                out.append(cmd)
        return out

    @staticmethod
    def command_of(row) -> Command:
        """The exact command that was sent (same id, nonce, times, args): a retry is the same message."""
        return Command(id=row["id"], site=row["site"], gateway=row["gateway"], device=row["device"],
                       action=row["action"], nonce=row["nonce"], issued_ms=row["issued_ms"],
                       expires_ms=row["expires_ms"], args=json.loads(row["args"]))

    def to_retry(self) -> tuple[list[Command], list[str]]:
        """(commands to send again, commands whose retries are used up and that need escalating)."""
        now = self.clock()
        due = now - int(self.policy.retry_s * 1000)
        with self.session() as s:
            rows = s.execute(select(commands).where(commands.c.state.in_(("sent", "escalated")),
                                                    commands.c.last_sent_ms <= due,
                                                    commands.c.expires_ms > now)).mappings().all()
        resend, escalate = [], []
        for r in rows:
            if r["attempts"] <= self.policy.max_retries:
                def go(s: Session, cid=r["id"]) -> Command | None:
                    row = self._row(s, cid)
                    ok = self._step(s, row, "retried", "system", None, {"attempt": row["attempts"] + 1},
                                    expect=("sent", "escalated"), attempts=row["attempts"] + 1, last_sent_ms=now)
                    return self.command_of(row) if ok else None

                cmd = self._tx(go)
                if cmd is not None:
                    resend.append(cmd)
            elif r["escalation_ticket_id"] is None:
                escalate.append(r["id"])
        return resend, escalate

    def escalate(self, command_id: str) -> int | None:
        """Open (or find) the ticket for an unanswered command and link it — one ticket per command, never two:
        a crash between the ticket and the link finds the open ticket again instead of opening another."""
        with self.session() as s:
            row = self._row(s, command_id, lock=False)
        if row is None or row["escalation_ticket_id"] is not None or row["state"] not in ("sent",):
            return None
        level = 3 if row["dangerous"] else 2
        title = (f"{row['action']} to {row['device']} via {row['gateway']} unanswered after "
                 f"{row['attempts']} attempts (command {row['id']})")
        key = f"{row['site']}/{row['device']}/{ESCALATION_KIND}"
        existing = [t for t in self.backlog.tickets(site=row["site"], kind=ESCALATION_KIND)
                    if t.dedup_key == key and t.status != "closed"]
        if existing:
            tid = existing[0].id
        else:
            try:
                tid = self.backlog.create_ticket(SYSTEM, site=row["site"], family=row["family"] or "-",
                                                 kind=ESCALATION_KIND, level=level, title=title,
                                                 device=row["device"]).id
            except Conflict:
                tid = [t for t in self.backlog.tickets(site=row["site"], kind=ESCALATION_KIND)
                       if t.dedup_key == key and t.status != "closed"][0].id

        def go(s: Session) -> None:
            r = self._row(s, command_id)
            self._step(s, r, "escalated", "system", "escalated", {"ticket": tid, "attempts": r["attempts"]},
                       expect=("sent",), escalation_ticket_id=tid)

        self._tx(go)
        return tid

    def on_ack(self, ack: Ack, topic_site: str, topic_gateway: str, topic_device: str) -> str | None:
        """Apply a device's answer; returns the command's new state (None: not one of ours / not believable)."""
        def go(s: Session) -> str | None:
            row = self._row(s, ack.command_id)
            if row is None:
                log.warning("ack for unknown command %r on %s/%s/%s", ack.command_id, topic_site, topic_gateway,
                            topic_device)
                return None
            # The topic is what the broker vouches for (only that gateway may publish there), not the payload.
            if (row["site"], row["gateway"], row["device"]) != (topic_site, topic_gateway, topic_device) or \
                    (ack.nonce and ack.nonce != row["nonce"]):
                self._step(s, row, "ack_refused", f"gateway:{topic_gateway}", None,
                           {"why": "ack from another device or for another nonce", "status": ack.status,
                            "topic": f"{topic_site}/{topic_gateway}/{topic_device}"})
                return None
            detail = {"status": ack.status, "reason": ack.reason, "device_ms": ack.at_ms}
            actor = f"device:{topic_device}"
            target = {"accepted": "accepted", "done": "done", "rejected": "rejected"}[ack.status]
            if row["state"] in FINAL or (row["state"] == "accepted" and target == "accepted") \
                    or row["state"] not in AWAITING_ACK:
                self._step(s, row, "late_ack", actor, None, detail)  # recorded, changes nothing
                return row["state"]
            self._step(s, row, f"ack_{ack.status}", actor, target, detail, ack_status=ack.status,
                       ack_reason=ack.reason, acked_ms=self.clock())
            return target

        return self._tx(go)

    # -------------------------------------------------------------------------------------------- reads
    def get(self, command_id: str, actor: Actor | None = None) -> dict[str, Any]:
        with self.session() as s:
            row = s.execute(select(commands).where(commands.c.id == command_id)).mappings().first()
            if row is None or (actor is not None and not actor.sees(row["site"])):
                raise NotFound(f"command {command_id} not found")
            out = dict(row)
            out["args"] = json.loads(out["args"])
            out["approvals"] = [dict(a) for a in s.execute(
                select(approvals).where(approvals.c.command_id == command_id).order_by(approvals.c.id)).mappings()]
            out["events"] = [{**dict(e), "detail": json.loads(e["detail"])} for e in s.execute(
                select(events).where(events.c.command_id == command_id).order_by(events.c.id)).mappings()]
        return out

    def list(self, actor: Actor | None = None, site: str | None = None, state: str | None = None,
             limit: int = 200) -> list[dict[str, Any]]:
        q = select(commands).order_by(commands.c.requested_ms.desc()).limit(limit)
        if site:
            q = q.where(commands.c.site == site)
        if state:
            q = q.where(commands.c.state == state)
        if actor is not None and actor.sites is not None:
            q = q.where(commands.c.site.in_(sorted(actor.sites)))
        with self.session() as s:
            rows = [dict(r) for r in s.execute(q).mappings()]
        for r in rows:
            r["args"] = json.loads(r["args"])
        return rows

