"""Rectification evidence (photos, scans, notes) on disk, metadata and audit in the database.

Why content-addressed files under ``<root>/<ticket>/<sha256>``: an upload can never overwrite another, the
database row carries the hash so a tampered file is detectable, and the on-disk name never comes from the
user. Declared content types are checked against the file's magic bytes so a renamed executable is refused.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from backlog.authz import Actor, check
from backlog.errors import Conflict, Invalid, NotFound, TooLarge, UnsupportedType
from backlog.models import Attachment
from backlog.store import Backlog

MAGIC = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/webp": (b"RIFF",),
    "application/pdf": (b"%PDF-",),
}


def _sniff_ok(content_type: str, data: bytes) -> bool:
    if content_type == "text/plain":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return b"\x00" not in data
    return any(data.startswith(m) for m in MAGIC.get(content_type, ()))


class EvidenceStore:
    def __init__(self, backlog: Backlog, root: Path):
        self.backlog = backlog
        self.root = Path(root)

    def add(self, ticket_id: int, actor: Actor, filename: str, content_type: str, data: bytes) -> Attachment:
        b = self.backlog
        content_type = (content_type or "").split(";")[0].strip().lower()
        if len(data) == 0:
            raise Invalid("empty upload")
        if len(data) > b.policy.evidence_max_bytes:
            raise TooLarge(f"evidence larger than {b.policy.evidence_max_bytes} bytes")
        if content_type not in b.policy.evidence_types:
            raise UnsupportedType(f"content type {content_type or '(none)'} not accepted; "
                                  f"use one of {', '.join(b.policy.evidence_types)}")
        if not _sniff_ok(content_type, data):
            raise UnsupportedType(f"the file's content is not {content_type}")
        name = os.path.basename(filename or "evidence").strip()[:200] or "evidence"
        digest = hashlib.sha256(data).hexdigest()
        with b.session.begin() as s:
            t = b._locked(s, ticket_id, actor)
            check(actor, "attach", t)
            if t.status == "closed":
                raise Conflict("the ticket is closed; reopen it to add evidence")
            path = self.root / str(t.id) / digest
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                tmp = path.with_suffix(".part")
                tmp.write_bytes(data)
                tmp.replace(path)
            a = Attachment(ticket_id=t.id, filename=name, content_type=content_type, size=len(data), sha256=digest,
                           path=str(path.relative_to(self.root)), uploaded_by=actor.name, at_ms=b.clock())
            s.add(a)
            s.flush()
            b._event(s, t, "evidence_attached", t.level, t.level, actor=actor.name,
                     after={"attachment_id": a.id, "filename": name, "content_type": content_type,
                            "size": len(data), "sha256": digest})
            return a

    def read(self, ticket_id: int, attachment_id: int, actor: Actor) -> tuple[Attachment, bytes]:
        t = self.backlog.ticket(ticket_id, actor)
        check(actor, "read", t)
        with self.backlog.session() as s:
            a = s.get(Attachment, attachment_id)
            if a is None or a.ticket_id != ticket_id:
                raise NotFound(f"attachment {attachment_id} not found on ticket {ticket_id}")
        data = (self.root / a.path).read_bytes()
        if hashlib.sha256(data).hexdigest() != a.sha256:
            raise Conflict(f"attachment {a.id} on disk does not match its recorded hash")
        return a, data
