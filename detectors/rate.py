"""Rate over a window, from a bounded sample history, vectorised over all devices of a batch.

Keeping every reading of the last day per pit point would make the state unbounded in the reading rate. Instead
the state keeps *samples*: the first valid reading of each bucket of ``window / RATE_BUCKETS`` (buckets aligned
to the epoch, so which reading becomes a sample does not depend on how the stream was cut into batches).
The rate at a reading is its change from the latest sample at or before ``ts - window``, divided by the actual
time between them; with ``consecutive = N`` every one of the N windows back from the reading must qualify, and
the smallest of the N rates is what is compared ("rate above X for N consecutive days").
"""

from __future__ import annotations

from itertools import chain

import numpy as np

from detectors.grouped import prev_in_group

_SPAN = np.int64(1) << np.int64(42)  # ~139 years of milliseconds per group in the composite search key


def hist_arrays(hist: list[list]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group sample lists ``[[ts, ...], [value, ...]]`` (a state's ``hist``) as ``windowed_rate`` takes them:
    samples per group, and all samples' times and values, group after group."""
    sizes = np.fromiter((len(h[0]) for h in hist), np.int64, len(hist))
    n = int(sizes.sum())
    return (sizes, np.fromiter(chain.from_iterable(h[0] for h in hist), np.int64, n),
            np.fromiter(chain.from_iterable(h[1] for h in hist), np.float64, n))


def hist_lists(kept: tuple[np.ndarray, np.ndarray, np.ndarray], g_count: int) -> list[list]:
    """``windowed_rate``'s kept samples back as one ``[[ts, ...], [value, ...]]`` per group."""
    kg, kt, kv = kept
    bounds = np.searchsorted(kg, np.arange(g_count + 1)).tolist()
    tl, vl = kt.tolist(), kv.tolist()
    return [[tl[a:e], vl[a:e]] for a, e in zip(bounds[:-1], bounds[1:])]


def windowed_rate(v: np.ndarray, ts: np.ndarray, first: np.ndarray, grp: np.ndarray,
                  hist: tuple[np.ndarray, np.ndarray, np.ndarray], window_ms: np.ndarray, bucket_ms: np.ndarray,
                  consecutive: np.ndarray, per_ms: np.ndarray,
                  direction: np.ndarray) -> tuple[np.ndarray, dict, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Rate per row (NaN where the history is too short), reference points, and the samples to keep.

    ``hist`` is (samples per group, their times, their values), group after group and in time order within a
    group (``hist_arrays``); per-group parameters are arrays of length G. The kept samples come back the same
    way, as (group, time, value) sorted by group then time — flat arrays, so a caller that keeps histories in
    arrays never builds a list per group.
    """
    n = v.shape[0]
    sizes, ht, hv = hist
    g_count = sizes.shape[0]
    kmax = int(consecutive.max()) if g_count else 1
    # ---- samples: history + the first reading of every new bucket
    hg = np.repeat(np.arange(g_count), sizes)
    last_bucket = np.full(g_count, np.iinfo(np.int64).min, dtype=np.int64)
    if ht.size:
        nonempty = sizes > 0
        last_bucket[nonempty] = ht[np.cumsum(sizes)[nonempty] - 1] // bucket_ms[nonempty]
    b = ts // bucket_ms[grp]
    new = b != prev_in_group(b, first, grp, last_bucket)
    sg = np.concatenate([hg, grp[new]])
    st = np.concatenate([ht, ts[new]])
    sv = np.concatenate([hv, v[new]])
    # history and new samples are each in (group, time) order, and a group's history is older than its new
    # readings: a stable sort by group (a merge of two sorted runs) is then the (group, time) order; checked
    order = np.argsort(sg, kind="stable")
    sg, st, sv = sg[order], st[order], sv[order]
    if st.shape[0] > 1 and not ((st[1:] >= st[:-1]) | (sg[1:] != sg[:-1])).all():
        order = np.lexsort((st, sg))
        sg, st, sv = sg[order], st[order], sv[order]
    lookback = int((window_ms * consecutive).max()) if g_count else 0
    tbase = int(min(st.min() if st.size else ts.min(), ts.min())) - lookback - 1
    key = sg * _SPAN + (st - tbase)

    # ---- reference points P_1..P_K back from each row; P_0 is the row itself
    wr = window_ms[grp]
    kr = consecutive[grp]
    x = np.full(n, np.inf)
    ref = np.full((n, kmax), -1, dtype=np.int64)
    prev_t = ts.astype(np.float64)
    prev_v = v.copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in range(1, kmax + 1):
            q = grp * _SPAN + (ts - k * wr - tbase)
            j = np.searchsorted(key, q, side="right") - 1
            jc = np.maximum(j, 0)
            ok = (j >= 0) & (sg[jc] == grp) & (st[jc] < prev_t)
            pt = np.where(ok, st[jc], np.nan)
            pv = np.where(ok, sv[jc], np.nan)
            seg = (prev_v - pv) / (prev_t - pt) * per_ms[grp]
            d = direction[grp]
            seg = np.where(d == 0, np.abs(seg), np.where(d == 1, seg, -seg))
            active = k <= kr
            x = np.where(active, np.minimum(x, seg), x)  # NaN (missing history) propagates
            ref[:, k - 1] = np.where(active & ok, jc, -1)
            prev_t, prev_v = pt, pv
    x[np.isinf(x)] = np.nan

    # ---- new history: drop samples no future reading can reach
    kept = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if g_count:
        gstarts = np.searchsorted(sg, np.arange(g_count), side="left")
        last_rows = np.flatnonzero(np.r_[grp[1:] != grp[:-1], True]) if n else np.array([], np.int64)
        t_last = np.full(g_count, tbase, dtype=np.int64)
        t_last[grp[last_rows]] = ts[last_rows]
        cut_q = np.arange(g_count) * _SPAN + (t_last - window_ms * consecutive - tbase)
        cut = np.searchsorted(key, cut_q, side="right") - 1
        keep_from = np.maximum(cut, gstarts)
        sel = np.flatnonzero(np.arange(sg.shape[0]) >= keep_from[sg])
        kept = (sg[sel], st[sel], sv[sel])
    refs = {"ts": st, "value": sv, "index": ref}
    return x, refs, kept
