"""The detector engine: one call per batch, numpy over rows, Python only per device / per finding.

Flow of ``process``:

1. rows are tagged with a device number and a fixed (family, metric) code, sorted by (device, metric, ts),
   exact duplicates (at-least-once redelivery) and readings not newer than the last processed reading of their
   series (late or replayed) are dropped — a late reading can therefore neither corrupt a rate nor clear an alarm;
2. sensor faults (range, spike, flatline) are judged per series; faulty readings are withheld from hazards;
3. every check of the registry runs over the rows of its metric, all devices at once, producing a level per row
   (hysteresis and hold included);
4. per (device, kind) the levels of the kind's metrics are combined (the worst current one wins), and a finding
   is emitted where that level changes, or every ``reassert`` of reading time while it stays raised.

State per device is a small JSON-able dict (see ``_new_state``); its size does not grow with the reading rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.faults import SeriesCarry, sensor_faults
from detectors.grouped import ffill_index, group_layout, prev_in_group
from detectors.hysteresis import HystCarry, graded_levels
from detectors.model import Finding, Level, ReadingBatch
from detectors.plan import (CHECKS, FAM_CODE, FAULT_KINDS, FM_CODE, FM_LIST, FM_SLOT, KIND_CODE,
                            KIND_SLOTS, KINDS, MAX_SLOTS, DevicePlan, build_plan)
from detectors.rate import windowed_rate
from detectors.families.electrical import PHASES
from sitewatch.contracts import FAMILIES, GatewayStatus
from sitewatch.rules import LEVEL_NAMES, RuleSet

STATE_VERSION = 1
_NFM = len(FM_LIST)
_NK = len(KINDS)
_METRIC_CODE = {m: i for i, m in enumerate(sorted({m for ms in FAMILIES.values() for m in ms}))}
_FM_TABLE = np.full((len(FAMILIES) + 1, len(_METRIC_CODE) + 1), -1, dtype=np.int64)  # [-1] row/col: unknown
for _i, (_fam, _m) in enumerate(FM_LIST):
    _FM_TABLE[FAM_CODE[_fam], _METRIC_CODE[_m]] = _i
# series state layout: m[metric] = [t, p1, p2, p1_ts, suspect, flat_run, flat_start, oor_bit, oor_good,
#                                   spike_bit, spike_good, flat_bit, baseline]
_M_T, _M_BASE = 0, 12
_FM_SLOT = np.array(FM_SLOT, dtype=np.int64)
_KIND_SLOT_CHECK: dict[tuple[str, int], int] = {(c.kind, c.slot): c.index for c in CHECKS}
_CHECKS_BY_FM: dict[int, list[int]] = {}
for _c in CHECKS:
    if _c.metric != "*":
        _CHECKS_BY_FM.setdefault(FM_CODE[f"{_c.family}/{_c.metric}"], []).append(_c.index)
_PHASE_FM = [FM_CODE[f"electrical/{p}"] for p in PHASES]
_IMBALANCE = next(c.index for c in CHECKS if c.mode == "imbalance")
_NAN = float("nan")


def _f(x: Any) -> float:
    return _NAN if x is None else float(x)


def _j(x: float) -> float | None:
    """JSON has no NaN: a missing number is stored as null."""
    x = float(x)
    return None if math.isnan(x) else x


def _new_state(family: str) -> dict:
    return {"v": STATE_VERSION, "fam": family, "lt": None, "dl": None, "sil": [0, 0, 0], "m": {}, "c": {}, "k": {}}


@dataclass
class _Res:
    """Output of one check (or one fault kind) over its rows, kept until findings are written."""

    check: int  # check index, or -1 - fault kind code for faults
    rows: np.ndarray  # indices into the sorted batch arrays
    level: np.ndarray
    x: np.ndarray
    lines: np.ndarray | None = None  # (n, 3)
    extra: dict | None = None


class DetectorEngine:
    def __init__(self, rules: RuleSet):
        self.rules = rules
        self._plans: dict[tuple[str, str, str], DevicePlan] = {}

    def plan(self, site: str, device: str, family: str) -> DevicePlan:
        key = (site, device, family)
        p = self._plans.get(key)
        if p is None:
            p = self._plans[key] = build_plan(self.rules, site, device, family)
        return p

    # ============================================================================================ process
    def process(self, batch: ReadingBatch, states: dict[str, dict]) -> list[Finding]:
        n0 = len(batch)
        if n0 == 0:
            return []
        keys = (batch.site + "/" + batch.device).tolist()
        kidx: dict[str, int] = {}
        dev_all = np.fromiter((kidx.setdefault(k, len(kidx)) for k in keys), np.int64, n0)
        dkeys = list(kidx)
        n_dev = len(dkeys)
        mcode = np.fromiter((_METRIC_CODE.get(m, -1) for m in batch.metric.tolist()), np.int64, n0)
        _, first_row = np.unique(dev_all, return_index=True)

        # ---- device contexts: state and plan (Python per device)
        plans: list[DevicePlan | None] = []
        olds: list[dict | None] = []
        dev_fam = np.full(n_dev, -1, dtype=np.int64)
        for d, key in enumerate(dkeys):
            r = int(first_row[d])
            st = states.get(key)
            if not (isinstance(st, dict) and st.get("v") == STATE_VERSION and st.get("fam") in FAMILIES):
                st = None
            fam = st["fam"] if st else batch.family[r]
            olds.append(st)
            if fam not in FAMILIES:
                plans.append(None)
                continue
            plans.append(self.plan(batch.site[r], batch.device[r], fam))
            dev_fam[d] = FAM_CODE[fam]

        # the device's family decides what its metric names mean; a metric foreign to it is dropped
        fmc = _FM_TABLE[dev_fam[dev_all], mcode]
        keep = (fmc >= 0) & np.isfinite(batch.value)
        idx = np.flatnonzero(keep)
        order = idx[np.lexsort((batch.ts[idx], fmc[idx], dev_all[idx]))]
        d_, f_, t_, v_ = dev_all[order], fmc[order], batch.ts[order], batch.value[order]
        if d_.size > 1:  # exact repeats of (device, metric, ts): redelivery, keep the first
            dup = np.r_[False, (d_[1:] == d_[:-1]) & (f_[1:] == f_[:-1]) & (t_[1:] == t_[:-1])]
            d_, f_, t_, v_ = d_[~dup], f_[~dup], t_[~dup], v_[~dup]

        # ---- series (device, metric); drop readings not newer than the series' last processed one
        sk = d_ * _NFM + f_
        sfirst, sgrp, sfirst_idx, slast = group_layout(sk)
        s_dev = d_[slast]
        s_fm = f_[slast]
        s_state = []
        s_last_ts = np.empty(slast.shape[0], dtype=np.int64)
        for s in range(slast.shape[0]):
            st = olds[s_dev[s]]
            ms = st["m"].get(FM_LIST[s_fm[s]][1]) if st else None
            s_state.append(ms)
            s_last_ts[s] = ms[_M_T] if ms else np.iinfo(np.int64).min
        fresh = t_ > s_last_ts[sgrp]
        if not fresh.all():
            d_, f_, t_, v_ = d_[fresh], f_[fresh], t_[fresh], v_[fresh]
            old_s = sgrp[fresh]
            sfirst, sgrp, sfirst_idx, slast = group_layout(d_ * _NFM + f_)
            remap = old_s[slast]
            s_state = [s_state[i] for i in remap]
            s_dev, s_fm = d_[slast], f_[slast]
        n = t_.shape[0]
        touched = np.zeros(n_dev, dtype=bool)
        touched[np.unique(dev_all)] = True
        new_states: dict[int, dict] = {}
        for d in np.flatnonzero(touched):
            if plans[d] is None:
                continue
            old = olds[d]
            ns = dict(old) if old else _new_state(plans[d].family)
            ns["m"], ns["c"], ns["k"] = dict(ns["m"]), dict(ns["c"]), dict(ns["k"])
            new_states[int(d)] = ns
        findings: list[Finding] = []
        if n == 0:
            self._write_back(states, dkeys, new_states)
            return findings

        # ---- sensor faults per series
        S = slast.shape[0]
        sens = [plans[s_dev[s]].sensors[FM_LIST[s_fm[s]][1]] for s in range(S)]
        lo = np.array([p.lo for p in sens])
        hi = np.array([p.hi for p in sens])
        step = np.array([p.step for p in sens])
        flat_ms = np.array([p.flat_ms for p in sens])
        eps = np.array([p.eps for p in sens])
        cag = np.array([plans[s_dev[s]].clear_after_good for s in range(S)], dtype=np.int64)
        carry = _series_carry(s_state)
        fr = sensor_faults(v_, t_, sgrp, sfirst, sfirst_idx, slast, lo, hi, step, flat_ms, eps, cag, carry)

        results: list[_Res] = []
        row_all = np.arange(n)
        fault_bits = {"fault.out_of_range": fr.oor_level_bit, "fault.spike": fr.spk_level_bit,
                      "fault.flatline": fr.flat_level_bit}
        for kind, bits in fault_bits.items():
            lvl = np.array([p.fault_levels[kind] if p else 0 for p in plans], dtype=np.int8)
            results.append(_Res(-1 - KIND_CODE[kind], row_all, np.where(bits, lvl[d_], 0).astype(np.int8), v_))

        # ---- hazard checks over valid rows
        hv = np.flatnonzero(fr.valid)
        hv_fm = f_[hv]
        check_carry: dict[tuple[int, int], dict] = {}  # (device, check) -> new check state
        base_updates: dict[int, float] = {}  # series -> baseline first taken in this batch
        for fm in np.unique(hv_fm):
            rows_fm = hv[hv_fm == fm]
            for ci in _CHECKS_BY_FM.get(int(fm), []):
                res = self._run_check(ci, rows_fm, d_, sgrp, t_, v_, plans, olds, s_state, check_carry, base_updates)
                if res is not None:
                    results.append(res)
        ph = hv[np.isin(hv_fm, _PHASE_FM)]
        if ph.size:
            res = self._run_imbalance(ph, d_, f_, t_, v_, plans, olds, check_carry)
            if res is not None:
                results.append(res)

        # ---- combine per (device, kind), emit
        stated = np.array([d * _NK + KIND_CODE[k] for d, st in enumerate(olds) if st for k in st["k"]
                           if k in KIND_CODE], dtype=np.int64)
        findings += self._emit(results, d_, f_, t_, v_, plans, olds, new_states, stated)

        # ---- silent devices come back; state write-back
        dmin = np.full(n_dev, np.iinfo(np.int64).max, dtype=np.int64)
        dmax = np.full(n_dev, np.iinfo(np.int64).min, dtype=np.int64)
        np.minimum.at(dmin, d_, t_)
        np.maximum.at(dmax, d_, t_)
        for d, ns in new_states.items():
            if dmax[d] == np.iinfo(np.int64).min:
                continue
            p = plans[d]
            lt = max(int(dmax[d]), ns["lt"] or int(dmax[d]))
            ns["lt"] = lt
            ns["dl"] = lt + p.silent_ms
            if ns["sil"][0]:
                findings.append(self._silent_finding(p, Level.CLEAR, int(dmin[d]), int(dmin[d]) - ns["sil"][1], ns))
                ns["sil"] = [0, 0, 0]
        self._series_write(new_states, s_state, s_dev, s_fm, slast, t_, fr.out, base_updates)
        for (d, ci), cs in check_carry.items():
            if cs is None:
                new_states[d]["c"].pop(CHECKS[ci].id, None)
            else:
                new_states[d]["c"][CHECKS[ci].id] = cs
        self._write_back(states, dkeys, new_states)
        findings.sort(key=lambda f: (f.ts, f.site, f.device, f.kind))
        return findings

    # -------------------------------------------------------------------------------------------- checks
    def _run_check(self, ci: int, rows: np.ndarray, d_, sgrp, t_, v_, plans, olds, s_state, check_carry,
                   base_updates) -> _Res | None:
        c = CHECKS[ci]
        first, grp, first_idx, last = group_layout(sgrp[rows])
        gdev = d_[rows[last]]
        params = [plans[d].checks.get(ci) for d in gdev]
        on = np.array([p is not None for p in params], dtype=bool)
        if not on.any():
            return None
        if not on.all():
            rows = rows[on[grp]]
            first, grp, first_idx, last = group_layout(sgrp[rows])
            gdev = d_[rows[last]]
            params = [p for p in params if p is not None]
        G = last.shape[0]
        ts, v = t_[rows], v_[rows]
        cstates = [olds[d]["c"].get(c.id) if olds[d] else None for d in gdev]
        extra: dict[str, Any] = {}
        if c.mode == "level":
            x = v.copy()
        elif c.mode == "change":
            base = np.empty(G)
            for g, (p, d) in enumerate(zip(params, gdev)):
                if p.baseline is not None:
                    base[g] = p.baseline
                else:
                    ms = s_state[sgrp[rows[last[g]]]]
                    b = ms[_M_BASE] if ms else None
                    if b is None:
                        b = float(v[first_idx[last[g]]])
                        base_updates[int(sgrp[rows[last[g]]])] = b
                    base[g] = b
            diff = v - base[grp]
            dirs = np.array([p.direction for p in params])[grp]
            x = np.where(dirs == 0, np.abs(diff), np.where(dirs == 1, diff, -diff))
            extra["baseline"] = base[grp]
        elif c.mode == "rate":
            hist = [cs["hist"] if cs and cs.get("hist") else [[], []] for cs in cstates]
            x, refs, new_hist = windowed_rate(
                v, ts, first, grp, hist,
                np.array([p.window_ms for p in params], np.int64), np.array([p.bucket_ms for p in params], np.int64),
                np.array([p.consecutive for p in params], np.int64), np.array([p.per_ms for p in params]),
                np.array([p.direction for p in params], np.int64))
            extra["refs"] = refs
        else:  # pragma: no cover - registry guarantees the modes above
            raise ValueError(c.mode)
        level, out = self._hyst(x, ts, first, first_idx, grp, last, params, cstates)
        if c.mode == "rate":
            for g, h, hs in zip(gdev.tolist(), _hyst_rows(out), new_hist):
                check_carry[(g, ci)] = {"h": h, "hist": hs}
        else:
            _store_hyst(out, gdev, ci, cstates, check_carry)
        lines = np.array([p.lines for p in params])[grp]
        return _Res(ci, rows, level, x, lines, extra)

    def _run_imbalance(self, rows, d_, f_, t_, v_, plans, olds, check_carry) -> _Res | None:
        ci = _IMBALANCE
        c = CHECKS[ci]
        params_by_dev = {int(d): plans[d].checks.get(ci) for d in np.unique(d_[rows])}
        rows = rows[np.array([params_by_dev[int(d)] is not None for d in d_[rows]], dtype=bool)]
        if not rows.size:
            return None
        rows = rows[np.lexsort((f_[rows], t_[rows], d_[rows]))]
        first, grp, first_idx, last = group_layout(d_[rows])
        gdev = d_[rows[last]]
        params = [params_by_dev[int(d)] for d in gdev]
        cstates = [olds[d]["c"].get(c.id) if olds[d] else None for d in gdev]
        ts, v, f = t_[rows], v_[rows], f_[rows]
        phase_vals = []
        carry_ph = np.array([[_f(x) for x in (cs.get("ph") if cs else None) or [None] * 3] for cs in cstates])
        for k, code in enumerate(_PHASE_FM):
            li = ffill_index(f == code, first_idx)
            phase_vals.append(np.where(li >= 0, v[np.maximum(li, 0)], carry_ph[grp, k]))
        pv = np.vstack(phase_vals)
        imax, imin = pv.max(axis=0), pv.min(axis=0)
        min_load = np.array([p.min_load for p in params])[grp]
        with np.errstate(invalid="ignore", divide="ignore"):
            x = np.where(np.isfinite(imax) & np.isfinite(imin) & (imax >= min_load) & (imax > 0),
                         (imax - imin) / imax * 100.0, np.nan)
        level, out = self._hyst(x, ts, first, first_idx, grp, last, params, cstates)
        phases = _nullable(pv[:, last].T.ravel())
        for g, h in enumerate(_hyst_rows(out)):  # one per electrical device: the last phase currents are kept
            check_carry[(int(gdev[g]), ci)] = {"h": h, "ph": phases[3 * g:3 * g + 3]}
        lines = np.array([p.lines for p in params])[grp]
        return _Res(ci, rows, level, x, lines, {"phases": pv})

    @staticmethod
    def _hyst(x, ts, first, first_idx, grp, last, params, cstates):
        G = last.shape[0]
        carry = HystCarry.zeros(G)
        for g, cs in enumerate(cstates):
            h = cs.get("h") if cs else None
            if h:
                carry.bits[g] = h[0:3]
                carry.run[g] = h[3:6]
                carry.start[g] = h[6:9]
        lines = np.array([p.lines for p in params], dtype=np.float64)[grp]
        clear = np.array([p.clear_lines for p in params], dtype=np.float64)[grp]
        hold_n = np.array([p.hold_count for p in params], np.int64)[grp]
        hold_ms = np.array([p.hold_ms for p in params], np.int64)[grp]
        return graded_levels(x, ts, first, first_idx, grp, last, lines, clear, hold_n, hold_ms, carry)

    # -------------------------------------------------------------------------------------------- emission
    def _emit(self, results: list[_Res], d_, f_, t_, v_, plans, olds, new_states, stated) -> list[Finding]:
        """Combine levels per (device, kind) and emit. A (device, kind) that is clear now and was clear (no
        stored state) is skipped before any sorting: in a quiet batch that is nearly every row."""
        kcode = [KIND_CODE[CHECKS[r.check].kind] if r.check >= 0 else -1 - r.check for r in results]
        raised = [(d_[r.rows[r.level > 0]] * _NK + kc) for r, kc in zip(results, kcode)]
        live_codes = np.unique(np.concatenate([stated, *raised]))
        parts: list[tuple] = []
        for ri, r in enumerate(results):
            if not r.rows.shape[0]:
                continue
            dev = d_[r.rows]
            kc = kcode[ri]
            live = np.isin(dev * _NK + kc, live_codes)
            if not live.any():
                continue
            loc = np.flatnonzero(live)
            kind = np.full(loc.shape[0], kc, np.int64)
            if r.check >= 0:
                slot = np.full(loc.shape[0], CHECKS[r.check].slot, np.int64)
            else:
                slot = _FM_SLOT[f_[r.rows[loc]]]
            parts.append((dev[loc], kind, slot, np.full(loc.shape[0], ri, np.int64), loc, r.rows[loc], r.level[loc]))
        if not parts:
            return []
        e_dev, e_kind, e_slot, e_res, e_loc, e_row, e_lvl = (np.concatenate(a) for a in zip(*parts))
        e_ts = t_[e_row]
        o = np.lexsort((e_slot, e_ts, e_kind, e_dev))
        e_dev, e_kind, e_slot, e_res, e_loc, e_row, e_lvl, e_ts = (
            a[o] for a in (e_dev, e_kind, e_slot, e_res, e_loc, e_row, e_lvl, e_ts))
        first, grp, first_idx, last = group_layout(e_dev * _NK + e_kind)
        G = last.shape[0]
        g_dev, g_kind = e_dev[last], e_kind[last]

        carry_slots = np.zeros((G, MAX_SLOTS), dtype=np.int8)
        carry_l = np.zeros(G, dtype=np.int8)
        carry_te = np.zeros(G, dtype=np.int64)
        carry_lt = np.zeros(G, dtype=np.int64)
        kstates = []
        for g in range(G):
            st = olds[g_dev[g]]
            ks = st["k"].get(KINDS[g_kind[g]]) if st else None
            kstates.append(ks)
            if ks:
                carry_l[g] = ks["l"]
                carry_te[g] = ks["te"]
                carry_lt[g] = ks["lt"]
                carry_slots[g, :len(ks["s"])] = ks["s"]

        li = np.empty((e_dev.shape[0], MAX_SLOTS), dtype=np.int64)
        slot_lvl = np.empty((e_dev.shape[0], MAX_SLOTS), dtype=np.int8)
        for col in range(MAX_SLOTS):
            li[:, col] = ffill_index(e_slot == col, first_idx)
            slot_lvl[:, col] = np.where(li[:, col] >= 0, e_lvl[np.maximum(li[:, col], 0)], carry_slots[grp, col])
        agg = slot_lvl.max(axis=1)
        prev = prev_in_group(agg, first, grp, carry_l)
        change = agg != prev
        # time of entering the current level; re-assert on the grid te + k*R
        idx = np.arange(agg.shape[0])
        lastchg = np.maximum.accumulate(np.where(change, idx, first_idx - 1))
        te = np.where(lastchg >= first_idx, e_ts[np.maximum(lastchg, 0)], carry_te[grp])
        prev_ts = prev_in_group(e_ts, first, grp, carry_lt)
        R = np.array([plans[d].reassert_ms for d in g_dev], dtype=np.int64)[grp]
        reassert = ~change & (agg > 0) & ((e_ts - te) // R > (prev_ts - te) // R)
        emit = np.flatnonzero(change | reassert)

        findings = []
        for j in emit.tolist():
            g = int(grp[j])
            findings.append(self._finding(results, j, g, g_dev, g_kind, agg, prev, e_slot, e_res, e_loc, li,
                                          slot_lvl, kstates, t_, v_, f_, plans, bool(change[j])))
        # write kind states
        for g in range(G):
            j = int(last[g])
            kind = KINDS[g_kind[g]]
            ks = kstates[g]
            xs = list(ks["x"]) if ks else [None] * KIND_SLOTS[kind]
            for col in range(KIND_SLOTS[kind]):
                k = li[j, col]
                if k >= 0:
                    r = results[e_res[k]]
                    xs[col] = _j(r.x[e_loc[k]])
            slots = [int(s) for s in slot_lvl[j, :KIND_SLOTS[kind]]]
            if not agg[j] and not any(slots):
                new_states[int(g_dev[g])]["k"].pop(kind, None)
                continue
            new_states[int(g_dev[g])]["k"][kind] = {
                "l": int(agg[j]), "te": int(te[j]), "lt": int(e_ts[j]), "s": slots, "x": xs}
        return findings

    def _finding(self, results, j, g, g_dev, g_kind, agg, prev, e_slot, e_res, e_loc, li, slot_lvl, kstates,
                 t_, v_, f_, plans, changed: bool) -> Finding:
        p = plans[g_dev[g]]
        kind = KINDS[g_kind[g]]
        level = int(agg[j])
        before = int(prev[j])
        ts = int(t_[_row(results, e_res, e_loc, j)])
        # the slot that explains the level: this entry's own if it carries the level, else the worst one
        col = int(e_slot[j])
        if level > 0 and slot_lvl[j, col] != level:
            col = int(np.flatnonzero(slot_lvl[j] == level)[0])
        k = int(li[j, col])
        ev: dict[str, Any] = {"level": LEVEL_NAMES[level - 1] if level else "clear",
                              "previous": LEVEL_NAMES[before - 1] if before else "clear",
                              "reassert": not changed}
        if k >= 0:
            r = results[e_res[k]]
            loc = int(e_loc[k])
            row = int(r.rows[loc])
            metric = FM_LIST[f_[row]][1] if r.check < 0 or CHECKS[r.check].metric != "*" else "*"
            x, raw, rts = float(r.x[loc]), float(v_[row]), int(t_[row])
        else:  # the worst slot has no reading in this batch: take what the state remembered
            r = None
            loc = row = -1
            x = _f(kstates[g]["x"][col]) if kstates[g] else _NAN
            raw, rts = x, ts
            metric = ""
        if kind in FAULT_KINDS:
            if not metric:
                metric = list(FAMILIES[p.family])[col]
            return self._fault_finding(p, kind, level, ts, metric, raw, ev, rts)
        ci = r.check if r is not None else _KIND_SLOT_CHECK[(kind, col)]
        c = CHECKS[ci]
        metric = metric or c.metric
        prm = p.checks.get(ci)
        if prm is None:  # check switched off by a rule reload while raised: report the clear plainly
            return Finding(p.site, p.device, p.family, kind, "hazard", Level(level), ts, metric, x, _NAN,
                           "check disabled by configuration", "", False, ev)
        if level:
            threshold = prm.lines[level - 1]
            rule = prm.rules[level - 1]
        else:
            ref_level = before or 1
            threshold = prm.clear_lines[ref_level - 1]
            rule = (f"cleared: {metric} below {threshold:.6g} {prm.unit} "
                    f"({prm.clear_ratio:g} x the {LEVEL_NAMES[ref_level - 1]} line)")
        ev.update({"value": raw, "reading_ts": rts, "unit": prm.unit,
                   "lines": {LEVEL_NAMES[i]: prm.lines[i] for i in range(3) if not math.isnan(prm.lines[i])},
                   "clear_ratio": prm.clear_ratio, "hold_count": prm.hold_count, "hold_s": prm.hold_ms / 1000,
                   **prm.evidence})
        if r is not None and r.extra:
            if "baseline" in r.extra:
                ev["baseline"] = float(r.extra["baseline"][loc])
            if "refs" in r.extra:
                refs = r.extra["refs"]
                ev["window_ref"] = [[int(refs["ts"][i]), float(refs["value"][i])]
                                    for i in refs["index"][loc].tolist() if i >= 0]
            if "phases" in r.extra:
                ev["phases_a"] = [_j(r.extra["phases"][i, loc]) for i in range(3)]
        if p.rules.overridden_by:
            ev["config"] = list(p.rules.overridden_by)
        return Finding(p.site, p.device, p.family, kind, "hazard", Level(level), ts, metric, x,
                       float(threshold), rule, prm.source, level >= prm.major_from, ev)

    def _fault_finding(self, p: DevicePlan, kind: str, level: int, ts: int, metric: str, value: float,
                       ev: dict, rts: int) -> Finding:
        s = p.sensors[metric]
        if kind == "fault.out_of_range":
            threshold = s.hi if value > s.hi else s.lo
            rule = f"{metric} outside its physical range [{s.lo:g}, {s.hi:g}]"
        elif kind == "fault.spike":
            threshold = s.step
            rule = f"{metric} jumped more than {s.step:g} and came back"
        else:
            threshold = s.flat_ms / 1000
            rule = f"{metric} unchanged (+-{s.eps:g}) for >= {s.flat_ms / 1000:g} s"
        if not level:
            rule = "cleared: " + rule
        ev.update({"value": value, "reading_ts": rts, "withheld_from_hazards": bool(level)})
        return Finding(p.site, p.device, p.family, kind, "fault", Level(level), ts, metric, value,
                       float(threshold), rule, p.fault_source, False, ev)

    # ============================================================================================ clock
    def tick(self, now_ms: int, states: dict[str, dict]) -> list[Finding]:
        """Silent devices (deadman), judged against the wall clock; re-asserts while they stay silent."""
        out = []
        for key, st in list(states.items()):
            if not isinstance(st, dict) or st.get("v") != STATE_VERSION or "dl" not in st or st.get("dl") is None:
                continue
            if now_ms <= st["dl"]:
                continue
            site, _, device = key.partition("/")
            p = self.plan(site, device, st["fam"])
            sil = st["sil"]
            silent_for = now_ms - st["lt"]
            if not sil[0]:
                lvl = p.fault_levels["fault.silent"]
                ns = dict(st)
                ns["sil"] = [lvl, now_ms, now_ms]
                states[key] = ns
                out.append(self._silent_finding(p, Level(lvl), now_ms, silent_for, ns))
            elif now_ms - sil[2] >= p.reassert_ms:
                ns = dict(st)
                ns["sil"] = [sil[0], sil[1], now_ms]
                states[key] = ns
                f = self._silent_finding(p, Level(sil[0]), now_ms, silent_for, ns)
                f.evidence["reassert"] = True
                out.append(f)
        return out

    @staticmethod
    def _silent_finding(p: DevicePlan, level: Level, ts: int, silent_ms: int, st: dict) -> Finding:
        limit = p.silent_ms / 1000
        rule = (f"no reading for >= {limit:g} s ({p.rules.faults.silent_after_intervals:g} x expected interval "
                f"{p.rules.rules.expected_interval:g} s)")
        return Finding(p.site, p.device, p.family, "fault.silent", "fault", level, ts, "*", silent_ms / 1000, limit,
                       rule if level else "cleared: readings resumed", p.fault_source, False,
                       {"last_reading_ts": st.get("lt"), "silent_s": silent_ms / 1000, "reassert": False})

    def on_status(self, status: GatewayStatus, states: dict[str, dict]) -> list[Finding]:
        """Gateway offline (MQTT last will) raises a fault; back online clears it. Older statuses are ignored."""
        key = f"{status.site}/gateway:{status.gateway}"
        st = states.get(key)
        if not (isinstance(st, dict) and st.get("v") == STATE_VERSION and st.get("gw")):
            st = {"v": STATE_VERSION, "gw": True, "ts": None, "l": 0, "te": 0}
        if st["ts"] is not None and status.ts < st["ts"]:
            return []
        ns = dict(st)
        ns["ts"] = status.ts
        faults = self.rules.defaults.faults
        lvl = {"yellow": 1, "orange": 2, "red": 3}[faults.gateway_offline_level]
        out = []
        if not status.online and not st["l"]:
            ns["l"], ns["te"] = lvl, status.ts
            out.append(self._gateway_finding(status, Level(lvl), "gateway offline (MQTT last will)"))
        elif status.online and st["l"]:
            ns["l"], ns["te"] = 0, status.ts
            f = self._gateway_finding(status, Level.CLEAR, "cleared: gateway back online")
            f.evidence["offline_s"] = (status.ts - st["te"]) / 1000
            out.append(f)
        states[key] = ns
        return out

    @staticmethod
    def _gateway_finding(status: GatewayStatus, level: Level, rule: str) -> Finding:
        return Finding(status.site, f"gateway:{status.gateway}", "gateway", "fault.gateway_offline", "fault", level,
                       status.ts, "online", 1.0 if status.online else 0.0, 1.0, rule, "MQTT last will", False,
                       {"online": status.online, "detail": dict(status.detail)})

    # ============================================================================================ state
    @staticmethod
    def _series_write(new_states, s_state, s_dev, s_fm, slast, t_, out: SeriesCarry, base_updates) -> None:
        cols = [t_[slast].tolist(), _nullable(out.p1), _nullable(out.p2)] + [
            a.astype(np.int64).tolist() for a in (out.p1_ts, out.sus, out.frun, out.fstart, out.oor_bit,
                                                  out.oor_good, out.spk_bit, out.spk_good, out.flat_bit)]
        metric = [FM_LIST[f][1] for f in s_fm.tolist()]
        for s, row in enumerate(zip(*cols)):
            old = s_state[s]
            b = base_updates.get(s, old[_M_BASE] if old else None)
            new_states[int(s_dev[s])]["m"][metric[s]] = [*row, b]

    @staticmethod
    def _write_back(states, dkeys, new_states) -> None:
        for d, ns in new_states.items():
            states[dkeys[d]] = ns


def _row(results, e_res, e_loc, j) -> int:
    return int(results[e_res[j]].rows[e_loc[j]])


def _store_hyst(out: HystCarry, gdev: np.ndarray, ci: int, cstates: list, check_carry: dict) -> None:
    """Only a latch that is set or a hold run in progress needs remembering; an idle check stores nothing."""
    had = np.fromiter((cs is not None for cs in cstates), bool, len(cstates))
    busy = out.bits.any(axis=1) | (out.run > 0).any(axis=1)
    sel = np.flatnonzero(busy | had)
    if not sel.size:
        return
    rows = np.hstack([out.bits[sel], out.run[sel], out.start[sel]]).astype(np.int64).tolist()
    for g, h in zip(sel.tolist(), rows):
        check_carry[(int(gdev[g]), ci)] = {"h": h} if busy[g] else None


def _hyst_rows(out: HystCarry) -> list[list[int]]:
    return np.hstack([out.bits, out.run, out.start]).astype(np.int64).tolist()



def _nullable(a: np.ndarray) -> list:
    return np.where(np.isnan(a), None, a.astype(object)).tolist()


def _series_carry(s_state: list[list | None]) -> SeriesCarry:
    S = len(s_state)
    rows = [ms[1:12] if ms else _EMPTY_SERIES for ms in s_state]
    a = np.array(rows, dtype=np.float64).reshape(S, 11)  # None -> nan
    i = np.nan_to_num(a[:, 2:]).astype(np.int64)
    return SeriesCarry(a[:, 0], a[:, 1], i[:, 0], i[:, 1].astype(bool), i[:, 2], i[:, 3], i[:, 4].astype(bool),
                       i[:, 5], i[:, 6].astype(bool), i[:, 7], i[:, 8].astype(bool))


_EMPTY_SERIES = [None, None, 0, 0, 0, 0, 0, 0, 0, 0, 0]
