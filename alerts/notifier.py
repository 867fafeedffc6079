"""Deliver alerts to the right people: at least once, never twice to the same receiver, never dropped silently.

One pipeline of stages, like Alertmanager's ``notify/``::

    route → (incident: tiers told, escalation, reminders, resolution) → queue (durable, idempotent per
    item × receiver) → silence → group → quiet hours / rate limit → render → send with retry → fail over → log

``deliver(alert)`` queues an alert durably and flushes what is due; ``tick()`` (a timer in the worker) runs
escalation, red reminders and resolution notices from the ticket state, then flushes. Everything that decides
*when* reads the injected ``clock`` (seconds), so tests drive minutes of escalation without sleeping.

Delivery: a message is leased to one notifier (``claim``) while it is being sent; each channel of the
receiver is tried ``retry_attempts`` times with exponential backoff and full jitter (tenacity), then the
next channel (failover); if every channel failed, the message is retried later (durable exponential backoff,
capped). A notifier that dies mid-send loses its lease and another one resends the *same* message (same
idempotency key). The one window that can still duplicate is a crash between the provider's 2xx and our
commit: webhook receivers deduplicate by ``Idempotency-Key``; an SMS in that window may arrive twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable
from zoneinfo import ZoneInfo

from tenacity import AsyncRetrying, stop_after_attempt, wait_random_exponential

from alerts.channels import build_sender
from alerts.channels.base import close_pooled_clients
from alerts.config import AlertsConfig, Receiver
from alerts.delivery_log import Delivery, DeliveryLog, Notification
from alerts.render import Renderer
from alerts.routing import TierRef, due_now, facts, silence_matches, tiers_for
from sitewatch.tickets import TicketState

log = logging.getLogger("sitewatch.alerts")

UNROUTED = "(unrouted)"
LEASE_MARGIN_S = 5.0  # a claim is renewed before an attempt unless it outlasts the channel's timeout by this
WORKING = ("open", "acknowledged", "rectifying")


@dataclass
class ChannelOutcome:
    receiver: str
    channel: str
    ok: bool
    error: str | None = None
    attempts: int = 0
    duration_ms: int = 0


@dataclass
class Notifier:
    log_db: DeliveryLog
    config: AlertsConfig
    clock: Callable[[], float] = time.time
    ticket_state: Callable[[int], TicketState | None] | None = None
    company_of: Callable[[str], str | None] | None = None
    sender_factory: Callable = build_sender
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}")
    lease_s: float = 30.0  # renewed before every attempt
    concurrency: int = 8
    sleep: Callable[[float], Any] = asyncio.sleep

    def __post_init__(self):
        self.renderer = Renderer(self.config, self.clock)
        self._company_cache: dict[str, tuple[float, str | None]] = {}
        self.recover()

    def recover(self) -> int:
        """Take back messages a dead notifier process on this host had leased (other hosts: lease expiry)."""
        n = self.log_db.release_dead(self.owner.split(":")[0], _pid_alive)
        if n:
            log.warning("%d message(s) leased by a notifier that died are pending again", n)
        return n

    # ------------------------------------------------------------------------------------------------ helpers
    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _company(self, site: str) -> str | None:
        if self.company_of is None:
            return None
        hit = self._company_cache.get(site)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        c = self.company_of(site)
        self._company_cache[site] = (time.monotonic() + 300, c)
        return c

    def facts(self, payload: dict[str, Any]) -> dict[str, Any]:
        return facts(payload, self._company, self.config)

    def route(self, alert: dict[str, Any]) -> list[TierRef]:
        return tiers_for(self.config, self.facts(alert))

    def _group_key(self, tr: TierRef, f: dict[str, Any], item_id: str) -> str:
        by = tr.route.group_by if tr.route is not None else ["site"]
        if not by:
            return f"solo:{item_id}"
        return "|".join(f"{k}={f.get(k)}" for k in by)

    def _queue(self, payload: dict[str, Any], item_id: str, kind: str, tiers: list[TierRef], f: dict[str, Any],
               now: int) -> int:
        d = self.config.defaults
        urgent = f["level"] >= 3 or f["major"]
        queued, seen = 0, set()
        for tr in tiers:
            r = tr.route
            gw = (r.group_wait if r and r.group_wait is not None else d.group_wait)
            gi = (r.group_interval if r and r.group_interval is not None else d.group_interval)
            meta = {"route": r.name if r else "(default)", "tier": tr.id, "gw": int(gw * 1000), "gi": int(gi * 1000)}
            body = dict(payload, _meta=meta)
            if kind == "escalation":
                body["_escalation"] = {"after_s": tr.tier.after, "tier": tr.label}
            for rcv in tr.tier.receivers:
                if rcv in seen:
                    continue
                seen.add(rcv)
                if self.log_db.enqueue(item_id, rcv, kind=kind, payload=body, ticket_id=f.get("ticket_id"),
                                       group_key=self._group_key(tr, f, item_id), urgent=urgent, at_ms=now,
                                       note=f"{meta['route']} / {tr.label}"):
                    queued += 1
                    log.info("queued %s %s for %s (%s)", kind, item_id, rcv, tr.id)
        return queued

    # ------------------------------------------------------------------------------------------------ stage: route
    def ingest(self, alert: dict[str, Any]) -> int:
        """Record an alert durably and queue it for the tiers due now. Idempotent: a replay queues nothing."""
        now = self.now_ms()
        alert_id = str(alert["alert_id"])
        f = self.facts(alert)
        tid = (alert.get("ticket") or {}).get("id")
        f["ticket_id"] = tid
        tiers = tiers_for(self.config, f)
        if not tiers:
            if self.log_db.enqueue(alert_id, UNROUTED, kind="alert", payload=alert, ticket_id=tid, group_key="",
                                   urgent=False, at_ms=now, status="unrouted", note="no route matched"):
                log.warning("alert %s matched no route and there are no default_receivers", alert_id)
            return 0
        if tid is None:
            with self.log_db.unit():
                return self._queue(alert, alert_id, "alert", [t for t in tiers if due_now(t, f)], f, now)
        with self.log_db.unit():  # the incident, the items and the tiers told: one commit, all or nothing
            inc = self.log_db.upsert_incident(int(tid), alert, now)
            told = set(inc.notified or [])
            due = [tr for tr in tiers if tr.id in told or due_now(tr, f)]
            n = self._queue(alert, alert_id, "alert", due, f, now)
            self.log_db.update_incident(int(tid), add_notified=[tr.id for tr in due])
        return n

    async def deliver(self, alert: dict[str, Any]) -> int:
        """Queue one alert and send whatever is due; returns how many messages went out now."""
        self.ingest(alert)
        return await self.flush()

    # ------------------------------------------------------------------------------------------------ stage: incidents
    def _state(self, tid: int) -> TicketState | None:
        if self.ticket_state is None:
            return None
        try:
            return self.ticket_state(tid)
        except Exception as e:  # the backlog being unreachable must not stop deliveries
            log.warning("ticket state of %s unavailable: %s", tid, e)
            return None

    def escalate(self) -> int:
        """Escalation, red reminders and resolution notices for every open incident. Returns items queued."""
        if self.ticket_state is None and not any(t.after > 0 for r in self.config.routes for t in r.tiers):
            return 0  # nothing can escalate, remind or resolve (e.g. the zero-config webhook mode)
        now = self.now_ms()
        queued = 0
        for inc in self.log_db.open_incidents():
            tid = inc.ticket_id
            st = self._state(tid)
            payload = dict(inc.payload)
            ticket = dict(payload.get("ticket") or {})
            if st is not None:
                ticket.update(status=st.status, level=st.level,
                              peak_level=max(st.peak_level, ticket.get("peak_level", 0)),
                              major=st.major or bool(ticket.get("major")))
            payload["ticket"] = ticket
            f = self.facts(payload)
            f["ticket_id"] = tid
            tiers = tiers_for(self.config, f)
            told = set(inc.notified or [])
            told_tiers = [tr for tr in tiers if tr.id in told]
            # ---- resolution
            resolved = st is not None and (st.status == "closed" or not st.active)
            if resolved:
                if inc.resolved_ms is None:
                    k = inc.resolutions + 1
                    reason = "closed" if st.status == "closed" else "cleared"
                    notice = {"v": payload.get("v", 1), "alert_id": f"t{tid}-resolved-{k}", "action": "resolved",
                              "reason": reason, "ticket": ticket, "reading_ts": payload.get("reading_ts"),
                              "created_ms": now}
                    targets = [tr for tr in told_tiers if tr.route is None or tr.route.resolve_notice]
                    queued += self._queue(notice, notice["alert_id"], "resolved", targets, f, now)
                    self.log_db.update_incident(tid, resolved_ms=now, resolutions=k, done=st.status == "closed")
                elif st.status == "closed":
                    self.log_db.update_incident(tid, done=True)
                continue
            if inc.resolved_ms is not None:  # the condition came back
                self.log_db.update_incident(tid, resolved_ms=None)
            acked = st is not None and (st.acknowledged_ms is not None or st.status != "open")
            if acked and inc.acked_ms is None:
                self.log_db.update_incident(tid, acked_ms=st.acknowledged_ms or now)
            # ---- escalation: tiers not told yet whose time has come
            elapsed = now - inc.started_ms
            newly: list[TierRef] = []
            for tr in tiers:
                if tr.id in told or (tr.tier.major_only and not f["major"]):
                    continue
                if tr.tier.after == 0:
                    queued += self._queue(payload, payload["alert_id"], "alert", [tr], f, now)
                    newly.append(tr)
                elif not acked and elapsed >= tr.tier.after * 1000:
                    queued += self._queue(payload, payload["alert_id"], "escalation", [tr], f, now)
                    newly.append(tr)
                    log.info("ticket %s unacknowledged for %.0f s: escalating to %s", tid, elapsed / 1000, tr.id)
            if newly:
                self.log_db.update_incident(tid, add_notified=[tr.id for tr in newly])
                told_tiers += newly
            # ---- reminders for unresolved red
            if st is not None and f["level"] >= 3 and st.status in WORKING and told_tiers:
                everies = [tr.route.remind_red_every if tr.route and tr.route.remind_red_every is not None
                           else self.config.defaults.remind_red_every for tr in told_tiers]
                every = min(everies)
                if every > 0:
                    k = int(elapsed // (every * 1000))
                    if k >= 1:
                        rem = {"v": payload.get("v", 1), "alert_id": f"t{tid}-remind-{k}", "action": "reminder",
                               "reminder": k, "ticket": ticket, "reading_ts": payload.get("reading_ts"),
                               "created_ms": now}
                        queued += self._queue(rem, rem["alert_id"], "reminder", told_tiers, f, now)
        return queued

    async def tick(self) -> int:
        self.escalate()
        return await self.flush()

    async def aclose(self) -> None:
        """Close the HTTP connections the channels keep open on this event loop (a worker shutting down)."""
        await close_pooled_clients()

    # ------------------------------------------------------------------------------------------------ stage: group
    def _quiet_until(self, r: Receiver, at_ms: int) -> int:
        q = r.quiet_hours
        if q is None:
            return at_ms
        tz = ZoneInfo(q.tz)
        local = datetime.fromtimestamp(at_ms / 1000, tz)
        t = local.time()
        inside = (q.start <= t < q.end) if q.start < q.end else (t >= q.start or t < q.end)
        if not inside:
            return at_ms
        end = local.replace(hour=q.end.hour, minute=q.end.minute, second=0, microsecond=0)
        if end <= local:
            end += timedelta(days=1)
        return int(end.timestamp() * 1000)

    def _batch(self, now: int) -> None:
        items = self.log_db.unbatched()
        if not items:
            return
        silences = self.log_db.silences(active_at_ms=now)
        groups: dict[tuple[str, str], list[Delivery]] = defaultdict(list)
        for it in items:
            if it.receiver not in self.config.receivers:
                self.log_db.mark_items([it.id], "unrouted", note=f"receiver {it.receiver!r} is no longer configured")
                continue
            f = self.facts(it.payload or {})
            hit = next((s for s in silences if silence_matches(s.matchers, f, it.receiver)), None)
            if hit is not None:
                self.log_db.mark_items([it.id], "silenced", note=f"silence #{hit.id} by {hit.author}: {hit.reason}")
                log.info("%s for %s silenced by #%d (%s)", it.alert_id, it.receiver, hit.id, hit.reason)
                continue
            groups[(it.receiver, it.group_key or "")].append(it)
        per_receiver: dict[str, list[tuple[str, list[Delivery], bool]]] = defaultdict(list)
        for (rcv, gk), its in groups.items():
            metas = [(it.payload or {}).get("_meta", {}) for it in its]
            gw = min(m.get("gw", 0) for m in metas)
            gi = min(m.get("gi", 0) for m in metas)
            first = min(it.first_attempt_ms for it in its)
            urgent = any(it.urgent for it in its)
            due = first + gw
            if not gk.startswith("solo:") and not urgent:
                last = self.log_db.last_notification_ms(rcv, gk)
                if last is not None and last + gi > due:
                    due = last + gi
            if not urgent:
                due = self._quiet_until(self.config.receivers[rcv], due)
            if due <= now:
                per_receiver[rcv].append((gk, its, urgent))
        for rcv, ready in per_receiver.items():
            r = self.config.receivers[rcv]
            normal = [g for g in ready if not g[2]]
            for gk, its, _ in [g for g in ready if g[2]]:  # red / major: never held back
                self._make(rcv, gk, its, True, now)
            if not normal:
                continue
            if r.rate_limit is not None:
                window = int(r.rate_limit.per * 1000)
                free = r.rate_limit.max - len(self.log_db.sent_since(rcv, now - window))
                if free <= 0:
                    log.info("rate limit of %s reached: %d group(s) wait", rcv, len(normal))
                    continue
                if len(normal) > free:  # merge what would overflow into one digest
                    keep, rest = normal[: free - 1], normal[free - 1:]
                    merged = [it for _, its, _ in rest for it in its]
                    normal = keep + [("digest", merged, False)]
            for gk, its, _ in normal:
                self._make(rcv, gk, its, False, now)

    def _make(self, rcv: str, gk: str, its: list[Delivery], urgent: bool, now: int) -> None:
        ids = sorted(it.id for it in its)
        if len(its) == 1:
            key = its[0].alert_id
        else:
            key = "g-" + hashlib.sha256("|".join(sorted(it.alert_id for it in its)).encode()).hexdigest()[:24]
        nid = self.log_db.create_notification(key, rcv, gk, ids, urgent, now)
        if nid is not None and len(its) > 1:
            log.info("grouped %d items for %s (%s) into %s", len(its), rcv, gk, key)

    # ------------------------------------------------------------------------------------------------ stage: send
    async def flush(self) -> int:
        """Group what is due into messages and send every due message. Returns how many were delivered."""
        now = self.now_ms()
        self._batch(now)
        due = self.log_db.due(now)
        if not due:
            return 0
        sem = asyncio.Semaphore(self.concurrency)

        async def one(n: Notification) -> int:
            async with sem:
                at = self.now_ms()
                items = self.log_db.claim(n.id, self.owner, at, int(self.lease_s * 1000))
                if items is None:
                    return 0
                return await self._send(n, items, [at + int(self.lease_s * 1000)])

        return sum(await asyncio.gather(*(one(n) for n in due)))

    def _sms_budget(self, ch) -> int:
        limit = self.config.defaults.sms_max_chars
        p = self.config.providers.get(getattr(ch, "provider", "") or "")
        if ch.type == "sms" and p is not None and getattr(p, "sign_name", None):
            limit -= len(p.sign_name) + 2  # the provider prepends 【签名】
        return limit

    async def _try_channel(self, n: Notification, ch, items: list[Delivery], lease: list[int]) -> ChannelOutcome:
        d = self.config.defaults
        out = ChannelOutcome(n.receiver, ch.label, False)
        try:
            sender = self.sender_factory(self.config, ch)
            msg = self.renderer.render(n.key, n.receiver, [(it.alert_id, it.kind or "alert", it.payload or {})
                                                           for it in items], self._sms_budget(ch), urgent=n.urgent)
        except Exception as e:  # missing secret, bad template: this channel cannot work, try the next
            out.error = f"{type(e).__name__}: {e}"
            out.attempts = 1
            self.log_db.record_attempt_of(n, ch.label, self.now_ms(), out.error, 0)
            return out
        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(d.retry_attempts),
                                               wait=wait_random_exponential(multiplier=d.retry_backoff, max=30),
                                               sleep=self.sleep, reraise=True):
                with attempt:
                    out.attempts += 1
                    t0 = time.monotonic()
                    now = self.now_ms()
                    if now + int((ch.timeout + LEASE_MARGIN_S) * 1000) > lease[0]:
                        # the lease must outlast this attempt; the claim's fresh lease covers a first attempt
                        # without a transaction of its own
                        lease[0] = now + int((self.lease_s + ch.timeout) * 1000)
                        self.log_db.renew(n.id, self.owner, lease[0])
                    try:
                        await sender.send(msg)
                    except Exception as e:
                        err = f"{type(e).__name__}: {e}"
                        self.log_db.record_attempt_of(n, ch.label, self.now_ms(), err,
                                                      int((time.monotonic() - t0) * 1000))
                        log.warning("%s to %s via %s failed (attempt %d): %s", n.key, n.receiver, ch.label,
                                    out.attempts, err)
                        out.error = err
                        raise
                    out.duration_ms = int((time.monotonic() - t0) * 1000)
            out.ok, out.error = True, None
        except Exception:
            pass
        return out

    async def _send(self, n: Notification, items: list[Delivery], lease: list[int]) -> int:
        """``lease``: [until when (ms) the claim is ours], renewed before an attempt it would not outlast."""
        r = self.config.receivers.get(n.receiver)
        if r is None or not items:
            self.log_db.retry_later(n, self.owner, self.now_ms() + int(self.config.defaults.max_backoff * 1000))
            return 0
        for ch in r.channels:
            out = await self._try_channel(n, ch, items, lease)
            if out.ok:
                self.log_db.finish(n, self.owner, ch.label, self.now_ms(), out.duration_ms)
                log.info("%s delivered to %s via %s (%d item(s))", n.key, n.receiver, ch.label, len(items))
                return 1
        rounds = n.rounds + 1
        backoff = min(self.config.defaults.max_backoff, 5.0 * 2 ** (rounds - 1)) * random.uniform(0.5, 1.0)
        self.log_db.retry_later(n, self.owner, self.now_ms() + int(backoff * 1000))
        (log.error if rounds >= 5 else log.warning)(
            "%s to %s failed on every channel (round %d); retrying in %.0f s", n.key, n.receiver, rounds, backoff)
        return 0

    # ------------------------------------------------------------------------------------------------ test messages
    async def send_test(self, receiver: str, channel: str | None = None, actor: str = "cli") -> list[ChannelOutcome]:
        """Send a test message through each (or one) of a receiver's channels — no failover, every outcome."""
        r = self.config.receivers.get(receiver)
        if r is None:
            raise KeyError(f"no receiver named {receiver!r}")
        chans = [c for c in r.channels if channel in (None, c.label, c.type)]
        if not chans:
            raise KeyError(f"receiver {receiver!r} has no channel {channel!r}")
        now = self.now_ms()
        key = f"test-{receiver}-{now}"
        payload = {"v": 1, "alert_id": key, "action": "test", "ticket": SAMPLE_TICKET, "reading_ts": now,
                   "created_ms": now}
        outcomes = []
        d = self.config.defaults
        for ch in chans:
            out = ChannelOutcome(receiver, ch.label, False)
            try:
                sender = self.sender_factory(self.config, ch)
                msg = self.renderer.render(key, receiver, [(key, "test", payload)], self._sms_budget(ch))
                async for attempt in AsyncRetrying(stop=stop_after_attempt(d.retry_attempts),
                                                   wait=wait_random_exponential(multiplier=d.retry_backoff, max=5),
                                                   sleep=self.sleep, reraise=True):
                    with attempt:
                        out.attempts += 1
                        await sender.send(msg)
                out.ok = True
            except Exception as e:
                out.error = f"{type(e).__name__}: {e}"
            outcomes.append(out)
        self.log_db.audit(actor, "test_sent", "receiver", receiver,
                          {"key": key, "outcomes": [o.__dict__ for o in outcomes]}, now)
        return outcomes


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


SAMPLE_TICKET = {"id": 0, "dedup_key": "cz-0000/tc-01/crane.overload", "site": "cz-0000", "device": "tc-01",
                 "family": "crane", "kind": "crane.overload", "category": "hazard", "status": "open", "level": 3,
                 "level_label": "red", "peak_level": 3, "major": False, "metric": "load", "value": 10.5,
                 "peak_value": 10.5, "threshold": 10.0, "rule": "test", "source": "test", "count": 1}
