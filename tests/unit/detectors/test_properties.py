"""Properties that must hold for any input, checked with hypothesis."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .helpers import T0, engine, key, rows, run

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# (family, metric, highest value that is below every default line)
BELOW = [("crane", "load", 8.99), ("crane", "moment", 89.9), ("crane", "wind", 19.9),
         ("pit", "wall_top_horizontal", 20.9), ("pit", "strut_force", 979.0), ("formwork", "settlement", 6.9),
         ("electrical", "leakage", 14.9), ("electrical", "current_b", 112.4), ("electrical", "terminal_temp", 69.9),
         ("battery", "pack_temp", 44.9), ("battery", "co", 49.9)]

chunking = st.lists(st.integers(1, 60), min_size=1, max_size=6)


@SETTINGS
@given(which=st.sampled_from(BELOW), frac=st.floats(0, 1), n=st.integers(1, 400), chunks=chunking,
       step_s=st.sampled_from([1, 10, 3600]))
def test_constant_signal_below_every_line_never_raises_a_hazard(which, frac, n, chunks, step_s):
    family, metric, top = which
    value = round(top * frac, 3)
    f = run(engine(), rows(family, metric, [value] * n, step_ms=step_s * 1000), chunks=chunks)
    assert [x for x in f if x.category == "hazard"] == []


@SETTINGS
@given(noise=st.lists(st.floats(8.55, 9.999, allow_nan=False), min_size=1, max_size=300), chunks=chunking)
def test_noise_inside_the_hysteresis_band_never_flaps(noise, chunks):
    # enter yellow at 9.0 t; anything between the clear line (8.55) and the orange line (10) keeps it there
    f = run(engine(), rows("crane", "load", [9.0] + noise), chunks=chunks)
    assert [(x.kind, x.level.name) for x in f if not x.evidence["reassert"]] == [("crane.overload", "YELLOW")]


@SETTINGS
@given(noise=st.lists(st.floats(-1.0, 1.0, allow_nan=False), min_size=1, max_size=200), centre=st.floats(0.0, 0.94))
def test_small_noise_around_any_level_flaps_at_most_once(noise, centre):
    # a signal that moves less than the hysteresis band (5 % of the line) can cross a line at most once
    base = 9.0 + centre
    vals = [base + 0.004 * n for n in noise]
    f = run(engine(), rows("crane", "load", vals))
    assert len([x for x in f if not x.evidence["reassert"]]) <= 1


values_crane = st.lists(st.floats(0.0, 13.0, allow_nan=False), min_size=1, max_size=150)


@SETTINGS
@given(a=values_crane, b=values_crane, chunks=chunking, seed=st.integers(0, 10))
def test_findings_do_not_depend_on_batch_boundaries(a, b, chunks, seed):
    rs = (rows("crane", "load", a, device="tc-01") + rows("crane", "moment", [x * 9 for x in b], device="tc-01")
          + rows("crane", "load", b, device="tc-02", site="s-02"))
    rs.sort(key=lambda r: r[4])
    whole = run(engine(), rs)
    split = run(engine(), rs, chunks=chunks, shuffle_seed=seed)
    assert sorted(map(key, split)) == sorted(map(key, whole))


@SETTINGS
@given(steps=st.lists(st.floats(-0.5, 2.0, allow_nan=False), min_size=1, max_size=120), chunks=chunking,
       spike_at=st.sets(st.integers(0, 119), max_size=4), gap=st.integers(0, 119))
def test_pit_rate_faults_and_gaps_do_not_depend_on_batch_boundaries(steps, chunks, spike_at, gap):
    vals, v = [], 0.0
    for i, s in enumerate(steps):
        v += s
        vals.append(v + (60.0 if i in spike_at else 0.0))
    rs = rows("pit", "wall_top_horizontal", vals, step_ms=3_600_000)
    rs = [(r[0], r[1], r[2], r[3], r[4] + (86_400_000 * 3 if i >= gap else 0), r[5]) for i, r in enumerate(rs)]
    whole = run(engine(), rs)
    assert sorted(map(key, run(engine(), rs, chunks=chunks))) == sorted(map(key, whole))


@SETTINGS
@given(vals=st.lists(st.floats(0.0, 200.0, allow_nan=False), min_size=1, max_size=120), chunks=chunking)
def test_electrical_phases_and_hold_times_do_not_depend_on_batch_boundaries(vals, chunks):
    rs = (rows("electrical", "current_a", vals) + rows("electrical", "current_b", vals[::-1])
          + rows("electrical", "current_c", [v / 2 for v in vals]) + rows("electrical", "leakage", [v / 5 for v in vals]))
    rs.sort(key=lambda r: r[4])
    eng = engine("families:\n  electrical:\n    imbalance: {levels_pct: [20, 30, 50], hold: 5s}\n")
    whole = run(eng, rs)
    eng2 = engine("families:\n  electrical:\n    imbalance: {levels_pct: [20, 30, 50], hold: 5s}\n")
    assert sorted(map(key, run(eng2, rs, chunks=chunks))) == sorted(map(key, whole))


@SETTINGS
@given(vals=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=100),
       metric=st.sampled_from([("crane", "load"), ("pit", "strut_force"), ("battery", "pack_temp")]))
def test_any_values_give_json_safe_state_and_findings(vals, metric):
    states = {}
    f = run(engine(), rows(*metric, vals), states, via_json=False)
    json.dumps(states, allow_nan=False)
    for x in f:
        json.dumps(x.to_dict())
        assert x.ts >= T0
