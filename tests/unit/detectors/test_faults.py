"""Sensor faults are reported as faults and never raise, clear or hide a structural alarm."""

from sitewatch.findings import Level
from sitewatch.contracts import GatewayStatus

from .helpers import T0, engine, levels, rows, run

PIT = "pit"
WTH = "wall_top_horizontal"


def test_out_of_range_is_a_fault_not_a_hazard_and_clears_after_good_readings():
    f = run(engine(), rows("crane", "load", [5.0, 150.0, 150.0] + [5.0] * 10))
    assert [(x.kind, x.category) for x in f] == [("fault.out_of_range", "fault")] * 2
    assert levels(f) == [(1, "ORANGE"), (12, "CLEAR")]  # cleared by the 10th good reading
    raised = f[0]
    assert raised.threshold == 100.0 and raised.value == 150.0 and raised.metric == "load"
    assert raised.evidence["withheld_from_hazards"] is True


def test_out_of_range_readings_neither_clear_nor_raise_a_hazard():
    f = run(engine(), rows("crane", "load", [11.0, -50.0, -50.0, 11.0, 500.0]))
    assert levels(f, "crane.overload") == [(0, "RED")]  # -50 t would have cleared it
    f = run(engine(), rows("crane", "load", [1.0, 500.0, 1.0]))
    assert levels(f, "crane.overload") == []  # 500 t would have been red


def test_spike_is_held_back_and_reported_when_the_value_returns():
    # baseline 0: 8 mm is fine, 40 mm would be red (alarm 30 mm); it comes back at once -> spike
    f = run(engine(), rows(PIT, WTH, [8.0, 8.1, 40.0, 8.2] + [8.1] * 12))
    assert [x.kind for x in f] == ["fault.spike", "fault.spike"]
    assert levels(f) == [(3, "YELLOW"), (12, "CLEAR")]
    assert f[0].category == "fault" and f[0].threshold == 20.0


def test_a_real_step_is_confirmed_by_the_next_reading():
    f = run(engine(), rows(PIT, WTH, [8.0, 8.1, 40.0, 40.2, 40.1]))
    assert levels(f, "fault.spike") == []
    assert levels(f, "pit.cumulative") == [(3, "RED")]  # one reading later than the jump, not never
    assert f[0].major


def test_spike_across_a_batch_boundary():
    rs = rows(PIT, WTH, [8.0, 8.1, 40.0, 8.2] + [8.1] * 12)
    assert [x.to_dict() for x in run(engine(), rs, chunks=[3, 1, 5])] == [x.to_dict() for x in run(engine(), rs)]


def test_flatline_after_its_duration_withholds_readings_until_the_value_moves():
    vals = [5.0, 5.5, 6.0] + [21.0] * 200 + [22.0, 23.0]
    f = run(engine(), rows("crane", "wind", vals))
    # orange at the first 21.0 (t=3), stuck from t=3: fault at t=3+120; no re-asserts while withheld
    assert levels(f, "fault.flatline") == [(123, "YELLOW"), (203, "CLEAR")]
    # the stuck 21.0 sits in the band, so the alarm stays; re-asserts stop while the readings are withheld
    wind = [x for x in f if x.kind == "crane.wind"]
    assert levels(wind, with_reassert=True) == [(3, "ORANGE"), (63, "ORANGE"), (203, "ORANGE")]


def faults(fs):
    return [f for f in fs if f.category == "fault"]


def test_silent_device_fault_from_the_clock_and_back():
    eng, states = engine(), {}
    # last reading at T0+1 s; too few gaps to learn a cadence: the crane default 10 x 1 s, raised to its
    # 60 s floor (a black box at 1 Hz that pauses 10 s is not a broken sensor)
    run(eng, rows("crane", "load", [1.0, 1.1]), states)
    assert faults(eng.tick(T0 + 61_000, states)) == []
    (f,) = faults(eng.tick(T0 + 61_001, states))
    assert (f.kind, f.category, f.level, f.device, f.metric) == ("fault.silent", "fault", Level.ORANGE, "d-01", "*")
    assert f.threshold == 60.0
    assert faults(eng.tick(T0 + 70_000, states)) == []
    (again,) = faults(eng.tick(T0 + 121_001, states))  # re-asserted every 60 s of silence
    assert again.level == Level.ORANGE and again.evidence["reassert"]
    f = run(eng, rows("crane", "load", [1.0], start=T0 + 130_000), states)
    assert [(x.kind, x.level) for x in f] == [("fault.silent", Level.CLEAR)]
    assert f[0].value == 129.0 and not f[0].evidence["retracted"]  # quiet for 129 s: a real silence, not retracted
    assert faults(eng.tick(T0 + 135_000, states)) == []


def test_silence_does_not_clear_a_hazard():
    eng, states = engine(), {}
    run(eng, rows("crane", "load", [12.0]), states)
    assert [x.kind for x in faults(eng.tick(T0 + 60_001, states))] == ["fault.silent"]
    f = run(eng, rows("crane", "load", [12.0], start=T0 + 61_000), states)
    # the overload is still standing (re-asserted), not cleared by the silence
    assert sorted((x.kind, x.level.name) for x in f) == [("crane.overload", "RED"), ("fault.silent", "CLEAR")]


def test_pit_silence_uses_its_expected_interval():
    eng, states = engine(), {}
    run(eng, rows(PIT, WTH, [8.0]), states)
    assert faults(eng.tick(T0 + 18_000_000, states)) == []  # 10 x the pit default of 30 min
    assert [x.kind for x in faults(eng.tick(T0 + 18_000_001, states))] == ["fault.silent"]


def test_gateway_offline_and_back():
    eng, states = engine(), {}
    off = GatewayStatus("cz-0001", "gw-01", T0, False, {"reason": "last will"})
    (f,) = eng.on_status(off, states)
    assert (f.kind, f.category, f.level, f.device, f.site) == ("fault.gateway_offline", "fault", Level.ORANGE,
                                                                "gateway:gw-01", "cz-0001")
    assert f.key in states
    assert eng.on_status(GatewayStatus("cz-0001", "gw-01", T0 + 1000, False), states) == []
    assert eng.on_status(GatewayStatus("cz-0001", "gw-01", T0 - 5000, True), states) == []  # stale status
    (f,) = eng.on_status(GatewayStatus("cz-0001", "gw-01", T0 + 30_000, True), states)
    assert f.level == Level.CLEAR and f.evidence["offline_s"] == 30.0
    assert eng.on_status(GatewayStatus("cz-0001", "gw-01", T0 + 31_000, True), states) == []


def test_tick_ignores_gateway_states_and_foreign_entries():
    eng, states = engine(), {"x/gateway:gw": {"v": 1, "gw": True, "ts": 0, "l": 2, "te": 0}, "junk": None}
    assert eng.tick(T0, states) == []


def test_fault_on_one_metric_leaves_the_other_metrics_working():
    rs = rows("crane", "load", [150.0] * 3) + rows("crane", "moment", [95.0] * 3)
    f = run(engine(), rs)
    assert sorted((x.kind, x.level.name) for x in f) == [("crane.moment", "YELLOW"), ("fault.out_of_range", "ORANGE")]
