"""Stage 3: sw.hazards → the hazard ledger (dedup, level upgrades) → alert outbox → sw.alerts.

The ledger is handed in (``app.worker`` wires the backlog): this stage knows only the three calls below. The
ticket write and the alert it announces are one database transaction on the ledger's side; a timer publishes the
outbox to ``sw.alerts`` and marks rows published only after Kafka acknowledged them. A crash in between
re-publishes, and the notifier's delivery log drops the duplicate. The timer also picks up alerts a crashed
worker committed but never published.
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, Sequence

from sitewatch.findings import Finding
from streams.pipeline import Pipeline

log = logging.getLogger("sitewatch.tickets")


class TicketLedger(Protocol):
    """What this stage needs of the hazard ledger (``backlog.store.Backlog`` is one)."""

    def apply_findings(self, findings: Sequence[Finding]) -> int: ...  # alerts queued in the outbox

    def pending_alerts(self) -> list[tuple[int, dict[str, Any]]]: ...  # (outbox id, alert) not yet published

    def mark_published(self, ids: list[int]) -> None: ...


def register(pipe: Pipeline, ledger: TicketLedger) -> None:
    db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backlog-db")  # one writer: SQLite-friendly

    @pipe.app.agent(pipe.hazards, name="tickets")
    async def tickets(stream):
        async for batch in stream.take(1000, within=0.1):
            findings = [Finding.from_dict(json.loads(b)) for b in batch]
            queued = await asyncio.get_running_loop().run_in_executor(db, ledger.apply_findings, findings)
            pipe.count("alerts_queued", queued)
            if queued:
                await publish_outbox()

    publishing = asyncio.Lock()

    async def publish_outbox() -> None:
        async with publishing:
            loop = asyncio.get_running_loop()
            pending = await loop.run_in_executor(db, ledger.pending_alerts)
            if not pending:
                return
            for _, alert in pending:
                fut = await pipe.alerts.send(
                    key=alert["ticket"]["dedup_key"].encode(),
                    value=json.dumps(alert, ensure_ascii=False, separators=(",", ":")).encode(),
                )
                await fut
            await loop.run_in_executor(db, ledger.mark_published, [i for i, _ in pending])
            log.info("published %d alerts", len(pending))

    # Every worker sweeps the outbox, not just Faust's leader: what a crashed worker committed but never
    # published must go out from whichever worker is alive (in the crash test, a leader-only sweep left the
    # alert unsent). Two workers publishing the same row is harmless: the delivery log drops the copy.
    @pipe.app.timer(1.0, name="outbox-publisher")
    async def outbox():
        await publish_outbox()
