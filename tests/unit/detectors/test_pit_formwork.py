"""Pit (GB 50497-2019 §8) and formwork: cumulative change since baseline and rate, graded at 70 / 85 / 100 %.

Default wall-top horizontal alarm values: 30 mm and 3 mm/d -> lines 21 / 25.5 / 30 mm and 2.1 / 2.55 / 3 mm/d.
"""

import json

import numpy as np

from .helpers import T0, engine, key, levels, rows, run

PIT = "pit"
WTH = "wall_top_horizontal"
H = 3_600_000
D = 24 * H


def test_cumulative_exactly_on_the_graded_lines():
    f = run(engine(), rows(PIT, WTH, [20.9, 21.0, 25.5, 30.0]))
    assert levels(f, "pit.cumulative") == [(1, "YELLOW"), (2, "ORANGE"), (3, "RED")]
    assert [x.threshold for x in f] == [21.0, 25.5, 30.0]
    assert [x.major for x in f] == [False, False, True]
    assert f[-1].rule == "wall_top_horizontal |change| since baseline >= 100% of alarm value 30 mm (30 mm)"
    assert "GB 50497" in f[-1].source and f[-1].evidence["grade"] == 2


def test_negative_displacement_counts_by_magnitude_unless_a_direction_is_set():
    assert levels(run(engine(), rows(PIT, WTH, [-21.0, -30.0]))) == [(0, "YELLOW"), (1, "RED")]
    eng = engine("families:\n  pit:\n    metrics:\n      wall_top_horizontal: {alarm: 30, rate: 3, direction: increase}\n")
    assert run(eng, rows(PIT, WTH, [-21.0, -40.0])) == []
    assert levels(run(eng, rows(PIT, WTH, [21.0]))) == [(0, "YELLOW")]


def test_baseline_from_first_reading_and_from_the_survey():
    # groundwater: alarm 1.0 m from the first reading (-3.0 m): lines 0.7 / 0.85 / 1.0 m
    f = run(engine(), rows(PIT, "groundwater_level", [-3.0, -3.5, -3.75, -4.0]))
    assert levels(f) == [(2, "YELLOW"), (3, "RED")]
    assert f[0].evidence["baseline"] == -3.0 and f[0].value == 0.75
    eng = engine("site: s-01\ndevices:\n  jc-07: {family: pit, metrics: {wall_top_horizontal: {baseline: 5.0}}}\n")
    f = run(eng, rows(PIT, WTH, [25.9, 26.0, 35.0], device="jc-07"))
    assert levels(f) == [(1, "YELLOW"), (2, "RED")]  # 26 - 5 = 21; 35 - 5 = 30


def test_baseline_first_survives_batches_and_json():
    rs = rows(PIT, "groundwater_level", [-3.0, -3.2, -3.75, -4.0, -3.0])
    assert [x.to_dict() for x in run(engine(), rs, chunks=[1])] == [x.to_dict() for x in run(engine(), rs)]


def test_strut_force_against_70_percent_of_design():
    # design 2000 kN, alarm 1400 kN: lines 980 / 1190 / 1400 kN
    f = run(engine(), rows(PIT, "strut_force", [979.0, 980.0, 1190.0, 1400.0]))
    assert levels(f) == [(1, "YELLOW"), (2, "ORANGE"), (3, "RED")]
    assert f[0].evidence["design_value"] == 2000.0


def test_rate_needs_every_one_of_the_consecutive_days():
    # hourly readings rising 3.2 mm/d for three days: cumulative stays below 21 mm until 6.56 d, rate is red from
    # the first moment two full days of history exist
    vals = [3.2 * i / 24 for i in range(72)]
    f = run(engine(), rows(PIT, WTH, vals, step_ms=H))
    assert levels(f, "pit.rate")[0] == (48 * 3600, "RED")
    r = next(x for x in f if x.kind == "pit.rate")
    assert abs(r.value - 3.2) < 1e-9 and r.threshold == 3.0 and r.major
    assert r.evidence["consecutive"] == 2 and len(r.evidence["window_ref"]) == 2


def test_one_fast_day_is_not_two():
    vals = [0.0] * 24 + [3.5 * i / 24 for i in range(1, 25)] + [3.5] * 48  # fast only during day 2
    assert levels(run(engine(), rows(PIT, WTH, vals, step_ms=H)), "pit.rate") == []
    eng = engine("families:\n  pit: {rate_consecutive: 1}\n")
    f = run(eng, rows(PIT, WTH, vals, step_ms=H))
    assert levels(f, "pit.rate")[0][1] == "RED"


def test_rate_is_batch_split_invariant_and_ignores_late_readings():
    rng = np.random.default_rng(5)
    vals = np.cumsum(rng.normal(0.12, 0.05, 24 * 5))
    rs = rows(PIT, WTH, vals, step_ms=H)
    whole = run(engine(), rs)
    assert levels(whole, "pit.rate")
    assert sorted(map(key, run(engine(), rs, chunks=[5, 1, 30]))) == sorted(map(key, whole))
    eng, states = engine(), {}
    part = run(eng, rs[:100], states)
    late = [(r[0], r[1], r[2], r[3], r[4] - 30 * H, 500.0) for r in rs[100:103]]  # far too old and absurd
    part += run(eng, late, states)
    part += run(eng, rs[100:], states)
    assert sorted(map(key, part)) == sorted(map(key, whole))


def test_a_long_gap_does_not_invent_a_rate():
    vals = [1.0] * 30 + [2.0] * 30
    rs = rows(PIT, WTH, vals[:30], step_ms=H) + rows(PIT, WTH, vals[30:], step_ms=H, start=T0 + 10 * D)
    assert levels(run(engine(), rs), "pit.rate") == []


def test_rate_state_is_bounded():
    eng, states = engine(), {}
    for day in range(30):
        run(eng, rows(PIT, WTH, [0.01 * (day * 24 + h) for h in range(24)], step_ms=H, start=T0 + day * D), states)
    hist = states["s-01/d-01"]["c"]["pit.rate:wall_top_horizontal"]["hist"]
    assert len(hist[0]) == len(hist[1]) <= 2 * 12 + 2
    assert len(json.dumps(states)) < 2500


def test_formwork_pour_rate_alarm_before_the_control_value():
    # 1 Hz; settlement 2.0 mm for 6 min, then the pour makes it sink 12 mm in 180 s (4 mm/min)
    vals = [2.0 + 0.01 * (i % 2) for i in range(360)] + [2.0 + 12.0 * k / 180 for k in range(1, 181)]
    f = run(engine(), rows("formwork", "settlement", vals))
    rate = [x for x in f if x.kind == "formwork.rate"]
    control = [x for x in f if x.kind == "formwork.control"]
    # k seconds into the pour (row 359 + k): 7 mm at k = 75, 8.5 mm at k = 97.5, 10 mm at k = 120
    assert levels(control) == [(359 + 75, "YELLOW"), (359 + 98, "ORANGE"), (359 + 120, "RED")]
    assert rate and rate[0].ts < control[0].ts
    assert "RED" in [lv for _, lv in levels(rate)]
    assert rate[0].evidence["window_s"] == 300 and "mm/min" in rate[0].rule


def test_formwork_axial_force_is_absolute():
    f = run(engine(), rows("formwork", "axial_force", [41.9, 42.0, 60.0]))
    assert levels(f) == [(1, "YELLOW"), (2, "RED")]


def test_two_metrics_of_one_point_share_the_kind_and_the_worst_wins():
    rs = rows(PIT, WTH, [25.5, 25.5, 25.5, 10.0]) + rows(PIT, "wall_top_vertical", [15.0, 20.0, 5.0, 5.0])
    f = run(engine(), rs)
    # horizontal orange at 0; vertical red at 1 (20 mm); vertical back -> orange (horizontal); horizontal back -> clear
    assert levels(f, "pit.cumulative") == [(0, "ORANGE"), (1, "RED"), (2, "ORANGE"), (3, "CLEAR")]
    assert [x.metric for x in f] == [WTH, "wall_top_vertical", WTH, WTH]
