"""The engine's batch helpers against the plain numpy / Python they stand for: device coding (with and without runs
of the same value) and the row order (the series sort and its fallback)."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.engine import _NFM, _code, _row_order


def _reference_code(values: list) -> tuple[list, list]:
    index: dict = {}
    first: list = []
    codes = []
    for i, v in enumerate(values):
        if v not in index:
            index[v] = len(index)
            first.append(i)
        codes.append(index[v])
    return codes, first


@pytest.mark.parametrize("run", [1, 2, 5, 40])
def test_codes_are_in_order_of_first_appearance_with_or_without_runs(run):
    rng = np.random.default_rng(run)
    names = [f"d-{i}" for i in rng.integers(0, 700, 6000 // run)]
    values = np.array([n for n in names for _ in range(run)] + ["d-1", "d-1", "x"], dtype=object)
    values[rng.integers(0, values.shape[0], 50)] = "d-2"  # runs broken here and there
    code, first = _code(values)
    want_code, want_first = _reference_code(values.tolist())
    assert code.tolist() == want_code and first.tolist() == want_first


@pytest.mark.parametrize("devices", [50, 20_000])  # series numbers below and above 2**16 (one or two radix passes)
@pytest.mark.parametrize("shuffle", [0.0, 0.01, 1.0])  # readings in time order, a few late, random order
def test_row_order_is_the_lexsort(devices, shuffle):
    rng = np.random.default_rng(devices)
    n = 30_000
    d = rng.integers(0, devices, n)
    fm = rng.integers(0, _NFM, n)
    t = np.sort(rng.integers(0, 5_000, n))  # ties included
    moved = rng.random(n) < shuffle
    t[moved] = rng.permutation(t[moved])
    assert (_row_order(d, fm, t) == np.lexsort((t, fm, d))).all()
