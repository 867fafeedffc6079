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

    @classmethod
    def zeros(cls, g: int) -> "HystCarry":
        return cls(np.zeros((g, NLEVELS), bool), np.zeros((g, NLEVELS), np.int64), np.zeros((g, NLEVELS), np.int64))


def graded_levels(x: np.ndarray, ts: np.ndarray, first: np.ndarray, first_idx: np.ndarray, grp: np.ndarray,
                  last_rows: np.ndarray, lines: np.ndarray, clear_lines: np.ndarray, hold_count: np.ndarray,
                  hold_ms: np.ndarray, carry: HystCarry) -> tuple[np.ndarray, HystCarry]:
    """Level (0..3) per row and the carry after the last row of each group.

    ``lines`` and ``clear_lines`` are (n, 3), NaN for a level that is switched off; the per-row parameters let
    one call serve devices with different ratings.
    """
    n = x.shape[0]
    level = np.zeros(n, dtype=np.int8)
    out = HystCarry.zeros(last_rows.shape[0])
    with np.errstate(invalid="ignore"):
        for k in range(NLEVELS):
            line = lines[:, k]
            above = x >= line
            run, start = runs(above, first_idx, grp, carry.run[:, k], ts, carry.start[:, k])
            set_ = above & (run >= hold_count) & ((ts - start) >= hold_ms)
            reset = (x < clear_lines[:, k]) | np.isnan(line)
            events = set_.astype(np.int8) - reset.astype(np.int8)
            bits = latch(events, first, grp, carry.bits[:, k])
            level = np.maximum(level, np.where(bits, k + 1, 0).astype(np.int8))
            out.bits[:, k] = bits[last_rows]
            out.run[:, k] = run[last_rows]
            out.start[:, k] = start[last_rows]
    return level, out
