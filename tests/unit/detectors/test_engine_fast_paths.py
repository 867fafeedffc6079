"""The sixth step's internal fast paths against what they stand for: the store's series gather and scatter (take
and row views instead of fancy indexes of 2-d arrays), ``held`` (the hysteresis' busy groups by columns) and the
sensor faults of a batch with every reading in range (the series' own layout, no copies)."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.faults import SeriesCarry, sensor_faults
from detectors.engine import _dev_time_order
from detectors.grouped import group_layout
from detectors.hysteresis import HystCarry, graded_levels, held
from detectors.store import _I8, _I32, _I32_MAX, _I64, _NF, _NI, _SeriesStore


def _store(rows: int) -> _SeriesStore:
    st = _SeriesStore({})
    st.i = np.zeros((rows, len(_I64)), dtype=np.int64)
    st.n = np.zeros((rows, len(_I32)), dtype=np.int32)
    st.b = np.zeros((rows, len(_I8)), dtype=np.int8)
    st.f = np.full((rows, _NF), np.nan)
    return st


def test_series_gather_and_scatter_are_the_fancy_indexes():
    rng = np.random.default_rng(3)
    st = _store(4000)
    n = st.i.shape[0]
    st.i[:] = rng.integers(-1 << 40, 1 << 40, st.i.shape)
    st.n[:] = rng.integers(0, 1 << 30, st.n.shape)
    st.b[:] = rng.integers(0, 2, st.b.shape)
    st.f[:] = rng.normal(size=st.f.shape)
    rows = rng.permutation(n)[: n // 3]
    got = st.gather(rows)
    want = np.empty((rows.shape[0], _NI), dtype=np.int64)
    want[:, _I64], want[:, _I32], want[:, _I8] = st.i[rows], st.n[rows], st.b[rows]
    assert got.shape == want.shape and (got == want).all()
    assert np.array_equal(st.gather_f(rows), st.f[rows])
    # scatter: every column to its part, the counts clipped to int32, the floats by their bits
    cols = [rng.integers(0, 1 << 40, rows.shape[0]) for _ in range(_NI)]
    for c in _I8:
        cols[c] = rng.integers(0, 2, rows.shape[0]).astype(bool)
    flts = rng.normal(size=(rows.shape[0], _NF))
    flts[::7, 1] = np.nan
    before_i, before_f = st.i.copy(), st.f.copy()
    st.scatter_cols(rows, cols, flts)
    ints = np.column_stack(cols).astype(np.int64)
    assert (st.i[rows] == ints[:, _I64]).all()
    assert (st.n[rows] == np.minimum(ints[:, _I32], _I32_MAX)).all()
    assert (st.b[rows] == ints[:, _I8]).all()
    assert np.array_equal(st.f[rows], flts, equal_nan=True)
    other = np.setdiff1d(np.arange(n), rows)
    assert (st.i[other] == before_i[other]).all() and np.array_equal(st.f[other], before_f[other])
    # the (n, _NI) form writes the same
    st2 = _store(4000)
    st2.scatter(rows, ints)
    assert (st2.gather(rows) == st.gather(rows)).all()


def test_held_is_any_latch_or_run():
    rng = np.random.default_rng(5)
    bits = rng.random((5000, 3)) < 0.02
    run = np.where(rng.random((5000, 3)) < 0.02, rng.integers(1, 5, (5000, 3)), 0)
    assert (held(bits, run) == (bits.any(axis=1) | (run > 0).any(axis=1))).all()
    assert held(bits, run).any() and not held(bits, run).all()


def _lay(sgrp: np.ndarray) -> tuple:
    first, _, first_idx, last = group_layout(sgrp)
    return first, first_idx, last


def _carry(rng, s: int) -> SeriesCarry:
    return SeriesCarry(rng.normal(20, 2, s), rng.normal(20, 2, s), rng.integers(0, 1000, s), rng.random(s) < 0.1,
                       rng.integers(0, 3, s), rng.integers(0, 1000, s), rng.random(s) < 0.1, rng.integers(0, 5, s),
                       rng.random(s) < 0.1, rng.integers(0, 5, s), rng.random(s) < 0.1)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_faults_with_every_reading_in_range_are_the_general_path(seed):
    """Every reading in range takes the fast path; the same rows with one more series (last) holding a reading out
    of range take the general one: the rows and series they share get the same answers."""
    rng = np.random.default_rng(seed)
    s = 300
    sgrp = np.sort(rng.integers(0, s, 4000))
    sgrp = np.unique(sgrp, return_inverse=True)[1].ravel()
    s = int(sgrp.max()) + 1
    n = sgrp.shape[0]
    ts = np.arange(n) * 1000
    v = np.round(rng.normal(20, 2, n), 0)  # repeats: flat runs; a jump here and there: spikes
    v[rng.integers(0, n, 40)] += 15
    c = _carry(rng, s)
    par = dict(lo=np.full(s, -100.0), hi=np.full(s, 100.0), step=np.full(s, 8.0), flat_ms=np.full(s, 3000),
               eps=np.full(s, 0.01), clear_after_good=np.full(s, 3))
    fast = sensor_faults(v, ts, sgrp, *_lay(sgrp), *par.values(), c)
    assert fast.ir.shape[0] == n

    # the other series first (a run's start where it is not running is the next row's time: the rows after
    # the shared ones stay the same)
    v2, ts2, sgrp2 = np.r_[20.0, 500.0, v], np.r_[0, 1, ts], np.r_[0, 0, sgrp + 1]
    par2 = {k: np.r_[a[:1], a] for k, a in par.items()}
    c2 = SeriesCarry(*(np.r_[getattr(c, f)[:1], getattr(c, f)] for f in c.__dataclass_fields__))
    gen = sensor_faults(v2, ts2, sgrp2, *_lay(sgrp2), *par2.values(), c2)
    assert gen.ir.shape[0] == n + 1
    for f in ("valid", "oor_level_bit", "spk_level_bit", "flat_level_bit"):
        assert (getattr(fast, f) == getattr(gen, f)[2:]).all(), f
    assert (fast.suspect == gen.suspect[1:]).all()
    for f in c.__dataclass_fields__:
        assert np.array_equal(getattr(fast.out, f), getattr(gen.out, f)[1:], equal_nan=True), f
    assert fast.valid.any() and not fast.valid.all() and fast.flat_level_bit.any()


@pytest.mark.parametrize("seed", [1, 2])
def test_graded_levels_from_table_rows_are_the_per_group_parameters(seed):
    """``at``: the parameters read from table rows for the live groups only give what the gathered per-group
    parameters give (levels and every carry), with groups live by a latch, a carried run or a reading above."""
    rng = np.random.default_rng(seed)
    grp = np.sort(rng.integers(0, 400, 5000))
    grp = np.unique(grp, return_inverse=True)[1].ravel()
    first, grp, first_idx, last = group_layout(grp)
    g = last.shape[0]
    ts = np.arange(grp.shape[0]) * 500
    lines_t = np.sort(rng.uniform(10, 40, (7, 3)), axis=1)
    lines_t[2, 0] = np.nan  # a level switched off
    clear_t, hold_n_t, hold_ms_t = lines_t * 0.9, rng.integers(1, 4, 7), rng.integers(0, 2000, 7)
    at = rng.integers(0, 7, g)
    x = rng.uniform(0, 30, grp.shape[0])
    x[rng.random(grp.shape[0]) < 0.3] = 1.0  # many quiet groups
    x[rng.random(grp.shape[0]) < 0.01] = np.nan
    carry = HystCarry.zeros(g)
    busy = rng.choice(g, 30, replace=False)
    carry.bits[busy[:15], 0] = True
    carry.run[busy[15:], 1], carry.start[busy[15:], 1] = 2, -300
    want_l, want = graded_levels(x, ts, first, first_idx, grp, last, lines_t[at], clear_t[at], hold_n_t[at],
                                 hold_ms_t[at], carry, per_group=True)
    got_l, got = graded_levels(x, ts, first, first_idx, grp, last, lines_t, clear_t, hold_n_t, hold_ms_t, carry, at=at)
    assert (got_l == want_l).all() and (got.live == want.live).all()
    assert (got.bits == want.bits).all() and (got.run == want.run).all() and (got.start == want.start).all()
    assert 0 < got.live.sum() < g and (got_l > 0).any()


@pytest.mark.parametrize("span", [10_000, 1 << 60])  # the key, and the lexsort where it would not fit
def test_device_time_order_is_the_lexsort(span):
    """``_dev_time_order`` (the imbalance check's row order) on rows in (device, metric, time) order."""
    rng = np.random.default_rng(7)
    d = rng.integers(0, 300, 6000)
    f = rng.integers(0, 3, 6000)
    t = rng.integers(0, span, 6000)
    t[::5] = t[0]  # ties of (device, time) across metrics
    o = np.lexsort((t, f, d))
    d, f, t = d[o], f[o], t[o]
    keep = np.r_[True, (d[1:] != d[:-1]) | (f[1:] != f[:-1]) | (t[1:] != t[:-1])]
    d, f, t = d[keep], f[keep], t[keep]
    assert (_dev_time_order(d, t, f) == np.lexsort((f, t, d))).all()


def test_a_pool_whose_entries_all_go_takes_the_new_ones_as_they_come():
    """Every entry dropped and the new ones in key order: the pool is the new entries (in the pool's dtypes);
    out of order, or with entries kept, the merge as before."""
    from detectors.store import _Pool

    def pool():
        p = _Pool(np.zeros(0, np.int64), np.zeros((0, 2), np.float64))
        p.queue_rows(np.zeros(0, np.int64), np.array([3, 5, 5, 9]), np.array([1, 2, 3, 4]),
                     np.arange(8.0).reshape(4, 2))
        p.apply()
        return p

    p = pool()
    assert p.key.tolist() == [3, 5, 5, 9] and p.col[0].dtype == np.int64 and p.col[1].dtype == np.float64
    p.queue_rows(np.arange(4), np.array([2, 5, 5]), np.array([7, 8, 9], dtype=np.int32), np.ones((3, 2)))
    p.apply()
    assert p.key.tolist() == [2, 5, 5] and p.col[0].tolist() == [7, 8, 9] and p.col[0].dtype == np.int64
    p = pool()
    p.queue_rows(np.arange(4), np.array([6, 2, 6]), np.array([1, 2, 3]), np.arange(6.0).reshape(3, 2))
    p.apply()
    assert p.key.tolist() == [2, 6, 6] and p.col[0].tolist() == [2, 1, 3] and p.col[1][:, 0].tolist() == [2, 0, 4]
    p = pool()
    p.queue_rows(np.array([0, 2]), np.array([4]), np.array([9]), np.zeros((1, 2)))
    p.apply()
    assert p.key.tolist() == [4, 5, 9] and p.col[0].tolist() == [9, 2, 4]
