"""Electrical (JGJ 46) and battery charging.

Electrical defaults: breaker 125 A -> overcurrent lines 112.5 / 125 / 150 A held 10 s; RCD 30 mA -> leakage lines
15 / 22.5 / 30 mA held 30 s; imbalance (Imax-Imin)/Imax 20 / 30 / 50 % held 300 s while Imax >= 25 A.
Battery: 45 / 55 / 65 degC (2 readings), rise 1 / 2 / 5 degC/min over 120 s (5 readings).
"""

from .helpers import engine, levels, rows, run

EL = "electrical"


def three_phase(a, b, c, start_s=0):
    from .helpers import T0
    start = T0 + start_s * 1000
    return rows(EL, "current_a", a, start=start) + rows(EL, "current_b", b, start=start) + \
        rows(EL, "current_c", c, start=start)


def test_overcurrent_needs_its_hold_time():
    f = run(engine(), rows(EL, "current_a", [130.0] * 10))
    assert f == []  # 9 s above the line: not yet
    f = run(engine(), rows(EL, "current_a", [130.0] * 15))
    assert levels(f, "electrical.overcurrent") == [(10, "ORANGE")]
    assert f[0].threshold == 125.0 and not f[0].major


def test_overcurrent_on_any_phase_is_one_kind_and_does_not_flap_across_phases():
    n = 40
    f = run(engine(), three_phase([160.0] * 20 + [60.0] * 20, [60.0] * n, [60.0] * n))
    got = levels(f, "electrical.overcurrent")
    assert got == [(10, "RED"), (20, "CLEAR")]
    assert f[0].metric == "current_a"


def test_leakage_persistently_above_half_the_rcd_rating():
    assert run(engine(), rows(EL, "leakage", [16.0] * 30)) == []  # 29 s
    f = run(engine(), rows(EL, "leakage", [16.0] * 31))
    assert levels(f) == [(30, "YELLOW")]
    assert "RCD trip rating 30 mA" in f[0].rule and f[0].threshold == 15.0


def test_leakage_against_a_wet_place_15_ma_rcd():
    eng = engine("site: s-01\nfamily_overrides:\n  electrical: {rcd_trip_ma: 15}\n")
    f = run(eng, rows(EL, "leakage", [7.5] * 31))
    assert levels(f) == [(30, "YELLOW")]  # half of 15 mA


def test_leakage_spikes_do_not_alarm_without_persistence():
    vals = ([5.0] * 20 + [25.0]) * 10
    assert run(engine(), rows(EL, "leakage", vals)) == []


def test_three_phase_imbalance_under_load():
    n = 310
    f = run(engine(), three_phase([100.0] * n, [100.0] * n, [70.0] * n))
    assert levels(f, "electrical.imbalance") == [(300, "ORANGE")]  # 30 %
    assert abs(f[0].value - 30.0) < 1e-9 and f[0].metric == "*"
    assert f[0].evidence["phases_a"] == [100.0, 100.0, 70.0]


def test_imbalance_ignored_at_light_load():
    n = 310
    assert run(engine(), three_phase([20.0] * n, [10.0] * n, [10.0] * n)) == []  # Imax 20 A < 25 A


def test_terminal_temperature_with_hold_count():
    f = run(engine(), rows(EL, "terminal_temp", [75.0, 75.0, 60.0, 75.0, 75.0, 75.0]))
    assert levels(f) == [(5, "YELLOW")]


def test_battery_absolute_temperature_levels():
    f = run(engine(), rows("battery", "pack_temp", [44.9, 45.0, 45.0, 55.0, 55.0, 65.0, 65.0]))
    assert levels(f, "battery.temp") == [(2, "YELLOW"), (4, "ORANGE"), (6, "RED")]
    assert not any(x.major for x in f)


def test_battery_rate_of_rise_warns_before_the_absolute_line():
    # 200 s steady at 30 degC, then +8 degC/min (thermal runaway precursor)
    vals = [30.0 + 0.05 * (i % 2) for i in range(200)] + [30.0 + 8.0 * k / 60 for k in range(1, 181)]
    f = run(engine(), rows("battery", "pack_temp", vals))
    rise = levels(f, "battery.temp_rise")
    temp = levels(f, "battery.temp")
    assert rise[0][1] == "YELLOW" and temp[0][1] == "YELLOW"
    assert rise[0][0] < temp[0][0] - 60  # more than a minute earlier
    assert "RED" in [lv for _, lv in rise]
    first = next(x for x in f if x.kind == "battery.temp_rise")
    assert first.evidence["window_s"] == 120 and "degC/min" in first.rule


def test_battery_gas():
    f = run(engine(), rows("battery", "co", [3.0, 60.0, 60.0, 60.0]))
    assert levels(f, "battery.gas") == [(3, "YELLOW")]


def test_simulator_like_normal_signals_stay_quiet():
    import numpy as np
    rng = np.random.default_rng(11)
    n = 900
    t = np.arange(n)
    rs = []
    base = {("crane", "load"): (4, 2, .3), ("crane", "moment"): (45, 15, 2), ("crane", "wind"): (5, 2, .8),
            ("electrical", "current_a"): (60, 15, 3), ("electrical", "current_b"): (58, 15, 3),
            ("electrical", "current_c"): (62, 15, 3), ("electrical", "leakage"): (5, 1, .4),
            ("electrical", "terminal_temp"): (38, 5, .5), ("battery", "pack_temp"): (30, 4, .3),
            ("battery", "cell_temp"): (31, 4, .3), ("battery", "co"): (3, .5, .5),
            ("pit", "wall_top_horizontal"): (8, .3, .1), ("pit", "strut_force"): (600, 40, 8),
            ("pit", "groundwater_level"): (-3, .05, .01), ("formwork", "settlement"): (2, .2, .05),
            ("formwork", "axial_force"): (30, 3, .8)}
    for (fam, metric), (b, amp, sd) in base.items():
        vals = b + amp * np.sin(t / 13750) + rng.normal(0, sd, n)  # daily cycle: ~2 pi / 86400 s
        rs += rows(fam, metric, np.round(vals, 3), device=f"{fam}-1")
    rs.sort(key=lambda r: r[4])
    assert run(engine(), rs, chunks=[500]) == []
