"""The resident store: what the engine keeps between batches per device, as arrays instead of dicts.

Why arrays: at fleet size (100k devices) a dict per series, check and kind state cost several KB of heap per
device and a Python loop per device per batch. Here a device owns a block of rows in the series arrays (one row
per metric slot of its family), and its check states, gaps, covered time, kind states and outage records are
rows of sorted pools keyed by device id (``_Pool``): a batch gathers and scatters them with a handful of numpy
operations. A state dict is built from these only when one is exported (``export_state``: checkpoints) and
read back into them when one is restored; ``detectors.engine`` owns the flow, this module the layout.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from detectors.plan import CHECKS, KIND_CODE, KIND_SLOTS, KINDS, MAX_SLOTS
from sitewatch.contracts import FAMILIES

_NK = len(KINDS)
_NC = len(CHECKS)
_NAN = float("nan")
_FAM_NM = {f: len(ms) for f, ms in FAMILIES.items()}  # metric slots per family
_NM_BY_CODE = np.array([_FAM_NM[f] for f in FAMILIES] + [0], dtype=np.int64)  # [-1]: unknown family
# series state, per metric slot: ints [t, p1_ts, suspect, flat_run, flat_start, oor_bit, oor_good, spike_bit,
# spike_good, flat_bit] (t = _NO_TS before the first reading) and floats [p1, p2, baseline] (null = none yet)
_NI, _NF = 10, 3
_NO_TS = int(np.iinfo(np.int64).min)
_EMPTY_I = [_NO_TS] + [0] * (_NI - 1)
_EMPTY_F = [None] * _NF
_I8 = [2, 5, 7, 9]  # the flags (suspect, oor_bit, spike_bit, flat_bit): int8 in the store
# the run counts (flat_run, oor_good, spike_good): int32 in the store, saturated at its top — they are only compared
# against small limits (a few readings), and 2**31 readings of one series are decades at one a second
_I32 = [3, 6, 8]
_I32_MAX = int(np.iinfo(np.int32).max)
_I64 = [j for j in range(_NI) if j not in _I8 and j not in _I32]  # the times
_FAM_NM_L = _NM_BY_CODE.tolist()

# a kind state in the store: ints [l, te, lt, has episode, start, peak_ts, first_breach, last_breach, worst],
# int8 slot levels, floats [x per slot, peak, peak_reading] (NaN: null)
_KI, _KF = 9, MAX_SLOTS + 2
_EP_I = ("start", "peak_ts", "first_breach", "last_breach", "worst")


def _kind_rows(kss: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kind state dicts as the store's rows."""
    n = len(kss)
    ki = np.zeros((n, _KI), np.int64)
    kb = np.zeros((n, MAX_SLOTS), np.int8)
    kf = np.full((n, _KF), np.nan)
    for j, ks in enumerate(kss):
        ki[j, 0:3] = ks["l"], ks["te"], ks["lt"]
        kb[j, :len(ks["s"])] = ks["s"]
        kf[j, :len(ks["x"])] = [_f(x) for x in ks["x"]]
        ep = ks.get("ep")
        if ep:
            ki[j, 3] = 1
            ki[j, 4:9] = [int(ep.get(f) or 0) for f in _EP_I]
            kf[j, MAX_SLOTS:] = _f(ep.get("peak")), _f(ep.get("peak_reading"))
    return ki, kb, kf


def _ep_dict(ki: list, kf: list) -> dict:
    """An episode as the state carries it, from a kind state's store row (as lists)."""
    pk, pr = kf[MAX_SLOTS], kf[MAX_SLOTS + 1]
    return {"start": ki[4], "peak": None if pk != pk else pk, "peak_ts": ki[5],
            "peak_reading": None if pr != pr else pr, "first_breach": ki[6], "last_breach": ki[7], "worst": ki[8]}


def _kind_dicts(ki: np.ndarray, kb: np.ndarray, kf: np.ndarray, kc: np.ndarray) -> list[dict]:
    """The store's kind rows as the state's dicts."""
    out = []
    for r_i, r_b, r_f, c in zip(ki.tolist(), kb.tolist(), kf.tolist(), kc.tolist()):
        nsl = KIND_SLOTS[KINDS[c]]
        ks = {"l": r_i[0], "te": r_i[1], "lt": r_i[2], "s": r_b[:nsl],
              "x": [None if x != x else x for x in r_f[:nsl]]}
        if r_i[3]:
            ks["ep"] = _ep_dict(r_i, r_f)
        out.append(ks)
    return out


_CHECK_INDEX = {c.id: c.index for c in CHECKS}
_CHECK_IDS = [c.id for c in CHECKS]


def _og_list(recs: list, smp: list, vals: list) -> list:
    """A device's ``og`` as its state carries it, from its rows of the ``og`` and ``ogs`` pools (as lists): each
    record ``[last before, first after]``, and a third item, the rate samples kept from before it, if the record
    keeps samples (its flag: an empty dict when there were none)."""
    pre: dict[int, dict] = {}
    for (sx, ci, t), v in zip(smp, vals):
        h = pre.setdefault(sx, {}).setdefault(_CHECK_IDS[ci], [[], []])
        h[0].append(t)
        h[1].append(v)
    return [[x0, y0, pre.get(x0, {})] if has else [x0, y0] for x0, y0, has in recs]


def _f(x: Any) -> float:
    return _NAN if x is None else float(x)


def _nullable(a: np.ndarray) -> list:
    return np.where(np.isnan(a), None, a.astype(object)).tolist()


def _block_rows(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Row numbers of consecutive blocks: ``starts[i] .. starts[i] + counts[i] - 1`` for each i, concatenated."""
    total = int(counts.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    return np.repeat(starts - np.cumsum(np.r_[0, counts[:-1]]), counts) + np.arange(total)


def _row_view(a: np.ndarray) -> np.ndarray:
    """A C-contiguous 2-d array as a 1-d array of its rows (one opaque item per row): a fancy row assignment to
    it is a copy per row, several times faster than the same assignment to the 2-d array."""
    return a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).reshape(-1)


def _split(items: list, counts: np.ndarray) -> list[list]:
    """``items`` cut into consecutive runs of these lengths (the batched readers' per-device lists: one
    ``tolist`` for all devices, then a list slice each)."""
    ends = np.cumsum(counts).tolist()
    return [items[x:y] for x, y in zip([0] + ends[:-1], ends)]


class _Pool:
    """Entries sorted by an int64 key (a device's id × ``_NC`` + check index), with columns beside the key; a
    key may have several entries (a rate check's samples, in time order). Changes are queued during a batch and
    applied at once: one merge per batch instead of a Python object per (device, check)."""

    def __init__(self, *proto: np.ndarray):
        self.key = np.zeros(0, dtype=np.int64)
        self.col = list(proto)  # empty arrays: dtype and trailing shape of each column
        self._drop: list[np.ndarray] = []
        self._drop_rows: list[np.ndarray] = []
        self._add: list[tuple] = []

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each key's entries start, and how many there are."""
        lo = np.searchsorted(self.key, keys, side="left")
        return lo, np.searchsorted(self.key, keys, side="right") - lo

    def span(self, k0: int, k1: int) -> tuple[int, int]:
        """The entries with keys in ``[k0, k1)``."""
        return int(self.key.searchsorted(k0)), int(self.key.searchsorted(k1))

    def spans(self, k0: np.ndarray, k1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``span`` of many key ranges ``[k0[i], k1[i])`` at once: where each range's entries start, how many."""
        lo = self.key.searchsorted(k0)
        return lo, self.key.searchsorted(k1) - lo

    def queue(self, drop: np.ndarray, key: np.ndarray, *cols: np.ndarray) -> None:
        """Every entry of the keys ``drop`` goes, the given entries come (keys in ``drop``; grouped by key)."""
        self._drop.append(drop)
        if key.shape[0]:
            self._add.append((key, *cols))

    def queue_rows(self, rows: np.ndarray, key: np.ndarray, *cols: np.ndarray) -> None:
        """``queue`` for a caller that has looked its keys up already: the entries at these positions (of the pool
        as it is until ``apply``) go, the given ones come."""
        self._drop_rows.append(rows)
        if key.shape[0]:
            self._add.append((key, *cols))

    def apply(self) -> None:
        """Drop, then merge the new entries in (sorted among themselves, inserted by binary search): linear in
        the pool, with a sort of the batch's entries only."""
        key, cols = self.key, self.col
        if (self._drop or self._drop_rows) and key.shape[0]:
            found = [_block_rows(*self.find(np.concatenate(self._drop)))] if self._drop else []
            rows = np.concatenate(found + self._drop_rows)
            if rows.shape[0]:
                keep = np.ones(key.shape[0], dtype=bool)
                keep[rows] = False
                if keep.any():
                    key, cols = key[keep], [c.compress(keep, axis=0) for c in cols]  # 2-d: ~10x a mask index
                else:  # every entry goes (the rate samples and gaps of a batch with the whole fleet)
                    key, cols = key[:0], [c[:0] for c in cols]
        if self._add:
            ak = np.concatenate([a[0] for a in self._add])
            acols = [np.concatenate([a[j + 1] for a in self._add]) for j in range(len(cols))]
            if not key.shape[0] and (ak.shape[0] < 2 or bool((ak[1:] >= ak[:-1]).all())):
                # all new and in key order already: what the stable sort gives (in the dtypes it gives)
                key, cols = ak, [ac.astype(np.result_type(c.dtype, ac.dtype), copy=False) for c, ac in zip(cols, acols)]
            elif 4 * ak.shape[0] > key.shape[0]:  # most of the pool is new: one stable sort of everything
                key = np.concatenate([key, ak])
                o = np.argsort(key, kind="stable")
                key, cols = key[o], [np.concatenate([c, ac]).take(o, axis=0) for c, ac in zip(cols, acols)]
            else:
                o = np.argsort(ak, kind="stable")  # a key's entries keep their order (samples, gaps: in time)
                pos = np.searchsorted(key, ak[o], side="right")
                cols = [np.insert(c, pos, ac.take(o, axis=0), axis=0) for c, ac in zip(cols, acols)]
                key = np.insert(key, pos, ak[o])
        self.key, self.col = key, cols
        self._drop, self._drop_rows, self._add = [], [], []


class _Rows(Mapping):
    """The store's key → first row map, read off the engine's device contexts (``_SharedPlan.row``): one entry
    per device in one dict instead of two."""

    __slots__ = ("ctx",)

    def __init__(self, ctx: dict):
        self.ctx = ctx

    def get(self, key: str, default: Any = None) -> Any:
        c = self.ctx.get(key)
        return c.row if c is not None and c.row >= 0 else default

    def __getitem__(self, key: str) -> int:
        row = self.get(key)
        if row is None:
            raise KeyError(key)
        return row

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return (k for k, c in self.ctx.items() if c.row >= 0)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __setitem__(self, key: str, row: int) -> None:
        self.ctx[key].row = row


class _SeriesStore:
    """The series blocks (``m``) and check states (``c``) of resident devices, as arrays that persist across
    batches: a device owns ``nm`` consecutive rows (one per metric slot of its family) of ``i`` and ``f`` from
    the row ``at[key]``, which is also its id in the check pools (key = id × ``_NC`` + check): the hysteresis
    of checks with a latch set or a hold running (``hyst``: 3 bits, 3 runs, 3 run starts), the samples of rate
    checks (``rate``: time, value) and the last phase currents of the imbalance check (``phase``); and in the
    pools keyed by the id alone, the device's last gaps (``cad``) and covered intervals (``cov``). A pool is
    rebuilt once per batch (linear in its size: at 100k devices a few ms per pool, see docs/performance.md).

    The integer columns of a series are kept as int64 (times: ``i``), int32 (run counts: ``n``) and int8 (the four
    flags: ``b``) — 19 B less per metric slot than int64 throughout;
    ``fam[row]`` is the family code of the block starting at a row. Rows are handed out once per device and never
    moved; ``clear`` drops everything (partitions moved away)."""

    def __init__(self, ctx: dict | None = None) -> None:
        self._ctx = ctx if ctx is not None else {}
        self.at = _Rows(self._ctx)  # key -> first row (kept on the engine's device contexts)
        self.fam = bytearray()  # per row: family code of the block starting there
        self.i = np.empty((0, len(_I64)), dtype=np.int64)
        self.n = np.empty((0, len(_I32)), dtype=np.int32)
        self.b = np.empty((0, len(_I8)), dtype=np.int8)
        self.f = np.empty((0, _NF))
        self.top = 0
        self.hyst = _Pool(np.zeros((0, 9), np.int64))
        self.rate = _Pool(np.zeros(0, np.int64), np.zeros(0))
        self.phase = _Pool(np.zeros((0, 3)), np.zeros((0, 3), np.int64))
        self.pools = (self.hyst, self.rate, self.phase)
        # keyed by the device id alone: the last gaps (``cad``) and the covered intervals (``cov``)
        self.cad = _Pool(np.zeros(0, np.int64))
        self.cov = _Pool(np.zeros((0, 2), np.int64))
        # keyed by device id × ``_NK`` + kind: the kind states (``k``) of kinds raised or with a slot raised
        self.kinds = _Pool(np.zeros((0, _KI), np.int64), np.zeros((0, MAX_SLOTS), np.int8),
                           np.zeros((0, _KF)))
        # keyed by the device id: outages heard live (``og``: last before, first after, whether the record keeps
        # rate samples), in time order, and the rate samples each kept from before it (record's start, check,
        # time; value)
        self.og = _Pool(np.zeros((0, 3), np.int64))
        self.ogs = _Pool(np.zeros((0, 3), np.int64), np.zeros(0))

    def forget_checks(self, ids: np.ndarray) -> None:
        """Drop the check states, gaps and covered time of these device ids (queued: applied with the batch's
        own changes)."""
        if ids.shape[0]:
            ks = (ids[:, None] * _NC + np.arange(_NC)).ravel()
            for pool in self.pools:
                pool.queue(ks, ks[:0])
            self.cad.queue(ids, ids[:0])
            self.cov.queue(ids, ids[:0])
            kk = (ids[:, None] * _NK + np.arange(_NK)).ravel()
            self.kinds.queue(kk, kk[:0])
            self.og.queue(ids, ids[:0])
            self.ogs.queue(ids, ids[:0])

    def import_times(self, dev_id: int, cad: list, cov: list) -> None:
        """A full state's gaps and covered intervals into the pools (after ``forget_checks`` of the device)."""
        k = np.array([dev_id], dtype=np.int64)
        if cad:
            self.cad.queue(k[:0], np.repeat(k, len(cad)), np.array(cad, dtype=np.int64))
        if cov:
            self.cov.queue(k[:0], np.repeat(k, len(cov)), np.array(cov, dtype=np.int64).reshape(-1, 2))

    def times_of(self, name: str, key: str) -> list:
        """A device's ``cad`` (gaps) or ``cov`` (covered intervals), as the state's list."""
        a = self.at.get(key)
        if a is None:
            return []
        pool = getattr(self, name)
        x, y = pool.span(a, a + 1)
        return pool.col[0][x:y].tolist()

    def times_many(self, name: str, ids: np.ndarray) -> list[list]:
        """``times_of`` of many devices (``ids``: their first rows, as ``at`` gives them), in their order."""
        pool = getattr(self, name)
        lo, cnt = pool.find(ids)
        return _split(pool.col[0][_block_rows(lo, cnt)].tolist(), cnt)

    def import_checks(self, dev_id: int, c: dict) -> None:
        """A full state's check states (``c``) into the pools (after ``forget_checks`` of the device)."""
        for cid, cs in c.items():
            ci = _CHECK_INDEX.get(cid)
            if ci is None or not cs:
                continue
            k = np.array([dev_id * _NC + ci], dtype=np.int64)
            if h := cs.get("h"):
                self.hyst.queue(k[:0], k, np.array([h], dtype=np.int64).reshape(1, 9))
            if hs := cs.get("hist"):
                self.rate.queue(k[:0], np.repeat(k, len(hs[0])), np.array(hs[0], dtype=np.int64),
                                np.array(hs[1], dtype=np.float64))
            if "ph" in cs or "pt" in cs:
                ph = np.full((1, 3), np.nan)
                pt = np.full((1, 3), _NO_TS, dtype=np.int64)
                if cs.get("ph"):
                    ph[0] = np.array(cs["ph"], dtype=np.float64)
                if cs.get("pt"):
                    pt[0] = cs["pt"]
                self.phase.queue(k[:0], k, ph, pt)

    def import_kinds(self, dev_id: int, k: dict) -> None:
        """A full state's kind states (``k``) into the pool (after ``forget_checks`` of the device)."""
        rows = [(KIND_CODE[kind], ks) for kind, ks in k.items() if kind in KIND_CODE and ks]
        if rows:
            rows.sort(key=lambda r: r[0])
            ki, kb, kf = _kind_rows([ks for _, ks in rows])
            self.kinds.queue(np.zeros(0, np.int64), np.array([dev_id * _NK + kc for kc, _ in rows], np.int64),
                             ki, kb, kf)

    def kinds_of(self, key: str) -> dict:
        """``k`` of one device as its state carries it (JSON-able)."""
        a = self.at.get(key)
        return {} if a is None else self.kinds_many(np.array([a], dtype=np.int64))[0]

    def kinds_many(self, ids: np.ndarray) -> list[dict]:
        """``k`` of many devices (``ids``: their first rows), in their order: one lookup in the kinds pool and one
        ``_kind_dicts`` for all of them."""
        pool = self.kinds
        lo, cnt = pool.spans(ids * _NK, ids * _NK + _NK)
        rows = _block_rows(lo, cnt)
        kc = pool.key[rows] % _NK  # key: id × _NK + kind
        names = _split([KINDS[c] for c in kc.tolist()], cnt)
        kss = _split(_kind_dicts(pool.col[0][rows], pool.col[1][rows], pool.col[2][rows], kc), cnt)
        return [dict(zip(n, ks)) for n, ks in zip(names, kss)]

    def apply(self) -> None:
        for pool in (*self.pools, self.cad, self.cov, self.kinds, self.og, self.ogs):
            pool.apply()

    def import_outages(self, dev_id: int, og: list) -> None:
        """A full state's outage records (``og``) into the pools (after ``forget_checks`` of the device)."""
        recs, smp = [], []
        for o in og:
            recs.append([int(o[0]), int(o[1]), int(len(o) > 2)])
            for cid, (tl, vl) in (o[2] if len(o) > 2 else {}).items():
                ci = _CHECK_INDEX.get(cid)
                if ci is not None:
                    smp += [(int(o[0]), ci, int(t), float(v)) for t, v in zip(tl, vl)]
        k = np.array([dev_id], dtype=np.int64)
        if recs:
            self.og.queue(k[:0], np.repeat(k, len(recs)), np.array(recs, dtype=np.int64).reshape(-1, 3))
        if smp:
            self.ogs.queue(k[:0], np.repeat(k, len(smp)), np.array([r[:3] for r in smp], dtype=np.int64),
                           np.array([r[3] for r in smp], dtype=np.float64))

    def outages(self, key: str) -> list:
        """``og`` of one device as its state carries it (JSON-able)."""
        a = self.at.get(key)
        if a is None:
            return []
        x, y = self.og.span(a, a + 1)
        recs = self.og.col[0][x:y].tolist()
        if not recs:
            return []
        x, y = self.ogs.span(a, a + 1)
        return _og_list(recs, self.ogs.col[0][x:y].tolist(), self.ogs.col[1][x:y].tolist())

    def outages_many(self, ids: np.ndarray) -> list[list]:
        """``outages`` of many devices (``ids``: their first rows), in their order: one lookup per pool."""
        lo, cnt = self.og.find(ids)
        recs = _split(self.og.col[0][_block_rows(lo, cnt)].tolist(), cnt)
        lo, cnt = self.ogs.find(ids)
        rows = _block_rows(lo, cnt)
        smp, val = _split(self.ogs.col[0][rows].tolist(), cnt), _split(self.ogs.col[1][rows].tolist(), cnt)
        return [_og_list(r, s, v) if r else [] for r, s, v in zip(recs, smp, val)]

    def record_outages(self, ids: np.ndarray, own: np.ndarray, xs: np.ndarray, ys: np.ndarray,
                       older: np.ndarray, keep_n: int) -> None:
        """New outage records of these devices (``own``: index into ``ids``, in time order per device), each with
        the device's rate samples as the rate pool holds them (before this batch's changes are applied), then
        the records older than ``older`` (per device) dropped and the last ``keep_n`` kept — what the plain
        engine does to a state's ``og`` list. Records only ever end later than the ones before them, so what
        goes is always a device's oldest records."""
        G = ids.shape[0]
        lo, cnt = self.og.find(ids)
        rows = _block_rows(lo, cnt)
        o_own = np.repeat(np.arange(G), cnt)
        o_rec = self.og.col[0][rows]
        n_old = o_own.shape[0]
        own = np.concatenate([o_own, own])
        rec = np.concatenate([o_rec, np.column_stack([xs, ys, np.ones_like(xs)])])
        so = np.argsort(own, kind="stable")  # a device's old records first, then its new ones
        own, rec = own[so], rec[so]
        is_new = so >= n_old
        keep = rec[:, 1] >= older[own]
        own, rec, is_new = own[keep], rec[keep], is_new[keep]
        ends = np.searchsorted(own, np.arange(G), side="right")
        keep = (ends[own] - np.arange(own.shape[0])) <= keep_n
        own, rec, is_new = own[keep], rec[keep], is_new[keep]
        # samples: those of the old records kept (from the first one kept on), and a copy of the rate pool's for
        # each new record kept
        first_x = np.full(G, np.iinfo(np.int64).max, dtype=np.int64)
        old_k = ~is_new
        np.minimum.at(first_x, own[old_k], rec[old_k, 0])
        lo, cnt = self.ogs.find(ids)
        rows = _block_rows(lo, cnt)
        s_own = np.repeat(np.arange(G), cnt)
        s_i, s_v = self.ogs.col[0][rows], self.ogs.col[1][rows]
        sk = s_i[:, 0] >= first_x[s_own]
        k0 = ids * _NC
        lo = self.rate.key.searchsorted(k0)
        cnt = self.rate.key.searchsorted(k0 + _NC) - lo
        rrows = _block_rows(lo, cnt)
        r_own = np.repeat(np.arange(G), cnt)
        r_ci = self.rate.key[rrows] - k0[r_own]
        r_t, r_v = self.rate.col[0][rrows], self.rate.col[1][rrows]
        nr = np.flatnonzero(is_new)
        # per new record, the rate rows of its device: rows of r_* in device order, repeated per record
        r_lo = np.searchsorted(r_own, own[nr])
        r_cnt = np.searchsorted(r_own, own[nr], side="right") - r_lo
        cp = _block_rows(r_lo, r_cnt)
        c_own = np.repeat(own[nr], r_cnt)
        c_x = np.repeat(rec[nr, 0], r_cnt)
        a_own = np.concatenate([s_own[sk], c_own])
        a_i = np.concatenate([s_i[sk], np.column_stack([c_x, r_ci[cp], r_t[cp]])])
        a_v = np.concatenate([s_v[sk], r_v[cp]])
        so = np.argsort(a_own, kind="stable")
        self.og.queue(ids, ids[own], rec)
        self.ogs.queue(ids, ids[a_own[so]], a_i[so], a_v[so])

    def checks(self, key: str) -> dict:
        """``c`` of one device as its state carries it (JSON-able)."""
        a = self.at.get(key)
        if a is None:
            return {}
        k0 = a * _NC
        out: dict[int, dict] = {}
        a, b = self.rate.span(k0, k0 + _NC)
        if b > a:
            ks, tl, vl = self.rate.key[a:b].tolist(), self.rate.col[0][a:b].tolist(), self.rate.col[1][a:b].tolist()
            bnd = [0] + [j for j in range(1, len(ks)) if ks[j] != ks[j - 1]] + [len(ks)]
            for x, y in zip(bnd[:-1], bnd[1:]):
                out[ks[x] - k0] = {"hist": [tl[x:y], vl[x:y]]}
        a, b = self.hyst.span(k0, k0 + _NC)
        for k, h in zip(self.hyst.key[a:b].tolist(), self.hyst.col[0][a:b].tolist()):
            out.setdefault(k - k0, {})["h"] = h
        a, b = self.phase.span(k0, k0 + _NC)
        for k, ph, pt in zip(self.phase.key[a:b].tolist(), _nullable(self.phase.col[0][a:b]),
                             self.phase.col[1][a:b].tolist()):
            cs = out.setdefault(k - k0, {})
            cs["ph"], cs["pt"] = ph, pt
        return {CHECKS[ci].id: out[ci] for ci in sorted(out)}

    def checks_many(self, ids: np.ndarray) -> list[dict]:
        """``checks`` of many devices (``ids``: their first rows), in their order: one lookup per pool for all of
        them and one ``tolist`` per column, instead of three lookups and a ``tolist`` per slice per device (most
        of what a device's export cost one by one)."""
        n = ids.shape[0]
        k0 = ids * _NC
        by: list[dict[int, dict]] = [{} for _ in range(n)]  # per device: check index -> check state
        lo, cnt = self.rate.spans(k0, k0 + _NC)
        rows = _block_rows(lo, cnt)
        if rows.shape[0]:  # a check's samples: a run of one key (devices' key ranges do not overlap)
            key = self.rate.key[rows]
            x = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
            own = np.repeat(np.arange(n), cnt)[x]
            tl, vl = self.rate.col[0][rows].tolist(), self.rate.col[1][rows].tolist()
            for j, ci, a, b in zip(own.tolist(), (key[x] - k0[own]).tolist(), x.tolist(),
                                   np.r_[x[1:], key.shape[0]].tolist()):
                by[j][ci] = {"hist": [tl[a:b], vl[a:b]]}
        lo, cnt = self.hyst.spans(k0, k0 + _NC)
        rows = _block_rows(lo, cnt)
        own = np.repeat(np.arange(n), cnt)
        for j, ci, h in zip(own.tolist(), (self.hyst.key[rows] - k0[own]).tolist(), self.hyst.col[0][rows].tolist()):
            by[j].setdefault(ci, {})["h"] = h
        lo, cnt = self.phase.spans(k0, k0 + _NC)
        rows = _block_rows(lo, cnt)
        own = np.repeat(np.arange(n), cnt)
        for j, ci, ph, pt in zip(own.tolist(), (self.phase.key[rows] - k0[own]).tolist(),
                                 _nullable(self.phase.col[0][rows]), self.phase.col[1][rows].tolist()):
            cs = by[j].setdefault(ci, {})
            cs["ph"], cs["pt"] = ph, pt
        return [{_CHECK_IDS[ci]: d[ci] for ci in sorted(d)} if d else {} for d in by]

    def place(self, keys: list[str], nm: np.ndarray, fam: np.ndarray) -> np.ndarray:
        """The first row of each device's block, given a block (at the end) if it has none of its family yet."""
        at, fams = self.at, self.fam
        out = np.empty(len(keys), dtype=np.int64)
        for j, (k, n, fc) in enumerate(zip(keys, nm.tolist(), fam.tolist())):
            row = at.get(k)
            if row is None or fams[row] != fc:
                if row is not None:  # another family now: its old block's check states go with it
                    self.forget_checks(np.array([row], dtype=np.int64))
                row = at[k] = self.top
                fams.extend(bytes(n))
                fams[row] = fc
                self.top += n
            out[j] = row
        if self.top > self.i.shape[0]:
            cap = max(self.top, 2 * self.i.shape[0], 1024)
            i = np.empty((cap, len(_I64)), dtype=np.int64)
            i[:] = np.array(_EMPTY_I)[_I64]
            cnt = np.zeros((cap, len(_I32)), dtype=np.int32)
            b = np.zeros((cap, len(_I8)), dtype=np.int8)
            f = np.full((cap, _NF), np.nan)
            i[:self.i.shape[0]] = self.i
            cnt[:self.n.shape[0]] = self.n
            b[:self.b.shape[0]] = self.b
            f[:self.f.shape[0]] = self.f
            self.i, self.n, self.b, self.f = i, cnt, b, f
        return out

    def has(self, key: str, fc: int) -> bool:
        """Whether the store holds a block of this family for the device."""
        row = self.at.get(key)
        return row is not None and self.fam[row] == fc

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """The integer series columns of these rows, in the state's layout (``_NI`` columns; column-major: each
        column contiguous, as the engine reads them). ``take`` of rows (~5x faster than a fancy index of these
        narrow 2-d arrays), then one column at a time."""
        out = np.empty((_NI, rows.shape[0]), dtype=np.int64)
        for part, at in ((self.i, _I64), (self.n, _I32), (self.b, _I8)):
            got = part.take(rows, axis=0)
            for j, c in enumerate(at):
                out[c] = got[:, j]
        return out.T

    def gather_f(self, rows: np.ndarray) -> np.ndarray:
        """The float series columns of these rows (``self.f[rows]``)."""
        return self.f.take(rows, axis=0)

    def scatter(self, rows: np.ndarray, ints: np.ndarray) -> None:
        self.scatter_cols(rows, [ints[:, j] for j in range(_NI)])

    def scatter_cols(self, rows: np.ndarray, cols: list, flts: np.ndarray | None = None) -> None:
        """``scatter`` from the ``_NI`` integer columns as separate arrays (any integer or bool dtype), and the
        float columns (``flts``, (n, ``_NF``)) if given: each part's rows are built in its own dtype and written
        whole (a row view), ~2x faster than a fancy row assignment of a 10-column array."""
        n = rows.shape[0]
        for part, at in ((self.i, _I64), (self.n, _I32), (self.b, _I8)):
            new = np.empty((n, len(at)), dtype=part.dtype)
            for j, c in enumerate(at):
                new[:, j] = np.minimum(cols[c], _I32_MAX) if part is self.n else cols[c]
            _row_view(part)[rows] = _row_view(new)
        if flts is not None:
            _row_view(self.f)[rows] = _row_view(np.ascontiguousarray(flts, dtype=np.float64))

    def block(self, key: str) -> list | None:
        """``m`` of one device as its state carries it (JSON-able), or None if it has no block."""
        a = self.at.get(key)
        if a is None:
            return None
        n = _FAM_NM_L[self.fam[a]]
        fl = self.f[a:a + n].ravel()
        return [self.gather(np.arange(a, a + n)).ravel().tolist(),
                np.where(np.isnan(fl), None, fl.astype(object)).tolist()]

    def blocks_of(self, ids: np.ndarray) -> list[list]:
        """``block`` of many devices (``ids``: their first rows, each the start of a block), in their order: one
        gather and one ``tolist`` per column for all their rows."""
        fam = self.fam
        nm = np.array([_FAM_NM_L[fam[a]] for a in ids.tolist()], dtype=np.int64)
        rows = _block_rows(ids, nm)
        ints = _split(self.gather(rows).ravel().tolist(), nm * _NI)
        flts = _split(_nullable(self.f[rows].ravel()), nm * _NF)
        return [[i, f] for i, f in zip(ints, flts)]

    def clear(self) -> None:
        for c in self._ctx.values():
            c.row = -1
        self.__init__(self._ctx)
