"""Signing at an interval: the process that holds the sites' private keys signs their heads and exports them.

Run it apart from the worker and the API (``sitewatch evidence checkpoint --every 300``) so the keys live on
one host only; it needs read access to the record and INSERT on ``blackbox_checkpoints``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from blackbox.checkpoints import Checkpoint, export_file, export_webhook, load_private, sign, stored
from blackbox.schema import checkpoints, entries
from blackbox.verify import verify_site
from sitewatch.contracts import now_ms

log = logging.getLogger("sitewatch.blackbox")


class Checkpointer:
    """Signs sites' heads at an interval and exports them (files and/or webhook)."""

    def __init__(self, engine: Engine, key_dir: Path, export_dir: Path | None = None, export_url: str | None = None,
                 interval_s: float = 300.0):
        self.engine = engine
        self.key_dir = Path(key_dir)
        self.export_dir = export_dir
        self.export_url = export_url
        self.interval_s = interval_s

    def _head(self, site: str):
        with self.engine.connect() as conn:
            return conn.execute(select(entries.c.seq, entries.c.hash, entries.c.at_ms)
                                .where(entries.c.site == site).order_by(entries.c.seq.desc()).limit(1)).first()

    def sites(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.scalars(select(entries.c.site).distinct().order_by(entries.c.site)))

    def checkpoint(self, site: str, now: int | None = None, force: bool = False) -> Checkpoint | None:
        """Sign ``site``'s head if due (interval passed and the head moved); None if not due. Raises if the
        entries since the previous checkpoint do not verify."""
        now = now_ms() if now is None else now
        head = self._head(site)
        if head is None:
            return None
        prev = stored(self.engine, site)
        last = prev[-1] if prev else None
        if last is not None and not force and (head.seq <= last.seq or now - last.signed_ms < self.interval_s * 1000):
            return None
        report = verify_site(self.engine, site, from_seq=(last.seq + 1) if last else None, checkpoints=(),
                             public_key=None, check_head=True)
        if not report.ok:
            raise RuntimeError(f"site {site}: the chain does not verify, refusing to sign it: {report.first}")
        cp = sign(load_private(self.key_dir, site), site, head.seq, head.hash, head.at_ms, now)
        with self.engine.begin() as conn:
            conn.execute(insert(checkpoints).values(site=site, seq=cp.seq, hash=cp.hash, signed_ms=cp.signed_ms,
                                                    key_id=cp.key_id, body=cp.body, signature=cp.signature))
        self.export(cp)
        return cp

    def run(self, sites: Iterable[str] | None = None, now: int | None = None, force: bool = False) -> list[Checkpoint]:
        """One round over ``sites`` (default: every site with entries) — call it at the interval."""
        out = []
        for site in (list(sites) if sites is not None else self.sites()):
            try:
                cp = self.checkpoint(site, now, force)
            except FileNotFoundError:
                log.error("site %s has no key in %s: its chain is not checkpointed", site, self.key_dir)
                continue
            if cp is not None:
                out.append(cp)
        return out

    def export(self, cp: Checkpoint) -> None:
        if self.export_dir is not None:
            export_file(cp, self.export_dir)
        if self.export_url:
            try:
                export_webhook(cp, self.export_url)
            except Exception as e:  # noqa: BLE001 - kept in the database; `sitewatch evidence export` re-sends
                log.error("checkpoint %s#%d not delivered to %s: %s", cp.site, cp.seq, self.export_url, e)

    def export_all(self, site: str) -> int:
        cps = stored(self.engine, site)
        for cp in cps:
            self.export(cp)
        return len(cps)
