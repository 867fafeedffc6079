"""The sixth step's internal fast paths against what they stand for: the store's series gather and scatter (take
and row views instead of fancy indexes of 2-d arrays), ``held`` (the hysteresis' busy groups by columns) and the
sensor faults of a batch with every reading in range (the series' own layout, no copies)."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.faults import SeriesCarry, sensor_faults
from detectors.grouped import group_layout
from detectors.hysteresis import held
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
