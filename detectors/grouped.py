"""Vector building blocks over rows sorted by (group, ts), with state carried in from the previous batch.

Every sequential rule a detector needs (runs of a condition, a latch that is set and reset, the previous value)
is written here once as an O(n) numpy expression, so that a batch of 50,000 readings costs a handful of array
passes instead of 50,000 Python calls. ``first`` marks the first row of each group; ``grp`` numbers the groups
0..G-1 in row order; carry arrays are indexed by group and hold what the previous batch left behind. Feeding a
stream in one batch or in many gives the same result because the carry is exactly what the next row needs.
"""

from __future__ import annotations

import numpy as np


def group_layout(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For rows sorted by ``keys``: (first-row mask, group number per row, first row index per row, last rows)."""
    n = keys.shape[0]
    first = np.empty(n, dtype=bool)
    if n:
        first[0] = True
        np.not_equal(keys[1:], keys[:-1], out=first[1:])
    grp = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    first_idx = starts[grp]
    last = np.empty(starts.shape[0], dtype=np.int64)
    if n:
        last[:-1] = starts[1:] - 1
        last[-1] = n - 1
    return first, grp, first_idx, last


def latch(events: np.ndarray, first: np.ndarray, grp: np.ndarray, init: np.ndarray) -> np.ndarray:
    """A set/reset latch: +1 sets, -1 resets, 0 keeps; ``init[g]`` is the latch before the group's first row."""
    n = events.shape[0]
    idx = np.arange(n)
    has_event = events != 0
    val = np.where(has_event, events > 0, init[grp])
    last = np.maximum.accumulate(np.where(has_event | first, idx, 0))
    return val[last]


def runs(cond: np.ndarray, first_idx: np.ndarray, grp: np.ndarray, carry_run: np.ndarray,
         ts: np.ndarray, carry_start: np.ndarray, ts_next: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Length and start time of the run of ``cond`` ending at each row (0 / undefined where cond is False).

    A run still open at the end of the previous batch (``carry_run[g] > 0``) continues into this one. Where cond
    is False the start is the next row's time (the last row's: its own): a value nobody reads, but carries are
    stored with it; ``ts_next`` (per row) gives that time where the rows are a selection or a concatenation of
    other calls' rows, so each row gets what it gets in its own call.
    """
    n = cond.shape[0]
    idx = np.arange(n)
    base = first_idx - 1
    lastbreak = np.maximum.accumulate(np.where(cond, base, idx))
    unbroken = lastbreak == base
    run = idx - lastbreak
    cr = carry_run[grp]
    run = np.where(unbroken, run + cr, run)
    if not n:
        at = ts
    elif ts_next is None:
        at = ts[np.minimum(lastbreak + 1, n - 1)]
    else:  # where cond holds the run's first row is in the group; else the next row, as given
        at = np.where(cond, ts[np.minimum(lastbreak + 1, n - 1)], ts_next)
    start = np.where(unbroken & (cr > 0), carry_start[grp], at)
    return np.where(cond, run, 0), start


def shifted(v: np.ndarray, first: np.ndarray, first_idx: np.ndarray, grp: np.ndarray,
            carry1: np.ndarray, carry2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The previous and the one-before-previous value of each row within its group (carry from the last batch)."""
    n = v.shape[0]
    pos = np.arange(n) - first_idx
    p1 = np.empty(n)
    p2 = np.empty(n)
    if n:
        p1[1:] = v[:-1]
        p2[2:] = v[:-2]
    c1 = carry1[grp]
    p1 = np.where(pos >= 1, p1, c1)
    p2 = np.where(pos >= 2, p2, np.where(pos == 1, c1, carry2[grp]))
    return p1, p2


def prev_in_group(a: np.ndarray, first: np.ndarray, grp: np.ndarray, carry: np.ndarray) -> np.ndarray:
    out = np.empty_like(a)
    if a.shape[0]:
        out[1:] = a[:-1]
        out[first] = carry[grp[first]]
    return out


def ffill_index(valid: np.ndarray, first_idx: np.ndarray) -> np.ndarray:
    """Index of the last valid row at or before each row in its group, or -1 if none yet."""
    n = valid.shape[0]
    idx = np.arange(n)
    base = first_idx - 1
    last = np.maximum.accumulate(np.where(valid, idx, base))
    return np.where(last > base, last, -1)
