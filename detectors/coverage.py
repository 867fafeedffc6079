"""Which stretches of event time a device's readings have already covered, so late readings can be placed.

A gateway that lost its mobile link buffers readings and flushes them later, in any order, sometimes twice. Per
device the engine keeps a short list of *covered intervals* ``[[a, b], ...]`` (sorted, disjoint, epoch ms): the
event time for which readings were evaluated, with neighbouring readings no further apart than the gap
threshold (``gap_factor`` x the learned cadence). A reading older than the device's newest one is then either

* strictly inside a covered interval — a duplicate or a redelivery; it changes nothing and is counted as stale; or
* in a *gap* between intervals — data the device measured while nobody heard it; it is evaluated in event time
  on the late lane (see ``detectors.engine``) and the gap shrinks by what it covered.

The list is bounded (``max_intervals``) and pruned to the allowed lateness, so state stays small.
"""

from __future__ import annotations

import numpy as np

MAX_INTERVALS = 8


def extend(cov: list[list[int]], ts: list[int], thr_ms: int, max_intervals: int = MAX_INTERVALS) -> list[list[int]]:
    """Add sorted, distinct, in-order timestamps (all newer than everything covered) to ``cov``."""
    out = [list(iv) for iv in cov]
    for t in ts:
        if out and t - out[-1][1] <= thr_ms:
            out[-1][1] = max(out[-1][1], t)
        else:
            out.append([t, t])
    return out[-max_intervals:]


def add_span(cov: list[list[int]], a: int, b: int, thr_ms: int,
             max_intervals: int = MAX_INTERVALS) -> list[list[int]]:
    """Mark ``[a, b]`` covered (late readings evaluated there), merging intervals closer than ``thr_ms``."""
    ivs = sorted([list(iv) for iv in cov] + [[a, b]])
    out: list[list[int]] = []
    for iv in ivs:
        if out and iv[0] - out[-1][1] <= thr_ms:
            out[-1][1] = max(out[-1][1], iv[1])
        else:
            out.append(iv)
    return out[-max_intervals:]


def prune(cov: list[list[int]], older_than: int) -> list[list[int]]:
    """Forget intervals that end before ``older_than`` (beyond the allowed lateness); keep at least one."""
    kept = [iv for iv in cov if iv[1] >= older_than]
    return kept or cov[-1:]


def classify(cov: list[list[int]], ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each timestamp: covered?, and the gap around it as (start, end) — the end of the covered interval
    before it and the start of the one after it (-1 where there is none)."""
    if not cov:
        n = ts.shape[0]
        return np.zeros(n, bool), np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    a = np.array([iv[0] for iv in cov], dtype=np.int64)
    b = np.array([iv[1] for iv in cov], dtype=np.int64)
    i = np.searchsorted(a, ts, side="right") - 1  # interval starting at or before ts
    ic = np.maximum(i, 0)
    # strictly inside: a frame boundary can cut one measurement time's metrics in two, so the readings *at* an
    # interval's ends may be new for some metrics; they go to the late lane, whose findings the backlog dedups
    covered = (i >= 0) & (ts > a[ic]) & (ts < b[ic])
    gap_from = np.where(i >= 0, b[ic], -1)
    nxt = i + 1
    gap_to = np.where(nxt < a.shape[0], a[np.minimum(nxt, a.shape[0] - 1)], -1)
    return covered, gap_from, gap_to
