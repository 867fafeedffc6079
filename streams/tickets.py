"""Stage 3: sw.hazards → the hazard ledger (dedup, level upgrades) → alert outbox → sw.alerts.

The ledger is handed in (``app.worker`` wires the backlog): this stage knows only the three calls below. The
ticket write and the alert it announces are one database transaction on the ledger's side; a timer publishes the
outbox to ``sw.alerts`` and marks rows published only after Kafka acknowledged them. A crash in between
re-publishes, and the notifier's delivery log drops the duplicate. The timer also picks up alerts a crashed
worker committed but never published.

A database outage holds the stage, not the worker: the batch that could not be stored is retried in place with
backoff (``streams.resilience``) and its offsets are not committed until it is; the publisher timer skips its
turn while either the database or Kafka is unreachable (the rows wait in the outbox).
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, Sequence

from sitewatch.findings import Finding
from streams.pipeline import Pipeline
from streams.resilience import Quiet, describe, storage_unavailable, until_stored

log = logging.getLogger("sitewatch.tickets")

TAKE_WITHIN_S = 0.02  # a finding waits at most this long for others to share its database transaction


class TicketLedger(Protocol):
    """What this stage needs of the hazard ledger (``backlog.store.Backlog`` is one)."""

    def apply_findings(self, findings: Sequence[Finding]) -> int: ...  # alerts queued in the outbox

    def pending_alerts(self) -> list[tuple[int, dict[str, Any]]]: ...  # (outbox id, alert) not yet published

    def mark_published(self, ids: list[int]) -> None: ...


def register(pipe: Pipeline, ledger: TicketLedger) -> None:
    db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backlog-db")  # one writer: SQLite-friendly
    quiet = Quiet()

    @pipe.app.agent(pipe.hazards, name="tickets")
    async def tickets(stream):
        async for batch in stream.take(1000, within=TAKE_WITHIN_S):
            findings = [Finding.from_dict(json.loads(b)) for b in batch]
            loop = asyncio.get_running_loop()
            # the next batch (and so this batch's offset commit) waits until this one is stored
            queued = await until_stored(f"{len(findings)} finding(s)",
                                        lambda: loop.run_in_executor(db, ledger.apply_findings, findings), log)
            pipe.count("alerts_queued", queued)
            if queued:
                kick()  # the next batch does not wait for this one's Kafka acknowledgements

    publishing = asyncio.Lock()
    state: dict = {"task": None, "again": False}

    def kick() -> None:
        """Publish the outbox in the background, one publisher at a time, once more if kicked meanwhile: a
        finding that arrived while the previous batch's alerts awaited their acknowledgements used to wait for
        that round trip before its own ticket was written (the ledger hop's tail under load)."""
        t = state["task"]
        if t is None or t.done():
            state["task"] = asyncio.ensure_future(_publish_loop())
        else:
            state["again"] = True

    async def _publish_loop() -> None:
        while True:
            state["again"] = False
            await publish_safely()
            if not state["again"]:
                return

    async def publish_safely() -> None:
        """The alerts are in the outbox already: a failure here only delays them to the timer's next turn."""
        try:
            await publish_outbox()
        except Exception as e:  # noqa: BLE001 - the stage and the worker must outlive the outage
            if storage_unavailable(e):
                quiet.warn(log, "outbox", "backlog database unavailable (outbox: %s), retrying in 1 s", describe(e))
            else:
                quiet.warn(log, "outbox", "outbox not published (%s), retrying in 1 s", describe(e))
        else:
            quiet.clear(log, "outbox", "outbox publisher: database and Kafka reachable again")

    async def publish_outbox() -> None:
        async with publishing:
            loop = asyncio.get_running_loop()
            pending = await loop.run_in_executor(db, ledger.pending_alerts)
            if not pending:
                return
            # all handed to the producer first, then awaited together: one acknowledgement round trip for the lot,
            # not one per alert (a storm of alerts under load queued behind each other's round trips)
            sent = [await pipe.alerts.send(key=alert["ticket"]["dedup_key"].encode(),
                                           value=json.dumps(alert, ensure_ascii=False, separators=(",", ":")).encode())
                    for _, alert in pending]
            await asyncio.gather(*sent)  # every one acknowledged by Kafka before any row is marked published
            await loop.run_in_executor(db, ledger.mark_published, [i for i, _ in pending])
            log.info("published %d alerts", len(pending))

    # Every worker sweeps the outbox, not just Faust's leader: what a crashed worker committed but never
    # published must go out from whichever worker is alive (in the crash test, a leader-only sweep left the
    # alert unsent). Two workers publishing the same row is harmless: the delivery log drops the copy.
    @pipe.app.timer(1.0, name="outbox-publisher")
    async def outbox():
        kick()  # publish_safely never raises: an exception out of a timer would crash the worker
