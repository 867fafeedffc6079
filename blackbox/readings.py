"""Reading batches as record entries: per site, how many readings arrived, their time range and a digest.

A ``readings`` entry covers what one worker received for one site during one window (``every_s``; 0: every
worker batch); the window's readings of the site, in arrival order, are one chunk. The digest lets anyone holding the readings (Kafka ``sw.readings``, a Parquet recording) show
that exactly these readings, in this order, were received — recipe ``sw-readings-v1``:

    sha256( b"sw-readings-v1\\n" + for each chunk: len(c).to_bytes(8, "big") + c )
    c = "\\x1f".join(devices).encode() + b"\\n" + "\\x1f".join(metrics).encode() + b"\\n"
        + ts as little-endian int64 + value as little-endian float64

The payload lists the chunk sizes (one per entry today), so the readings can be cut back into chunks. Ids cannot contain ``\\x1f`` or newlines (``sitewatch.contracts``).

Why columns, not the raw Kafka records: a ``sw.readings`` record carries every site of a partition, so a site's
digest over raw records would hash (and disclose) its neighbours' readings too. The grouping is numpy over the
dictionary-encoded batch (``devs`` + ``d``), so the per-reading cost is a few array operations, not Python.
"""

from __future__ import annotations

import hashlib
import time
from operator import itemgetter
from typing import Any, Callable, Sequence

import numpy as np

from blackbox.chain import NewEntry, Recorder

ALG = "sw-readings-v1"


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


def site_digests(devs: Sequence[Sequence[Any]], d: np.ndarray, metric: np.ndarray, ts: np.ndarray,
                 value: np.ndarray) -> list[tuple[str, int, int, int, str]]:
    """(site, readings, first ts, last ts, digest of one chunk) per site, for dictionary-encoded readings as
    ``sitewatch.contracts.ReadingsBatch`` holds them: ``devs[k]`` = (site, device, …), ``d[i]`` the device of
    reading ``i``. Per reading only numpy and C loops (a gather, a join); per site a few hash updates.

    Each site's names are joined per chunk (``str.join`` over a slice, then one encode): no per-reading length,
    offset or list — those were most of the record's cost in the worker (py-spy in ``bench chain``)."""
    n = int(len(ts))
    if not n:
        return []
    site_of = list(map(itemgetter(0), devs))
    names = list(dict.fromkeys(site_of))
    index = {s: i for i, s in enumerate(names)}
    dev_site = np.fromiter(map(index.__getitem__, site_of), np.int64, len(devs))
    dev_name = np.empty(len(devs), dtype=object)
    dev_name[:] = list(map(itemgetter(1), devs))
    d = np.asarray(d)
    code = dev_site[d]
    if len(index) < 32_000:
        code = code.astype(np.int16)  # a stable sort of small integers is a radix sort
    order = np.argsort(code, kind="stable")
    sc = code[order]
    cuts = (np.flatnonzero(sc[1:] != sc[:-1]) + 1).tolist()
    dn, met = dev_name[d[order]], np.asarray(metric, dtype=object)[order]
    tso, val = np.asarray(ts)[order].astype("<i8"), np.asarray(value)[order].astype("<f8")
    starts, ends = [0, *cuts], [*cuts, n]
    lo_all, hi_all = np.minimum.reduceat(tso, starts).tolist(), np.maximum.reduceat(tso, starts).tolist()
    tv, vv, codes = memoryview(tso.tobytes()), memoryview(val.tobytes()), sc[starts].tolist()
    out = []
    for j, (s, e) in enumerate(zip(starts, ends)):
        dpart, mpart = "\x1f".join(dn[s:e]).encode(), "\x1f".join(met[s:e]).encode()
        h = hashlib.sha256(b"sw-readings-v1\n")
        h.update((len(dpart) + len(mpart) + 2 + 16 * (e - s)).to_bytes(8, "big"))
        for part in (dpart, b"\n", mpart, b"\n", tv[8 * s:8 * e], vv[8 * s:8 * e]):
            h.update(part)
        out.append((names[codes[j]], e - s, lo_all[j], hi_all[j], h.hexdigest()))
    return out


class ReadingLog:
    """Collects reading batches and turns them into ``readings`` entries once per window.

    ``add`` only keeps references to the batch's columns (the worker's hot path pays nothing per site); the
    window's readings are grouped and digested per site once, in ``take``/``flush`` — one chunk per window."""

    def __init__(self, recorder: Recorder | None = None, every_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, extra: dict[str, Any] | None = None):
        self.recorder = recorder
        self.every_s = every_s
        self.clock = clock
        self.extra = dict(extra or {})
        self.pending: list[tuple] = []
        self.since: float | None = None

    def add(self, devs: Sequence[Sequence[Any]], d: np.ndarray, metric: np.ndarray, ts: np.ndarray,
            value: np.ndarray) -> None:
        """One worker batch, dictionary-encoded (see ``site_digests``)."""
        if not len(ts):
            return
        if self.since is None:
            self.since = self.clock()
        self.pending.append((devs, d, metric, ts, value))

    def add_batch(self, rb: Any) -> None:
        """A decoded ``sitewatch.contracts.ReadingsBatch``."""
        self.add(rb.devs, rb.d, rb.metric, rb.ts, rb.value)

    def due(self) -> bool:
        return self.since is not None and self.clock() - self.since >= self.every_s

    def take(self, at_ms: int) -> list[NewEntry]:
        """The window's entries (one per site), and a fresh window."""
        pending, self.pending, self.since = self.pending, [], None
        if not pending:
            return []
        if len(pending) == 1:
            devs, d, metric, ts, value = pending[0]
        else:
            offsets = np.cumsum([0] + [len(p[0]) for p in pending[:-1]])
            devs = [dv for p in pending for dv in p[0]]
            d = np.concatenate([np.asarray(p[1]) + off for p, off in zip(pending, offsets.tolist())])
            metric = np.concatenate([np.asarray(p[2], dtype=object) for p in pending])
            ts = np.concatenate([np.asarray(p[3]) for p in pending])
            value = np.concatenate([np.asarray(p[4]) for p in pending])
        return [NewEntry(site, "readings", at_ms, {**self.extra, "alg": ALG, "readings": n, "chunks": [n],
                                                   "ts_min": lo, "ts_max": hi, "digest": dg})
                for site, n, lo, hi, dg in sorted(site_digests(devs, d, metric, ts, value))]

    def append(self, entries: list[NewEntry]) -> None:
        """Append entries taken earlier (``take``) with the recorder: the worker takes on its event loop, where
        batches are added, and appends on a thread, retrying entries a database outage left behind."""
        if entries and self.recorder is not None:
            self.recorder.record(entries)

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
