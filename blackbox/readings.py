"""Reading batches as record entries: per site, how many readings arrived, their time range and a digest.

A ``readings`` entry covers what one worker received for one site during one window (``every_s``; 0: every
worker batch). The digest lets anyone holding the readings (Kafka ``sw.readings``, a Parquet recording) show
that exactly these readings, in this order, were received — recipe ``sw-readings-v1``:

    sha256( b"sw-readings-v1\\n" + for each chunk: len(c).to_bytes(8, "big") + c )
    c = "\\x1f".join(devices).encode() + b"\\n" + "\\x1f".join(metrics).encode() + b"\\n"
        + ts as little-endian int64 + value as little-endian float64

A chunk is the site's readings of one worker batch in arrival order; the payload lists the chunk sizes, so the
readings can be cut back into chunks. Ids cannot contain ``\\x1f`` or newlines (``sitewatch.contracts``).

Why columns, not the raw Kafka records: a ``sw.readings`` record carries every site of a partition, so a site's
digest over raw records would hash (and disclose) its neighbours' readings too. The grouping is numpy over the
dictionary-encoded batch (``devs`` + ``d``), so the per-reading cost is a few array operations, not Python.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from blackbox.chain import NewEntry, Recorder

ALG = "sw-readings-v1"


@dataclass
class _Site:
    hasher: Any = field(default_factory=lambda: hashlib.sha256(b"sw-readings-v1\n"))
    chunks: list[int] = field(default_factory=list)
    ts_min: int = 0
    ts_max: int = 0


def chunk_bytes(devices: Sequence[str], metrics: Sequence[str], ts: np.ndarray, value: np.ndarray) -> bytes:
    """One chunk of the digest (the recipe in the module docstring), for a verifier recomputing it."""
    return ("\x1f".join(devices).encode() + b"\n" + "\x1f".join(metrics).encode() + b"\n"
            + np.asarray(ts).astype("<i8").tobytes() + np.asarray(value).astype("<f8").tobytes())


def readings_digest(chunks: Sequence[bytes]) -> str:
    h = hashlib.sha256(b"sw-readings-v1\n")
    for c in chunks:
        h.update(len(c).to_bytes(8, "big"))
        h.update(c)
    return h.hexdigest()


class ReadingLog:
    """Accumulates reading batches per site and turns them into ``readings`` entries once per window."""

    def __init__(self, recorder: Recorder | None = None, every_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, extra: dict[str, Any] | None = None):
        self.recorder = recorder
        self.every_s = every_s
        self.clock = clock
        self.extra = dict(extra or {})
        self.sites: dict[str, _Site] = {}
        self.since: float | None = None

    def add(self, devs: Sequence[Sequence[Any]], d: np.ndarray, metric: np.ndarray, ts: np.ndarray,
            value: np.ndarray) -> None:
        """One worker batch, dictionary-encoded as ``sitewatch.contracts.ReadingsBatch`` is: ``devs[k]`` =
        (site, device, …) and ``d[i]`` the device of reading ``i``."""
        n = int(len(ts))
        if not n:
            return
        if self.since is None:
            self.since = self.clock()
        index: dict[str, int] = {}
        dev_site = np.fromiter((index.setdefault(dv[0], len(index)) for dv in devs), np.int64, len(devs))
        dev_name = np.empty(len(devs), dtype=object)
        dev_name[:] = [dv[1] for dv in devs]
        d = np.asarray(d)
        code = dev_site[d]
        if len(index) < 32_000:
            code = code.astype(np.int16)  # a stable sort of small integers is a radix sort
        order = np.argsort(code, kind="stable")
        sc = code[order]
        cuts = (np.flatnonzero(sc[1:] != sc[:-1]) + 1).tolist()
        names = list(index)
        dn, met = dev_name[d[order]], np.asarray(metric, dtype=object)[order]
        tso, val = np.asarray(ts)[order].astype("<i8"), np.asarray(value)[order].astype("<f8")
        for s, e in zip([0, *cuts], [*cuts, n]):
            site = names[int(sc[s])]
            st = self.sites.get(site)
            if st is None:
                st = self.sites[site] = _Site()
            c = chunk_bytes(dn[s:e], met[s:e], tso[s:e], val[s:e])
            st.hasher.update(len(c).to_bytes(8, "big"))
            st.hasher.update(c)
            lo, hi = int(tso[s:e].min()), int(tso[s:e].max())
            st.ts_min, st.ts_max = (lo, hi) if not st.chunks else (min(st.ts_min, lo), max(st.ts_max, hi))
            st.chunks.append(e - s)

    def add_batch(self, rb: Any) -> None:
        """A decoded ``sitewatch.contracts.ReadingsBatch``."""
        self.add(rb.devs, rb.d, rb.metric, rb.ts, rb.value)

    def due(self) -> bool:
        return self.since is not None and self.clock() - self.since >= self.every_s

    def take(self, at_ms: int) -> list[NewEntry]:
        """The window's entries (one per site), and a fresh window."""
        out = [NewEntry(site, "readings", at_ms, {
            **self.extra, "alg": ALG, "readings": sum(st.chunks), "chunks": st.chunks, "ts_min": st.ts_min,
            "ts_max": st.ts_max, "digest": st.hasher.hexdigest()}) for site, st in sorted(self.sites.items())]
        self.sites, self.since = {}, None
        return out

    def flush(self, at_ms: int | None = None) -> int:
        """Append the window's entries with the recorder; returns how many."""
        from sitewatch.contracts import now_ms

        entries = self.take(now_ms() if at_ms is None else at_ms)
        if entries and self.recorder is not None:
            self.recorder.record(entries)
        return len(entries)


def reading_batch_entries(devs: Sequence[Sequence[Any]], d: np.ndarray, metric: np.ndarray, ts: np.ndarray,
                          value: np.ndarray, at_ms: int, extra: dict[str, Any] | None = None) -> list[NewEntry]:
    """The entries of one batch on its own (a window of one batch)."""
    rl = ReadingLog(extra=extra)
    rl.add(devs, d, metric, ts, value)
    return rl.take(at_ms)
