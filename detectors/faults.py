"""Sensor faults: knowing when the monitoring system is blind or being lied to.

A fault is reported as a fault (category "fault", its own ticket) and the readings behind it are withheld from
every hazard check, so a broken sensor can neither raise a structural alarm nor clear one that is standing:

* out of physical range — the reading is impossible for the sensor or the structure (e.g. 150 t on a 10 t crane);
* spike — a reading that jumps more than ``spike_step`` away from *both* previous readings is held back; if the
  next reading comes back near the earlier value it was a spike (fault), if it stays near the jumped value it
  was a real step and the signal continues from there (a real change costs one reading of delay, no more);
* flatline — the value has not changed (within ``flatline_eps``) for ``flatline_after`` and at least three
  readings: the sensor is stuck, its readings are withheld until the value moves again;
* silent (deadman) — no reading for ``silent_after_intervals × expected_interval``; found by the clock tick;
* gateway offline — the gateway's MQTT last will (``online: false``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detectors.grouped import ffill_index, group_layout, latch, prev_in_group, runs, shifted


@dataclass
class SeriesCarry:
    """Per-series fault state from the previous batch (arrays over series)."""

    p1: np.ndarray  # last in-range value
    p2: np.ndarray  # the one before
    p1_ts: np.ndarray
    sus: np.ndarray  # was the last in-range reading held back as suspect
    frun: np.ndarray  # number of equal steps in the current flat stretch
    fstart: np.ndarray  # ts at which the current flat stretch began
    oor_bit: np.ndarray
    oor_good: np.ndarray
    spk_bit: np.ndarray
    spk_good: np.ndarray
    flat_bit: np.ndarray


@dataclass
class FaultResult:
    valid: np.ndarray  # rows usable by hazard checks
    oor_level_bit: np.ndarray  # per row latch state
    spk_level_bit: np.ndarray
    flat_level_bit: np.ndarray
    ir: np.ndarray  # indices of in-range rows
    suspect: np.ndarray  # over ir rows
    # carry out, indexed by series
    out: SeriesCarry


def sensor_faults(v: np.ndarray, ts: np.ndarray, sgrp: np.ndarray, sfirst: np.ndarray, sfirst_idx: np.ndarray,
                  slast: np.ndarray, lo: np.ndarray, hi: np.ndarray, step: np.ndarray, flat_ms: np.ndarray,
                  eps: np.ndarray, clear_after_good: np.ndarray, c: SeriesCarry) -> FaultResult:
    """All per-series parameters and carries are arrays over series; rows are sorted by (series, ts)."""
    n = v.shape[0]
    s_count = slast.shape[0]
    with np.errstate(invalid="ignore"):
        oor = (v < lo[sgrp]) | (v > hi[sgrp])
        good = ~oor
        # The quiet case, nearly every batch of a healthy fleet, without the scans: no reading out of range
        # (every run of good readings goes on from the carry) and no latch set that a reset could matter to.
        any_oor = bool(oor.any())
        if any_oor:
            grun, _ = runs(good, sfirst_idx, sgrp, c.oor_good, ts, np.zeros(s_count, np.int64))
        else:
            grun = np.arange(n) - sfirst_idx + 1 + c.oor_good[sgrp]
        if any_oor or c.oor_bit.any():
            ev = oor.astype(np.int8) - (good & (grun >= clear_after_good[sgrp])).astype(np.int8)
            oor_bit = latch(ev, sfirst, sgrp, c.oor_bit)
        else:
            oor_bit = np.zeros(n, dtype=bool)

        out = SeriesCarry(*(a.copy() for a in (c.p1, c.p2, c.p1_ts, c.sus, c.frun, c.fstart, c.oor_bit, c.oor_good,
                                               c.spk_bit, c.spk_good, c.flat_bit)))
        out.oor_bit[:] = oor_bit[slast]
        out.oor_good[:] = grun[slast]

        ir = np.flatnonzero(good)
        valid = np.zeros(n, dtype=bool)
        spk_bit_rows = np.zeros(n, dtype=bool)
        flat_bit_rows = np.zeros(n, dtype=bool)
        suspect = np.zeros(0, dtype=bool)
        if ir.size == n:  # every reading in range (nearly every batch): the series' own layout, no copies
            vi, ti, si = v, ts, sgrp
            first, grp, first_idx, last = sfirst, sgrp, sfirst_idx, slast
            ser = np.arange(s_count)
        elif ir.size:
            vi, ti, si = v[ir], ts[ir], sgrp[ir]
            first, grp, first_idx, last = group_layout(si)
            ser = si[last]  # series of each in-range group
        if ir.size:
            p1, p2 = shifted(vi, first, first_idx, grp, c.p1[ser], c.p2[ser])
            st = step[si]
            suspect = (np.abs(vi - p1) > st) & (np.abs(vi - p2) > st)
            any_sus = bool(suspect.any()) or bool(c.sus[ser].any())
            if any_sus:
                prev_sus = prev_in_group(suspect, first, grp, c.sus[ser])
                confirm = prev_sus & (np.abs(vi - p2) <= st)
                brun, _ = runs(~suspect, first_idx, grp, c.spk_good[ser], ti, np.zeros(ser.shape[0], np.int64))
            else:  # nothing held back now or before: nothing to confirm, every good run goes on
                confirm = np.zeros(vi.shape[0], dtype=bool)
                brun = np.arange(vi.shape[0]) - first_idx + 1 + c.spk_good[ser][grp]
            if any_sus or c.spk_bit[ser].any():
                ev = confirm.astype(np.int8) - (~suspect & ~confirm & (brun >= clear_after_good[si])).astype(
                    np.int8)
                spk = latch(ev, first, grp, c.spk_bit[ser])
            else:
                spk = np.zeros(vi.shape[0], dtype=bool)

            eq = np.abs(vi - p1) <= eps[si]
            pts = prev_in_group(ti, first, grp, c.p1_ts[ser])
            if eq.any():
                frun, fstart = runs(eq, first_idx, grp, c.frun[ser], pts, c.fstart[ser])
                flat = eq & (frun >= 2) & ((ti - fstart) >= flat_ms[si])
                ev = flat.astype(np.int8) - (~eq).astype(np.int8)
                flat_bit = latch(ev, first, grp, c.flat_bit[ser])
            else:  # no reading equal to the one before: no flat run, every latch reset (what ``runs`` and
                # ``latch`` give; the start of a run that is not running is the next row's, as ``runs`` has it)
                frun = np.zeros(vi.shape[0], dtype=np.int64)
                fstart = pts[np.minimum(np.arange(1, vi.shape[0] + 1), vi.shape[0] - 1)]
                flat = np.zeros(vi.shape[0], dtype=bool)
                flat_bit = flat

            valid[ir] = ~suspect & ~flat
            spk_bit_rows[ir] = spk
            flat_bit_rows[ir] = flat_bit
            # rows that are out of range keep the latch of the previous in-range row
            out.p1[ser] = vi[last]
            has2 = last > first_idx[last]
            out.p2[ser] = np.where(has2, vi[np.maximum(last - 1, 0)], c.p1[ser])
            out.p1_ts[ser] = ti[last]
            out.sus[ser] = suspect[last]
            out.frun[ser] = frun[last]
            out.fstart[ser] = fstart[last]
            out.spk_bit[ser] = spk[last]
            out.spk_good[ser] = brun[last]
            out.flat_bit[ser] = flat_bit[last]
            # forward the spike / flat latch onto out-of-range rows so the level stays what it was
            if ir.size < n:
                li = ffill_index(good, sfirst_idx)
                spk_bit_rows = np.where(li >= 0, spk_bit_rows[np.maximum(li, 0)], c.spk_bit[sgrp])
                flat_bit_rows = np.where(li >= 0, flat_bit_rows[np.maximum(li, 0)], c.flat_bit[sgrp])
        else:
            spk_bit_rows = c.spk_bit[sgrp].copy()
            flat_bit_rows = c.flat_bit[sgrp].copy()
    return FaultResult(valid, oor_bit, spk_bit_rows, flat_bit_rows, ir, suspect, out)
