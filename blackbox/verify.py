"""The verifier: recompute a site's chain and name the first broken link — which row, and what kind of change.

How each tampering shows (rows read in (seq, id) order; ids grow with seq in an untouched chain, because
appenders to a site are serialised):

- **edited**    a row's content no longer matches its hash while its link to the previous row holds; or its
                content *and* hash were rewritten, so the next row still links to the old hash; or only its seq
                number was changed.
- **deleted**   a seq is missing (a gap), or the rows after a removed one were renumbered (a row's hash matches
                only a later seq), or the tail is gone (the site's head row or a checkpoint names a later seq).
- **inserted**  a second row with a seq that exists, a row whose successor links past it to the row before it,
                or rows past the head (written without going through ``append``).
- **reordered** the rows' links put them in another order than their seq numbers (seqs swapped or moved), or
                the row ids run against the seqs (contents moved between rows).
- **rewritten** the chain is consistent but disagrees with a signed checkpoint (named by its seq and time).
- **forged**    a checkpoint whose signature does not verify with the site's public key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Literal, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from blackbox.chain import GENESIS, canonical
from blackbox.checkpoints import Checkpoint, stored
from blackbox.schema import entries, heads

Change = Literal["edited", "deleted", "inserted", "reordered", "rewritten", "forged"]
_RENUMBER_SPAN = 64  # how many deleted-then-renumbered rows the classifier looks for


@dataclass(frozen=True)
class Broken:
    site: str
    seq: int
    row_id: int | None  # None when the row is gone
    change: Change
    detail: str

    def __str__(self) -> str:
        row = f"row id {self.row_id}" if self.row_id is not None else "no row"
        return f"site {self.site} seq {self.seq} ({row}): {self.change} — {self.detail}"


@dataclass
class Report:
    site: str
    entries: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoints: int = 0
    findings: list[Broken] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first(self) -> Broken | None:
        """The first broken link (lowest seq)."""
        return min(self.findings, key=lambda b: b.seq) if self.findings else None


class Row(NamedTuple):
    id: int
    seq: int
    kind: str
    at_ms: int
    payload: str
    prev: str
    hash: str


def _fits(site: str, r: Row, seq: int, prev: str | None = None) -> bool:
    """Does ``r``'s stored hash cover its content at ``seq`` after ``prev`` (default: its own stored prev)?"""
    try:
        p = bytes.fromhex(r.prev if prev is None else prev)
    except ValueError:
        return False
    return hashlib.sha256(p + canonical(site, seq, r.kind, r.at_ms, r.payload)).hexdigest() == r.hash


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _engine(url_or_engine: str | Engine) -> Engine:
    if isinstance(url_or_engine, Engine):
        return url_or_engine
    from sitewatch.db import make_engine

    return make_engine(url_or_engine)


def verify_site(url_or_engine: str | Engine, site: str, *, from_ms: int | None = None, to_ms: int | None = None,
                from_seq: int | None = None, to_seq: int | None = None, checkpoints: Iterable[Checkpoint] = (),
                public_key: Ed25519PublicKey | None = None, stored_checkpoints: bool = True,
                check_head: bool = True) -> Report:
    """Verify ``site``'s chain (or the part between the bounds) against itself, its head row and checkpoints
    (``checkpoints``: the exported copies; the database's own copies too unless ``stored_checkpoints=False``)."""
    engine = _engine(url_or_engine)
    rep = Report(site)
    with engine.connect() as conn:
        lo, hi = from_seq, to_seq
        if from_ms is not None:
            m = conn.scalar(select(func.min(entries.c.seq)).where(entries.c.site == site, entries.c.at_ms >= from_ms))
            lo = max(lo or 1, m) if m is not None else None
        if to_ms is not None:
            m = conn.scalar(select(func.max(entries.c.seq)).where(entries.c.site == site, entries.c.at_ms <= to_ms))
            hi = min(hi, m) if (hi is not None and m is not None) else m
        if (from_ms is not None and lo is None) or (to_ms is not None and hi is None):
            rep.notes.append("no entries in the given time range")
            return rep
        q = select(entries.c.id, entries.c.seq, entries.c.kind, entries.c.at_ms, entries.c.payload,
                   entries.c.prev, entries.c.hash).where(entries.c.site == site)
        if lo is not None:
            q = q.where(entries.c.seq >= lo)
        if hi is not None:
            q = q.where(entries.c.seq <= hi)
        rows = [Row(*r) for r in conn.execute(q.order_by(entries.c.seq, entries.c.id))]
        anchor = GENESIS
        start = lo or 1
        if start > 1:
            pred = conn.execute(select(entries.c.hash).where(entries.c.site == site, entries.c.seq == start - 1)
                                .order_by(entries.c.id)).first()
            if pred is not None:
                anchor = pred.hash
            elif rows:
                anchor = rows[0].prev
                rep.notes.append(f"no entry before seq {start}: the range is anchored on its first entry's link")
        head = conn.execute(select(heads.c.seq, heads.c.hash).where(heads.c.site == site)).first()
    rep.entries = len(rows)
    if rows:
        rep.first_seq, rep.last_seq = rows[0].seq, rows[-1].seq

    broken, last = _walk(site, rows, start, anchor)
    if broken is not None:
        rep.findings.append(broken)
    whole_tail = hi is None
    if broken is None and whole_tail and check_head:
        rep.findings.extend(_head_findings(site, last, head))

    cps = list(checkpoints)
    if stored_checkpoints:
        cps += stored(engine, site)
    rep.findings.extend(_checkpoint_findings(site, rows, last, cps, public_key, broken, lo, hi, rep))
    return rep


def _walk(site: str, rows: list[Row], start: int, anchor: str) -> tuple[Broken | None, Row | None]:
    """Follow the chain from ``anchor``; the first anomaly, classified, and the last row accepted before it."""
    expect, prev = start, anchor
    accepted: list[Row] = []
    for i, r in enumerate(rows):
        if r.seq == expect and r.prev == prev and _fits(site, r, expect):
            if accepted and r.id < accepted[-1].id:
                a = accepted[-1]
                return Broken(site, a.seq, a.id, "reordered",
                              f"row id {a.id} holds seq {a.seq} but was written after row id {r.id} (seq {r.seq}): "
                              "contents were moved between rows"), a
            accepted.append(r)
            expect, prev = expect + 1, r.hash
            continue
        return _classify(site, rows, i, expect, prev, accepted), (accepted[-1] if accepted else None)
    return None, (accepted[-1] if accepted else None)


def _classify(site: str, rows: list[Row], i: int, expect: int, prev: str, accepted: list[Row]) -> Broken:
    r = rows[i]
    nxt = rows[i + 1] if i + 1 < len(rows) else None
    # a second row with a seq already taken
    if r.seq < expect and accepted and r.seq == accepted[-1].seq:
        a = accepted[-1]
        return Broken(site, r.seq, r.id, "inserted", f"a second entry with seq {r.seq} (row id {r.id}) beside row "
                      f"id {a.id}, which links into the chain")
    if nxt is not None and nxt.seq == r.seq == expect:
        if nxt.prev == prev and _fits(site, nxt, expect):
            return Broken(site, r.seq, r.id, "inserted", f"a second entry with seq {r.seq} (row id {r.id}) beside "
                          f"row id {nxt.id}, which links into the chain")
        return Broken(site, nxt.seq, nxt.id, "inserted", f"a second entry with seq {nxt.seq} (row id {nxt.id}) "
                      f"beside row id {r.id}")
    # rows sitting between two rows that link to each other past them
    for back in range(len(accepted) - 1, max(-1, len(accepted) - 1 - _RENUMBER_SPAN), -1):
        if accepted[back].hash == r.prev and back < len(accepted) - 1:
            x = accepted[back + 1]
            n = len(accepted) - 1 - back
            return Broken(site, x.seq, x.id, "inserted",
                          f"{n} entr{'y' if n == 1 else 'ies'} from seq {x.seq} (row id {x.id}) sit between row id "
                          f"{accepted[back].id} and row id {r.id}, which links to it directly")
    # rows whose links put them in another order (the row found here is reached by following the links)
    later = {x.prev: x for x in reversed(rows[i:])}
    if prev in later and later[prev] is not r:
        chain, cur, pos = [], prev, expect
        while cur in later and _fits(site, later[cur], pos) and len(chain) < len(rows) - i:
            chain.append(later[cur])
            cur, pos = later[cur].hash, pos + 1
        if any(x is r for x in chain):
            q = chain[0]
            return Broken(site, expect, r.id, "reordered", f"row id {r.id} holds seq {expect}, but by the links row "
                          f"id {q.id} (stored as seq {q.seq}) belongs there")
    if nxt is not None and r.seq == expect and nxt.prev == prev:
        return Broken(site, r.seq, r.id, "inserted", f"row id {r.id} sits at seq {r.seq}, but the next entry "
                      f"(row id {nxt.id}) links past it to the entry before")
    # a gap in the seqs
    if r.seq > expect:
        if r.prev == prev and _fits(site, r, expect):
            return Broken(site, expect, r.id, "edited", f"row id {r.id} belongs at seq {expect} but its seq was "
                          f"changed to {r.seq}")
        before = f"after row id {accepted[-1].id}" if accepted else "at the start"
        missing = f"seq {expect}" if r.seq == expect + 1 else f"seqs {expect}–{r.seq - 1}"
        return Broken(site, expect, None, "deleted", f"{missing} missing {before}, before row id {r.id}")
    if r.prev == prev:  # the link holds, the content does not
        return Broken(site, r.seq, r.id, "edited", f"the {r.kind} entry at seq {r.seq} does not match its hash: "
                      "its kind, time or payload was changed")
    # rows renumbered down after a deletion
    for k in range(1, _RENUMBER_SPAN + 1):
        if _fits(site, r, expect + k):
            before = f"after row id {accepted[-1].id}" if accepted else "at the start"
            return Broken(site, expect, None, "deleted", f"{k} entr{'y' if k == 1 else 'ies'} deleted {before} and "
                          f"the rest renumbered: row id {r.id} was seq {expect + k}")
    if accepted and _fits(site, r, r.seq):
        a = accepted[-1]
        return Broken(site, a.seq, a.id, "edited", f"the {a.kind} entry at seq {a.seq} was rewritten with a new hash: "
                      f"the next entry (row id {r.id}) still links to the original")
    return Broken(site, r.seq, r.id, "edited", f"the entry at seq {r.seq} neither links to the previous entry nor "
                  "matches its hash")


def _head_findings(site: str, last: Row | None, head) -> list[Broken]:
    if head is None:
        return [] if last is None else [Broken(site, 1, None, "inserted", "entries exist but the site has no head "
                                               "row: they were not written by the record")]
    last_seq = last.seq if last is not None else 0
    if head.seq > last_seq:
        return [Broken(site, last_seq + 1, None, "deleted", f"the chain ends at seq {last_seq} but its head says "
                       f"seq {head.seq}: the entries after it were deleted")]
    if head.seq < last_seq:
        return [Broken(site, head.seq + 1, None, "inserted", f"entries past the head (seq {head.seq}) up to seq "
                       f"{last_seq} were written without going through the record")]
    if last is not None and head.hash != last.hash:
        return [Broken(site, last.seq, last.id, "rewritten", f"the head row holds another hash for seq {last.seq} "
                       "than the entry: the chain was recomputed")]
    return []


def _checkpoint_findings(site: str, rows: list[Row], last: Row | None, cps: list[Checkpoint],
                         public_key: Ed25519PublicKey | None, broken: Broken | None, lo: int | None, hi: int | None,
                         rep: Report) -> list[Broken]:
    out: list[Broken] = []
    if cps and public_key is None:
        rep.notes.append(f"{len(cps)} checkpoint(s) compared but their signatures not checked: no public key")
    by_seq: dict[int, Row] = {}
    for r in rows:
        by_seq.setdefault(r.seq, r)
    seen: set[tuple[int, str, str]] = set()
    good: Checkpoint | None = None
    rewritten = False
    for cp in sorted(cps, key=lambda c: (c.seq, c.signed_ms)):
        if (cp.seq, cp.hash, cp.signature) in seen:
            continue
        seen.add((cp.seq, cp.hash, cp.signature))
        if cp.site != site:
            continue
        rep.checkpoints += 1
        if not cp.well_formed:
            out.append(Broken(site, cp.seq, None, "forged", f"the checkpoint at seq {cp.seq} ({cp.source}) is not "
                              "a checkpoint the record wrote"))
            continue
        if public_key is not None and not cp.signed_by(public_key):
            out.append(Broken(site, cp.seq, None, "forged", f"the checkpoint at seq {cp.seq} dated "
                              f"{_when(cp.signed_ms)} ({cp.source}) is not signed by the site's key"))
            continue
        if (lo is not None and cp.seq < lo) or (hi is not None and cp.seq > hi):
            continue
        if broken is not None and cp.seq >= broken.seq:
            continue  # past the first broken link everything disagrees
        row = by_seq.get(cp.seq)
        if row is None:
            if (last is None or cp.seq > last.seq) and not any(b.change == "deleted" for b in out):
                end = last.seq if last is not None else 0
                out.append(Broken(site, end + 1, None, "deleted", f"the checkpoint signed {_when(cp.signed_ms)} "
                                  f"covers seq {cp.seq}, but the chain ends at seq {end}"))
            continue
        if row.hash != cp.hash and not rewritten:
            rewritten = True
            since = f"after seq {good.seq}, which its checkpoint confirms" if good else "from the first entry"
            out.append(Broken(site, cp.seq, row.id, "rewritten", f"the chain disagrees with the checkpoint at seq "
                              f"{cp.seq} signed {_when(cp.signed_ms)} ({cp.source}): rewritten {since}"))
        elif row.hash == cp.hash and not rewritten:
            good = cp
    return out
