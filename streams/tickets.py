"""Stage 3: sw.hazards → backlog tickets (dedup, level upgrades) → alert outbox → sw.alerts.

The ticket write and the alert it announces are one database transaction (``backlog.store``); a leader-only
timer publishes the outbox to ``sw.alerts`` and marks rows published only after Kafka acknowledged them.
A crash in between re-publishes, and the notifier's delivery log drops the duplicate.
The timer also picks up alerts a crashed worker committed but never published.

Inhibition rules (a gateway offline hides its devices' silences) come from the rules files when
``SW_RULES_PATH`` is set (``RuleSet.inhibit_rules(site)``: the global rules, then the site's own), else the
backlog's built-in defaults. They are read once at start; an unreadable rules path falls back to the defaults.
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor

from backlog.store import Backlog
from detectors.model import Finding
from streams.app import Pipeline

log = logging.getLogger("sitewatch.tickets")


def inhibit_rules(settings):
    """``site -> rules`` from the rules files, or None (the backlog's built-in defaults)."""
    path = getattr(settings, "rules_path", None)
    if not path:
        return None
    try:
        from sitewatch.rules import load_rules

        ruleset = load_rules(path)
    except Exception as e:  # noqa: BLE001 - the detect stage reports bad rules; tickets keep the defaults
        log.warning("inhibit rules: cannot load %s (%s); using the built-in rules", path, e)
        return None
    fn = getattr(ruleset, "inhibit_rules", None)
    if not callable(fn):
        return None

    def for_site(site: str):
        try:
            return fn(site=site)
        except TypeError:  # an older signature without ``site``
            return fn()

    return for_site


def register(pipe: Pipeline) -> None:
    s = pipe.settings
    backlog = Backlog(s.backlog_url, inhibit_rules=inhibit_rules(s))
    db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backlog-db")  # one writer: SQLite-friendly

    @pipe.app.agent(pipe.hazards, name="tickets")
    async def tickets(stream):
        async for batch in stream.take(1000, within=0.1):
            findings = [Finding.from_dict(json.loads(b)) for b in batch]
            queued = await asyncio.get_running_loop().run_in_executor(db, backlog.apply_findings, findings)
            pipe.count("alerts_queued", queued)
            if queued:
                await publish_outbox()

    publishing = asyncio.Lock()

    async def publish_outbox() -> None:
        async with publishing:
            loop = asyncio.get_running_loop()
            pending = await loop.run_in_executor(db, backlog.pending_alerts)
            if not pending:
                return
            for _, alert in pending:
                fut = await pipe.alerts.send(
                    key=alert["ticket"]["dedup_key"].encode(),
                    value=json.dumps(alert, ensure_ascii=False, separators=(",", ":")).encode(),
                )
                await fut
            await loop.run_in_executor(db, backlog.mark_published, [i for i, _ in pending])
            log.info("published %d alerts", len(pending))

    # Every worker sweeps the outbox, not just Faust's leader: what a crashed worker committed but never
    # published must go out from whichever worker is alive (in the crash test, a leader-only sweep left the
    # alert unsent). Two workers publishing the same row is harmless: the delivery log drops the copy.
    @pipe.app.timer(1.0, name="outbox-publisher")
    async def outbox():
        await publish_outbox()
