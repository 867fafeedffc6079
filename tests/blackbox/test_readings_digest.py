"""``site_digests`` (the worker's per-window digest, rewritten for speed) against the documented recipe
(``chunk_bytes`` + ``readings_digest``) computed one site at a time, on random windows: many sites interleaved,
devices appearing on several records, names of different lengths, non-ASCII names, a window of one reading."""

from __future__ import annotations

import numpy as np
import pytest

from blackbox.readings import ReadingLog, chunk_bytes, readings_digest, site_digests

METRICS = ["load", "moment", "wind", "tilt", "horizontal_displacement", "co", "载荷"]


def recipe(devs, d, metric, ts, value) -> list[tuple[str, int, int, int, str]]:
    out = []
    for site in dict.fromkeys(dv[0] for dv in devs):
        rows = [i for i in range(len(ts)) if devs[d[i]][0] == site]  # arrival order within the site
        if rows:
            chunk = chunk_bytes([devs[d[i]][1] for i in rows], [metric[i] for i in rows], ts[rows], value[rows])
            out.append((site, len(rows), int(ts[rows].min()), int(ts[rows].max()), readings_digest([chunk])))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_site_digests_equal_the_recipe_site_by_site(seed):
    rng = np.random.default_rng(seed)
    k, n, sites = int(rng.integers(1, 400)), int(rng.integers(1, 4000)), int(rng.integers(1, 40))
    accent = "é" if seed % 4 == 0 else ""
    devs = [(f"s-{rng.integers(0, sites):03d}", f"d{accent}{'x' * int(rng.integers(0, 9))}-{i}", "crane", None)
            for i in range(k)]
    d = rng.integers(0, k, n)
    metric = np.array([METRICS[i] for i in rng.integers(0, len(METRICS) - (seed % 2), n)], dtype=object)
    ts, value = rng.integers(1_700_000_000_000, 1_800_000_000_000, n), rng.normal(size=n)
    assert sorted(site_digests(devs, d, metric, ts, value)) == sorted(recipe(devs, d, metric, ts, value))


def test_a_window_of_several_batches_is_one_chunk_per_site():
    rng = np.random.default_rng(3)
    log = ReadingLog(every_s=1.0)
    batches = []
    for _ in range(3):  # each batch has its own device table, as the worker's decoded records do
        devs = [(f"s-{i % 3}", f"d-{i}", "pit", None) for i in range(int(rng.integers(1, 20)))]
        n = int(rng.integers(1, 50))
        b = (devs, rng.integers(0, len(devs), n), np.array(rng.choice(METRICS[:4], n), dtype=object),
             rng.integers(0, 10**12, n), rng.normal(size=n))
        batches.append(b)
        log.add(*b)
    entries = log.take(0)
    devs = [dv for b in batches for dv in b[0]]
    offs = np.cumsum([0] + [len(b[0]) for b in batches[:-1]])
    d = np.concatenate([b[1] + o for b, o in zip(batches, offs)])
    cols = [np.concatenate([b[j] for b in batches]) for j in (2, 3, 4)]
    want = {s: (c, lo, hi, dg) for s, c, lo, hi, dg in recipe(devs, d, *cols)}
    assert {e.site: (e.payload["readings"], e.payload["ts_min"], e.payload["ts_max"], e.payload["digest"])
            for e in entries} == want
