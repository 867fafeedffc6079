"""Streams shaped like real sites: learned cadences, working calendars, power-off, gateways, buffered flushes.

Each test states the field situation, feeds it to the engine in the order it would *arrive*, and checks what a
safety officer would get: no fault for a device doing what it should, a fault for one that stopped, and every
hazard that the buffered data proves — back-dated, marked late, with its peak — compared against the same data
fed in measurement-time order (the ground truth of what happened).
"""

from __future__ import annotations

import random


from detectors import DetectorEngine
from detectors.deadman import DeadlineIndex
from sitewatch.findings import Level
from sitewatch.contracts import DeviceStatus

from .helpers import T0, batch, engine, rows, run

H = 3_600_000
MIN = 60_000
PIT, WTH = "pit", "wall_top_horizontal"


def hazards(fs):
    """Hazard findings, without the periodic re-asserts of a standing level."""
    return [f for f in fs if f.category == "hazard" and not f.evidence.get("reassert")]


def kinds(fs, category="fault"):
    return [(f.kind, f.level.name) for f in fs if f.category == category]


def feed_at(eng, states, rs, now=None):
    """One arriving batch; health findings kept (the tests look at them)."""
    return eng.process(batch(rs), states, now)


def drift(i: int) -> float:
    """A real monitoring point never repeats itself exactly (that would be a stuck sensor: flatline)."""
    return 5.0 + 0.01 * (i % 7)


def reading(ts, v, device="d-01", family="crane", metric="load", site="s-01"):
    return (site, device, family, metric, ts, float(v))


# ------------------------------------------------------------------------------------------------ cadence
def test_pit_point_every_hour_is_not_silent_until_ten_learned_intervals():
    eng, states = engine(), {}
    for i in range(8):  # an automatic total station: one reading an hour
        feed_at(eng, states, rows(PIT, WTH, [drift(i)], start=T0 + i * H))
    last = T0 + 7 * H
    assert kinds(eng.tick(last + 9 * H, states)) == []  # 9 h quiet: within 10 x the learned 1 h
    (f,) = [x for x in eng.tick(last + 10 * H + 1, states) if x.category == "fault"]
    assert (f.kind, f.evidence["interval_s"], f.evidence["interval_learned"]) == ("fault.silent", 3600.0, True)


def test_pit_default_interval_applies_until_enough_gaps_and_is_realistic():
    eng, states = engine(), {}
    feed_at(eng, states, rows(PIT, WTH, [5.0]))  # one reading: nothing learned yet
    # the pit family default (30 min) x 10: a point does not fault within 5 h of its first reading
    assert kinds(eng.tick(T0 + 5 * H, states)) == []
    assert kinds(eng.tick(T0 + 5 * H + 1, states)) == [("fault.silent", "ORANGE")]


def test_pit_point_that_densifies_and_relaxes_never_faults_and_is_still_watched():
    """GB 50497: denser monitoring as values approach the alarm values, back to normal after."""
    eng, states = engine(), {}
    t, times = T0, []
    for gap in [H] * 8 + [10 * MIN] * 12 + [H] * 8:
        t += gap
        times.append(t)
    faults = []
    for i, (a, b) in enumerate(zip(times, times[1:] + [None])):
        faults += [x for x in feed_at(eng, states, rows(PIT, WTH, [drift(i)], start=a)) if x.category == "fault"]
        if b is not None:
            faults += [x for x in eng.tick(b - 1, states) if x.category == "fault"]  # just before the next one
    assert faults == []
    # and it is still watched: the point dies, the fault comes within the learned bound (10 x 1 h)
    dead = [x for x in eng.tick(times[-1] + 10 * H + 1, states) if x.category == "fault"]
    assert [x.kind for x in dead] == ["fault.silent"]


def test_floor_and_ceiling_bound_the_learned_limit():
    eng, states = engine(), {}
    for i in range(8):  # a crane black box at 1 Hz: 10 x 1 s would be 10 s, the crane floor is 60 s
        feed_at(eng, states, [reading(T0 + i * 1000, 1.0 + 0.1 * i)])
    assert kinds(eng.tick(T0 + 7000 + 60_000, states)) == []
    assert kinds(eng.tick(T0 + 7000 + 60_001, states)) == [("fault.silent", "ORANGE")]
    eng, states = engine(), {}
    for i in range(8):  # a pit point read twice a day: 10 x 12 h = 5 d, the ceiling (26 h) catches it sooner
        feed_at(eng, states, rows(PIT, WTH, [drift(i)], start=T0 + i * 12 * H))
    assert kinds(eng.tick(T0 + 7 * 12 * H + 26 * H + 1, states)) == [("fault.silent", "ORANGE")]


# ------------------------------------------------------------------------------------------------ calendar
SITE_CAL = """
site: s-01
calendar:
  timezone: Asia/Shanghai
  working_hours: ["07:00-19:00"]
  rest_days: [sun]
"""
# 2026-11-02 is a Monday; 07:00 Asia/Shanghai = 23:00 UTC the day before
MON_0700 = 1_793_574_000_000


def test_crane_switched_off_after_the_shift_is_off_not_silent_and_faults_if_silent_in_working_time():
    eng, states = engine(SITE_CAL), {}
    t = MON_0700
    while t < MON_0700 + 12 * H:  # works 07:00-19:00, a reading every 10 s
        feed_at(eng, states, [reading(t, 3.0)])
        t += 10_000
    last = t - 10_000
    found = []
    for now in range(last + MIN, MON_0700 + 24 * H + 30 * MIN, 5 * MIN):  # the night, until 07:30 next day
        found += eng.tick(now, states)
    assert kinds(found) == []
    health = [f.evidence["state"] for f in found if f.category == "health"]
    assert health == ["off"]
    # it went quiet within the grace (30 min) of the shift's end: switched off, so the silence counts from Tuesday
    # 07:00 + 30 min grace; 10 x the learned 10 s of working time later it is silent: 07:31:40
    tue = MON_0700 + 24 * H
    assert kinds(eng.tick(tue + 30 * MIN + 100_000 - 1, states)) == []
    late = eng.tick(tue + 30 * MIN + 100_000 + 1, states)
    assert kinds(late) == [("fault.silent", "ORANGE")]
    assert [f.evidence["state"] for f in late if f.category == "health"] == ["silent"]


def test_crane_that_dies_mid_shift_faults_within_its_learned_limit():
    eng, states = engine(SITE_CAL), {}
    t = MON_0700 + 2 * H  # 09:00 .. 10:00, then nothing
    while t < MON_0700 + 3 * H:
        feed_at(eng, states, [reading(t, 3.0 + (t // 10_000) % 5 * 0.1)])
        t += 10_000
    last = t - 10_000
    assert kinds(eng.tick(last + 100_000, states)) == []
    assert kinds(eng.tick(last + 100_001, states)) == [("fault.silent", "ORANGE")]


def test_rest_day_is_off():
    eng, states = engine(SITE_CAL), {}
    sat_1850 = MON_0700 - 2 * 24 * H + 11 * H + 50 * MIN  # Saturday 18:50: works to the end of the shift
    for i in range(60):
        feed_at(eng, states, [reading(sat_1850 + i * 10_000, 2.0 + 0.01 * i)])
    found = []
    for now in range(sat_1850 + 11 * MIN, MON_0700 + 20 * MIN, 10 * MIN):  # Saturday night, all Sunday
        found += eng.tick(now, states)
    assert kinds(found) == []


def test_device_announcing_power_off_is_off_until_it_reports():
    eng, states = engine(), {}
    for i in range(6):
        feed_at(eng, states, rows(PIT, WTH, [drift(i)], start=T0 + i * 30 * MIN))
    out = eng.on_device_status(DeviceStatus("s-01", PIT, "d-01", T0 + 3 * H, False, "power_off"), states)
    assert [f.evidence["state"] for f in out if f.category == "health"] == ["off"]
    assert kinds(eng.tick(T0 + 40 * H, states)) == []  # a day and a half later: still off, no fault
    back = feed_at(eng, states, rows(PIT, WTH, [5.5], start=T0 + 41 * H))
    assert [f.evidence["state"] for f in back if f.category == "health"] == ["ok"]
    assert kinds(eng.tick(T0 + 41 * H + 5 * H + 1, states)) == [("fault.silent", "ORANGE")]


def test_device_behind_a_gateway_waits_for_the_gateway_last_will():
    eng, states = engine(), {}
    b = batch([reading(T0 + i * 1000, 1.0) for i in range(8)])
    b = type(b)(b.site, b.device, b.family, b.metric, b.ts, b.value, b.site.copy())
    b.gateway[:] = "gw-01"
    eng.process(b, states)
    last = T0 + 7000
    assert kinds(eng.tick(last + 60_001, states)) == []  # its own limit has passed...
    (f,) = [x for x in eng.tick(last + 60_000 + 120_000 + 1, states) if x.category == "fault"]  # + gateway_grace
    assert f.evidence["gateway"] == "gw-01"  # ... the label the gateway inhibit rule matches on


# ------------------------------------------------------------------------------------------------ late data
def crane_day(n_s: int, overload: tuple[int, int], peak_at: int) -> list[tuple]:
    """1 Hz crane readings for n_s seconds; an overload ramp to 11.5 t (115 %) inside ``overload``."""
    out = []
    for s in range(n_s):
        v = 4.0
        if overload[0] <= s < overload[1]:
            v = 11.5 - 0.02 * abs(s - peak_at)
        out.append(reading(T0 + s * 1000, v))
    return out


def frames(rs: list[tuple], size: int) -> list[list[tuple]]:
    return [rs[i:i + size] for i in range(0, len(rs), size)]


def test_overload_inside_a_buffered_outage_is_raised_back_dated_with_its_peak_exactly_once():
    rs = crane_day(400, overload=(120, 150), peak_at=135)
    truth = hazards(run(engine(), rs))  # measurement-time order: what happened
    assert [(f.level.name, f.ts) for f in truth] == [("RED", T0 + 120_000), ("CLEAR", T0 + 150_000)]

    eng, states = engine(), {}
    found = feed_at(eng, states, rs[:60], now=T0 + 60_000)  # live until the 4G link drops at 60 s
    found += feed_at(eng, states, rs[360:], now=T0 + 400_000)  # live again from 360 s
    buffered = frames(rs[60:360], 100)
    rng = random.Random(7)
    flush = list(reversed(buffered)) + [buffered[0]]  # newest frame first, one frame sent twice
    for fr in flush:
        fr = list(fr)
        rng.shuffle(fr)  # out of order inside the frame
        found += feed_at(eng, states, fr, now=T0 + 420_000)
    late = hazards(found)
    assert [(f.kind, f.level.name, f.ts) for f in late] == [("crane.overload", "RED", T0 + 120_000),
                                                            ("crane.overload", "CLEAR", T0 + 150_000)]
    red, clear = late
    assert red.major and all(f.evidence["late"] for f in late)
    assert red.evidence["outage"] == [T0 + 59_000, T0 + 360_000]  # between the last and the next heard reading
    assert red.evidence["arrival_delay_s"] == 300.0
    ep = clear.evidence["episode"]
    assert (ep["peak"], ep["peak_ts"], ep["worst"]) == (11.5, T0 + 135_000, 3)
    assert ep["first_breach"] == T0 + 120_000 and ep["last_breach"] == T0 + 149_000
    assert clear.evidence["cleared_by"] == {"ts": T0 + 150_000, "value": 4.0}
    assert eng.stats["stale"] == 100  # the frame sent twice changed nothing


def test_buffered_episode_still_raised_where_the_buffer_ends_is_cleared_at_the_gap_end():
    rs = crane_day(400, overload=(330, 360), peak_at=350)  # the overload runs into the outage's end
    eng, states = engine(), {}
    feed_at(eng, states, rs[:60])
    feed_at(eng, states, rs[360:])
    found = feed_at(eng, states, rs[60:360], now=T0 + 500_000)
    late = hazards(found)
    assert [(f.level.name, f.ts) for f in late] == [("RED", T0 + 330_000), ("CLEAR", T0 + 360_000)]
    assert late[1].evidence["cleared_by"]["ts"] == T0 + 360_000
    assert late[1].evidence["episode"]["peak"] == 11.5


def test_late_readings_never_clear_an_alarm_that_newer_readings_hold():
    rs = crane_day(400, overload=(360, 400), peak_at=380)
    eng, states = engine(), {}
    feed_at(eng, states, rs[:60])
    live = hazards(feed_at(eng, states, rs[360:]))
    assert [(f.level.name, f.ts) for f in live] == [("RED", T0 + 360_000)]
    late = hazards(feed_at(eng, states, rs[60:360]))  # quiet buffered data: nothing to say, and no clear
    assert late == []
    assert states["s-01/d-01"]["k"]["crane.overload"]["l"] == 3


def test_pit_rate_breach_inside_a_buffered_outage_fires_when_it_happened():
    """Pit point every 30 min for 3 days; during a 12 h outage the wall starts moving 12 mm/d."""
    yaml = "site: s-01\nfamily_overrides:\n  pit:\n    rate_consecutive: 1\n"
    rs, v = [], 0.0
    for i in range(3 * 48):
        t = T0 + i * 30 * MIN
        v += 0.5 / 48 if i < 100 else 12.0 / 48
        rs.append(reading(t, round(v, 4), family=PIT, metric=WTH))
    truth = [f for f in hazards(run(engine(yaml), rs)) if f.kind == "pit.rate"]
    assert truth and truth[0].level >= Level.YELLOW
    first_truth = truth[0]
    eng, states = engine(yaml), {}
    feed_at(eng, states, rs[:100])
    feed_at(eng, states, rs[124:])  # 12 h of readings (100..123) held in the gateway
    got = feed_at(eng, states, list(reversed(rs[100:124])))
    late = [f for f in hazards(got) if f.kind == "pit.rate"]
    assert late and late[0].evidence["late"]
    assert T0 + 100 * 30 * MIN < first_truth.ts < T0 + 124 * 30 * MIN  # the breach began inside the outage
    assert (late[0].ts, late[0].level) == (first_truth.ts, first_truth.level)  # the time the data shows
    assert max(f.level for f in late) == Level.RED


def test_duplicates_at_the_same_measurement_time_change_nothing():
    rs = crane_day(200, overload=(50, 70), peak_at=60)
    eng, states = engine(), {}
    a = hazards(feed_at(eng, states, rs))
    assert hazards(feed_at(eng, states, rs)) == []
    assert hazards(feed_at(eng, states, rs[40:80])) == []
    # all of them set aside; only readings on the edge of covered time (a frame may cut one measurement time in
    # two) are looked at again, and they change nothing either
    assert len(a) == 2 and eng.stats["stale"] + eng.stats["late"] == 240 and eng.stats["late"] <= 2


def test_silent_fault_during_an_outage_is_retracted_when_the_buffer_shows_the_device_was_measuring():
    eng, states = engine(), {}
    for i in range(8):
        feed_at(eng, states, rows(PIT, WTH, [drift(i)], start=T0 + i * 30 * MIN))
    last = T0 + 7 * 30 * MIN
    assert kinds(eng.tick(last + 5 * H + 1, states)) == [("fault.silent", "ORANGE")]
    # the device's own 4G buffer: it kept measuring every 30 min; the flush arrives in order after the fault
    flush = rows(PIT, WTH, [drift(i) for i in range(10)], start=last + 30 * MIN, step_ms=30 * MIN)
    out = [f for f in feed_at(eng, states, flush) if f.kind == "fault.silent"]
    assert len(out) == 1 and out[0].level == Level.CLEAR and out[0].evidence["retracted"] is True
    assert out[0].value >= 0


# ------------------------------------------------------------------------------------------------ deadline index
def test_deadline_index_returns_only_due_keys_and_costs_nothing_for_busy_devices():
    idx = DeadlineIndex()
    for i in range(1000):
        idx.update(f"s/d{i}", 10_000 + i)
    for step in range(100):  # busy devices: every reading moves their deadline later
        for i in range(0, 1000, 2):
            idx.update(f"s/d{i}", 20_000 + step)
    assert len(idx._heap) <= 1000  # no heap growth from later deadlines
    due = idx.pop_due(10_500)
    assert due == [f"s/d{i}" for i in range(1, 500, 2)]  # odd ones were quiet; even ones moved on
    assert idx.pop_due(10_500) == []
    rest = sorted(f"s/d{i}" for i in range(1000) if i % 2 == 0 or i >= 500)
    assert sorted(idx.pop_due(30_000)) == rest


def test_tick_over_due_keys_equals_a_walk_over_all_devices():
    def fleet():
        eng, states = engine(), {}
        rs = []
        for d in range(50):
            n = 3 if d % 5 == 0 else 30  # every fifth device stops early
            rs += rows(PIT, WTH, [drift(i) for i in range(n)], device=f"p-{d:02d}", step_ms=30 * MIN)
        feed_at(eng, states, rs)
        return eng, states

    eng_a, st_a = fleet()
    eng_b, st_b = fleet()
    idx = DeadlineIndex()
    for k, v in st_b.items():
        idx.update(k, DetectorEngine.next_due(v))
    now = T0 + 10 * H  # the early stoppers (last reading at 1 h, default 30 min x 10) are silent; the rest not
    walk = sorted((f.device, f.kind) for f in eng_a.tick(now, st_a) if f.category == "fault")
    keys = idx.pop_due(now)
    indexed = sorted((f.device, f.kind) for f in eng_b.tick(now, st_b, keys=keys) if f.category == "fault")
    assert walk == indexed and len(walk) == 10 and len(keys) == 10


# ------------------------------------------------------------------------------------------------ charging
SITE_CHARGING = """
site: s-01
calendar:
  timezone: Asia/Shanghai
  charging_hours: ["08:00-18:00"]
charging_points: [cab-01]
"""


def charge(device: str, start: int, amps: list[float]) -> list[tuple]:
    return [("s-01", device, "battery", "charge_current", start + i * 30_000, a) for i, a in enumerate(amps)]


def test_charging_outside_the_allowed_hours_or_at_an_unregistered_point_is_a_violation():
    day_10 = MON_0700 + 3 * H  # 10:00 local
    night_22 = MON_0700 + 15 * H  # 22:00 local
    eng = engine(SITE_CHARGING)
    assert hazards(run(eng, charge("cab-01", day_10, [8.0] * 5))) == []  # registered point, allowed hours
    assert hazards(run(engine(SITE_CHARGING), charge("cab-01", night_22, [0.0, 0.2] * 3))) == []  # not charging
    night = hazards(run(engine(SITE_CHARGING), charge("cab-01", night_22, [8.0] * 4 + [0.0])))
    assert [(f.kind, f.level.name) for f in night] == [("battery.charging_violation", "ORANGE"),
                                                       ("battery.charging_violation", "CLEAR")]
    assert night[0].evidence["outside_charging_hours"] and not night[0].evidence["unapproved_point"]
    assert night[0].ts == night_22 and night[1].ts == night_22 + 4 * 30_000  # cleared when charging stopped
    rogue = hazards(run(engine(SITE_CHARGING), charge("ebike-7", day_10, [5.0] * 3)))
    assert [(f.kind, f.level.name) for f in rogue] == [("battery.charging_violation", "ORANGE")]
    assert rogue[0].evidence["unapproved_point"] and not rogue[0].evidence["outside_charging_hours"]


def test_charging_violation_level_is_configurable_and_can_be_switched_off():
    night_22 = MON_0700 + 15 * H
    red = SITE_CHARGING + "family_overrides:\n  battery:\n    charging_violation: {level: red}\n"
    (f,) = hazards(run(engine(red), charge("cab-01", night_22, [8.0])))
    assert f.level == Level.RED
    off = SITE_CHARGING + "family_overrides:\n  battery:\n    charging_violation: {enabled: false}\n"
    assert hazards(run(engine(off), charge("cab-01", night_22, [8.0] * 3))) == []


def test_a_buffered_frame_that_ends_mid_episode_reports_the_peak_it_holds():
    rs = crane_day(400, overload=(120, 200), peak_at=170)
    eng, states = engine(), {}
    feed_at(eng, states, rs[:60])
    feed_at(eng, states, rs[360:])
    found = hazards(feed_at(eng, states, rs[100:180], now=T0 + 420_000))  # the frame stops before the clear
    assert [(f.level.name, f.ts) for f in found] == [("ORANGE", T0 + 120_000), ("RED", T0 + 145_000)]
    red = found[-1]
    assert red.evidence["late"] and red.evidence["episode"]["first_breach"] == T0 + 120_000
    assert (red.evidence["episode"]["peak"], red.evidence["episode"]["peak_ts"]) == (11.5, T0 + 170_000)
