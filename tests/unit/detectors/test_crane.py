"""Crane: load and moment at 90 / 100 / 110 % of rated (GB 12602), wind above the working limit.

Hand-computed lines for the default 10 t crane: yellow 9 t, orange 10 t, red 11 t; clear lines at 95 %:
8.55 t, 9.5 t, 10.45 t.
"""

import json

import numpy as np

from sitewatch.findings import Level

from .helpers import T0, batch, engine, key, levels, rows, run

CRANE = "crane"


def test_exactly_on_each_line_enters_that_level():
    f = run(engine(), rows(CRANE, "load", [5.0, 9.0, 10.0, 11.0]))
    assert levels(f, "crane.overload") == [(1, "YELLOW"), (2, "ORANGE"), (3, "RED")]
    assert [x.threshold for x in f] == [9.0, 10.0, 11.0]
    assert [x.major for x in f] == [False, False, True]
    assert all(x.category == "hazard" and x.family == "crane" and x.metric == "load" for x in f)


def test_just_below_the_line_does_not_enter():
    assert run(engine(), rows(CRANE, "load", [8.999, 8.9999999])) == []
    f = run(engine(), rows(CRANE, "load", [9.999, 10.999]))
    assert levels(f) == [(0, "YELLOW"), (1, "ORANGE")]


def test_finding_carries_rule_source_and_evidence():
    (f,) = run(engine(), rows(CRANE, "load", [11.5], device="tc-01", site="cz-0001"))
    assert (f.site, f.device, f.kind, f.level, f.value, f.threshold) == ("cz-0001", "tc-01", "crane.overload",
                                                                        Level.RED, 11.5, 11.0)
    assert f.rule == "load >= 110% of rated 10 t (11 t)"
    assert "GB 12602" in f.source
    assert f.major
    assert f.evidence["rated_load_t"] == 10.0
    assert f.evidence["lines"] == {"yellow": 9.0, "orange": 10.0, "red": 11.0}
    assert f.evidence["value"] == 11.5
    json.dumps(f.to_dict())


def test_clear_only_below_the_lower_line():
    # yellow at 9.0; 8.6 and exactly 8.55 stay inside the band; 8.54 clears
    f = run(engine(), rows(CRANE, "load", [9.0, 8.6, 8.55, 8.54]))
    assert levels(f) == [(0, "YELLOW"), (3, "CLEAR")]
    clear = f[-1]
    assert clear.level == Level.CLEAR and clear.threshold == 8.55 and clear.category == "hazard"
    assert clear.rule.startswith("cleared")


def test_downgrade_steps_through_the_clear_lines():
    # red at 11; 10.45 holds red; 10.44 -> orange; 9.5 holds orange; 9.49 -> yellow; 8.54 -> clear
    f = run(engine(), rows(CRANE, "load", [11.0, 10.45, 10.44, 9.5, 9.49, 8.54]))
    assert levels(f) == [(0, "RED"), (2, "ORANGE"), (4, "YELLOW"), (5, "CLEAR")]
    assert [x.major for x in f] == [True, False, False, False]


def test_dithering_on_the_line_does_not_flap():
    values = [8.9, 9.1] * 50 + [9.05, 8.95] * 50
    f = run(engine(), rows(CRANE, "load", values))
    assert levels(f) == [(1, "YELLOW")]


def test_jump_straight_to_red_and_back_to_zero():
    f = run(engine(), rows(CRANE, "load", [0.0, 12.0, 0.0]))
    assert levels(f) == [(1, "RED"), (2, "CLEAR")]


def test_rated_load_per_device_from_site_rules():
    eng = engine("""
site: cz-0412
devices:
  tc-01: {family: crane, rated_load_t: 8.0}
""")
    rs = (rows(CRANE, "load", [7.2, 8.0, 8.8], device="tc-01", site="cz-0412")
          + rows(CRANE, "load", [7.2, 8.0, 8.8], device="tc-02", site="cz-0412"))
    f = run(eng, rs)
    tc1 = [x for x in f if x.device == "tc-01"]
    assert levels(tc1) == [(0, "YELLOW"), (1, "ORANGE"), (2, "RED")]  # 90 % of 8 t is exactly 7.2 t
    assert [x for x in f if x.device == "tc-02"] == []  # default 10 t
    assert "cz-0412" in tc1[0].rule or tc1[0].evidence["rated_load_t"] == 8.0
    assert any("devices.tc-01" in c for c in tc1[0].evidence["config"])


def test_moment_levels_in_percent():
    f = run(engine(), rows(CRANE, "moment", [50, 90, 100, 110]))
    assert levels(f, "crane.moment") == [(1, "YELLOW"), (2, "ORANGE"), (3, "RED")]
    assert f[-1].major


def test_wind_above_limit_is_orange_not_major():
    # orange at 20 m/s; the clear line is 19 m/s
    f = run(engine(), rows(CRANE, "wind", [5, 20.0, 19.5, 19.0, 18.99, 25]))
    assert levels(f, "crane.wind") == [(1, "ORANGE"), (4, "CLEAR"), (5, "ORANGE")]
    assert not any(x.major for x in f)


def test_load_and_moment_are_separate_kinds():
    rs = rows(CRANE, "load", [9.5, 9.5]) + rows(CRANE, "moment", [105.0, 105.0])
    f = run(engine(), rs)
    assert sorted((x.kind, x.level.name) for x in f) == [("crane.moment", "ORANGE"), ("crane.overload", "YELLOW")]


def test_reassert_every_60_s_of_reading_time():
    f = run(engine(), rows(CRANE, "load", [11.5] * 150))
    assert levels(f, with_reassert=True) == [(0, "RED"), (60, "RED"), (120, "RED")]
    assert [x.evidence["reassert"] for x in f] == [False, True, True]


def test_reassert_is_the_same_across_batches():
    one = run(engine(), rows(CRANE, "load", [11.5] * 150))
    many = run(engine(), rows(CRANE, "load", [11.5] * 150), chunks=[7, 13, 1, 50])
    assert [x.to_dict() for x in one] == [x.to_dict() for x in many]


def test_hold_count_from_rules():
    eng = engine("""
families:
  crane: {hold_count: 3}
""")
    f = run(eng, rows(CRANE, "load", [9.5, 9.5, 8.0, 9.5, 9.5, 9.5, 9.5]))
    assert levels(f) == [(5, "YELLOW")]


def test_hold_time_from_rules():
    eng = engine("""
families:
  crane: {overload: {levels_pct: [90, 100, 110], hold: 5s}}
""")
    f = run(eng, rows(CRANE, "load", [9.5] * 10))
    assert levels(f) == [(5, "YELLOW")]


def test_batch_split_and_row_order_do_not_matter():
    rng = np.random.default_rng(7)
    values = 9.5 + 2.5 * np.sin(np.arange(600) / 15) + rng.normal(0, 0.3, 600)
    rs = rows(CRANE, "load", values, device="tc-01") + rows(CRANE, "load", values[::-1], device="tc-02") + \
        rows(CRANE, "moment", values * 10, device="tc-01")
    rs.sort(key=lambda r: r[4])
    whole = run(engine(), rs)
    assert len(whole) > 10
    for chunks, seed in (([1], None), ([17, 3, 101], 1), ([250], 2), ([2, 999], 3)):
        split = run(engine(), rs, chunks=chunks, shuffle_seed=seed)
        assert sorted(map(key, split)) == sorted(map(key, whole))
        for dev_kind in {(x.device, x.kind) for x in whole}:  # per (device, kind) the order is the same too
            assert [x.to_dict() for x in split if (x.device, x.kind) == dev_kind] == \
                [x.to_dict() for x in whole if (x.device, x.kind) == dev_kind]


def test_out_of_order_rows_inside_a_batch_are_sorted():
    rs = rows(CRANE, "load", [5.0, 9.0, 10.0, 11.0, 5.0])
    f = run(engine(), list(reversed(rs)))
    assert levels(f) == [(1, "YELLOW"), (2, "ORANGE"), (3, "RED"), (4, "CLEAR")]


def test_late_reading_never_clears_a_live_alarm_and_a_buffered_overload_is_raised_back_dated():
    eng, states = engine(), {}
    run(eng, rows(CRANE, "load", [11.0, 11.0, 11.0], start=T0 + 10_000), states)
    # a reading older than what was processed, much lower: must not clear the live alarm
    assert run(eng, rows(CRANE, "load", [0.0], start=T0 + 5_000), states) == []
    # a redelivered reading inside covered time changes nothing
    assert run(eng, rows(CRANE, "load", [50.0], start=T0 + 11_000), states) == []
    # an older reading above the line in a gap of covered time is a late finding, back-dated and marked late
    (late,) = [f for f in run(eng, rows(CRANE, "load", [50.0], start=T0), states) if f.category == "hazard"]
    assert (late.kind, late.level, late.ts, late.evidence["late"]) == ("crane.overload", Level.RED, T0, True)
    assert late.evidence["outage"][1] == T0 + 5_000  # the covered time that follows it
    # the live alarm is untouched by all of that: the next live reading still decides
    f = run(eng, rows(CRANE, "load", [0.0], start=T0 + 13_000), states)
    assert levels(f) == [(13, "CLEAR")]
    assert not f[0].evidence.get("late")


def test_redelivered_batch_is_a_no_op():
    eng, states = engine(), {}
    rs = rows(CRANE, "load", [5.0, 11.0, 5.0, 11.0])
    first = run(eng, rs, states)
    assert levels(first) == [(1, "RED"), (2, "CLEAR"), (3, "RED")]
    assert run(eng, rs, states) == []
    dup_inside = rs[:2] + rs[:2]
    assert levels(run(engine(), dup_inside)) == [(1, "RED")]


def test_states_written_for_every_device_and_json_safe():
    eng, states = engine(), {}
    rs = rows(CRANE, "load", [1.0], device="tc-01") + rows(CRANE, "load", [12.0], device="tc-02", site="s-02")
    eng.process(batch(rs), states)
    assert set(states) == {"s-01/tc-01", "s-02/tc-02"}
    json.dumps(states, allow_nan=False)


def test_state_stays_small_over_a_long_run():
    eng, states = engine(), {}
    rng = np.random.default_rng(3)
    for i in range(20):
        vals = rng.uniform(0, 12, 500)
        run(eng, rows(CRANE, "load", vals, start=T0 + i * 500_000) + rows(CRANE, "wind", vals * 2, start=T0 + i * 500_000),
            states)
        size = len(json.dumps(states))
    assert size < 4000


def test_several_cranes_with_different_ratings_in_one_batch():
    eng = engine("""
site: s-01
devices:
  a: {family: crane, rated_load_t: 5}
  b: {family: crane, rated_load_t: 20}
""")
    rs = []
    for dev in ("a", "b", "c"):
        rs += rows(CRANE, "load", [4.5, 5.5, 10.0, 18.0, 22.0], device=dev)
    f = run(eng, rs, shuffle_seed=4)
    got = {d: levels([x for x in f if x.device == d]) for d in "abc"}
    assert got["a"] == [(0, "YELLOW"), (1, "RED")]  # 4.5 = 90 % of 5; 5.5 = 110 %
    assert got["b"] == [(3, "YELLOW"), (4, "RED")]  # 18 = 90 % of 20; 22 = 110 %
    assert got["c"] == [(2, "ORANGE"), (3, "RED")]


def test_unknown_metric_family_and_empty_batch_are_harmless():
    eng, states = engine(), {}
    assert eng.process(batch([]), states) == []
    rs = [("s", "x", "crane", "no_such_metric", T0, 1.0), ("s", "y", "volcano", "load", T0, 1.0),
          ("s", "z", "crane", "load", T0, float("nan"))]
    assert eng.process(batch(rs), states) == []
    json.dumps(states, allow_nan=False)


def test_device_switching_family_keeps_its_first_family():
    eng, states = engine(), {}
    run(eng, rows(CRANE, "load", [1.0]), states)
    f = run(eng, rows("pit", "wall_top_horizontal", [100.0], start=T0 + 1000), states)
    assert f == []
