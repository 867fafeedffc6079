"""Graded levels with hold and hysteresis, vectorised.

Each level k (yellow, orange, red) is its own latch: it is *set* once the value has been at or above the level
line T_k for ``hold_count`` consecutive readings and for at least ``hold`` of reading time, and *reset* only when
the value drops below the lower line ``clear_ratio × T_k``. Between the two lines nothing changes, so a value
dithering on a line cannot flap. The device's level is the highest latch that is set; because T_k and
clear_ratio × T_k both rise with k, a higher latch is never set while a lower one is reset.

A NaN value (e.g. a rate that cannot be computed yet) neither sets nor resets, and breaks a hold run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detectors.grouped import latch, runs

NLEVELS = 3


@dataclass
class HystCarry:
    """Per-group state between batches: latch bits, hold-run lengths and run start times per level."""

    bits: np.ndarray  # (G, 3) bool
    run: np.ndarray  # (G, 3) int64
    start: np.ndarray  # (G, 3) int64
    live: np.ndarray | None = None  # (G,) bool: the groups graded_levels computed (the others idle); None: all

    @classmethod
    def zeros(cls, g: int) -> "HystCarry":
        return cls(np.zeros((g, NLEVELS), bool), np.zeros((g, NLEVELS), np.int64), np.zeros((g, NLEVELS), np.int64))


def held(bits: np.ndarray, run: np.ndarray) -> np.ndarray:
    """Per group: a latch set or a hold run in progress (``bits.any(axis=1) | (run > 0).any(axis=1)``, by
    columns: a reduction along the short axis of these (G, 3) arrays is ~7x slower)."""
    out = bits[:, 0] | (run[:, 0] > 0)
    for k in range(1, bits.shape[1]):
        out |= bits[:, k]
        out |= run[:, k] > 0
    return out


def graded_levels(x: np.ndarray, ts: np.ndarray, first: np.ndarray, first_idx: np.ndarray, grp: np.ndarray,
                  last_rows: np.ndarray, lines: np.ndarray, clear_lines: np.ndarray, hold_count: np.ndarray,
                  hold_ms: np.ndarray, carry: HystCarry, end: np.ndarray | None = None,
                  per_group: bool = False, at: np.ndarray | None = None) -> tuple[np.ndarray, HystCarry]:
    """Level (0..3) per row and the carry after the last row of each group.

    ``lines`` and ``clear_lines`` are (n, 3), NaN for a level that is switched off; the per-row parameters let
    one call serve devices with different ratings (``per_group``: the four parameters are per group instead,
    (G, 3) and (G,)). ``end`` (per row, the last row of its segment): rows of several calls concatenated give
    what each call gives alone (see ``grouped.runs``). ``at`` (per group): the four parameters are tables and a
    group's are their row ``at[g]`` (``per_group`` implied) — read for the live groups only.

    Only *live* groups are computed: a group with no latch set, no hold run carried in and no reading at or
    above its lowest line stays at level 0 with nothing carried (its rows can set nothing, and a reset of a
    latch that is not set changes nothing) — in a quiet batch nearly every group.
    """
    n = x.shape[0]
    G = last_rows.shape[0]
    level = np.zeros(n, dtype=np.int8)
    out = HystCarry.zeros(G)

    def nxt(at: np.ndarray) -> np.ndarray:  # the row after each of these rows (its run start), in its segment
        return np.minimum(at + 1, n - 1 if end is None else end[at])

    with np.errstate(invalid="ignore"):
        low = np.fmin(np.fmin(lines[:, 0], lines[:, 1]), lines[:, 2])
        if at is not None:
            low, per_group = low.take(at), True
        live = held(carry.bits, carry.run)
        live[grp[x >= (low[grp] if per_group else low)]] = True
    if G:
        out.start[:] = ts[nxt(last_rows)][:, None]  # no run at a quiet group's last row: the next row's time
    out.live = live
    if not live.any():
        return level, out
    if live.all():
        rows, gsel = None, None
        g_, f_, fi_, lr_ = grp, first, first_idx, last_rows
        x_, ts_, tn_ = x, ts, ts[nxt(np.arange(n))]
        c_bits, c_run, c_start = carry.bits, carry.run, carry.start
        pick = grp if per_group else slice(None)
    else:
        gsel = np.flatnonzero(live)
        rows = np.flatnonzero(live[grp])
        g_ = (np.cumsum(live) - 1)[grp[rows]]
        f_ = first[rows]
        starts = np.flatnonzero(f_)
        fi_ = starts[g_]
        lr_ = np.r_[starts[1:] - 1, rows.shape[0] - 1]
        x_, ts_, tn_ = x[rows], ts[rows], ts[nxt(rows)]
        c_bits, c_run, c_start = (a.take(gsel, axis=0) for a in (carry.bits, carry.run, carry.start))
        pick = grp[rows] if per_group else rows
    if at is not None:  # table rows: take (~5x a fancy index of the (R, 3) tables)
        pick = at[pick]
        lines, clear_lines = lines.take(pick, axis=0), clear_lines.take(pick, axis=0)
        hold_count, hold_ms = hold_count.take(pick), hold_ms.take(pick)
    else:
        lines, clear_lines, hold_count, hold_ms = lines[pick], clear_lines[pick], hold_count[pick], hold_ms[pick]
    lvl = np.zeros(x_.shape[0], dtype=np.int8)
    o_bits = np.empty((lr_.shape[0], NLEVELS), bool)
    o_run = np.empty((lr_.shape[0], NLEVELS), np.int64)
    o_start = np.empty((lr_.shape[0], NLEVELS), np.int64)
    with np.errstate(invalid="ignore"):
        for k in range(NLEVELS):
            line = lines[:, k]
            above = x_ >= line
            run, start = runs(above, fi_, g_, c_run[:, k], ts_, c_start[:, k], tn_)
            set_ = above & (run >= hold_count) & ((ts_ - start) >= hold_ms)
            reset = (x_ < clear_lines[:, k]) | np.isnan(line)
            events = set_.astype(np.int8) - reset.astype(np.int8)
            bits = latch(events, f_, g_, c_bits[:, k])
            lvl = np.maximum(lvl, np.where(bits, k + 1, 0).astype(np.int8))
            o_bits[:, k] = bits[lr_]
            o_run[:, k] = run[lr_]
            o_start[:, k] = start[lr_]
    if rows is None:
        return lvl, HystCarry(o_bits, o_run, o_start, live)
    level[rows] = lvl
    out.bits[gsel], out.run[gsel], out.start[gsel] = o_bits, o_run, o_start
    return level, out
