"""detectors.calendar: working time, charging window and the calendar-aware deadman deadline.

Times are written as local wall times of the calendar's zone; an independent minute-grid oracle (built only from
``is_working``) checks ``silent_deadline`` and ``working_ms_between`` with grace.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.calendar import FAR_FUTURE_MS, LOOKAHEAD_DAYS, Calendar
from sitewatch.rules import CalendarConfig

MIN = 60_000
H = 60 * MIN
SH = ZoneInfo("Asia/Shanghai")
BER = ZoneInfo("Europe/Berlin")


def at(tz, *a) -> int:
    return int(dt.datetime(*a, tzinfo=tz).timestamp() * 1000)


def local(tz, ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz)


def site_calendar(**over) -> Calendar:
    """The example site: 07-12 + 13-19, Sunday off, National Day week, a two-day stop-work order."""
    cfg = dict(timezone="Asia/Shanghai", working_hours=["07:00-12:00", "13:00-19:00"], rest_days=["sun"],
               holidays=["2026-10-01..2026-10-07"],
               shutdowns=[{"from": "2026-11-03T00:00:00+08:00", "to": "2026-11-05T00:00:00+08:00"}],
               charging_hours=["08:00-18:00"])
    cfg.update(over)
    return Calendar.from_config(CalendarConfig.model_validate(cfg))


SITE = site_calendar()
BERLIN = Calendar("Europe/Berlin", working=[(7 * 60, 17 * 60)], rest_days=[5, 6])
BERLIN_ALL_BUT_MON = Calendar("Europe/Berlin", rest_days=[0])


# ------------------------------------------------------------------------------------------------ working time
@pytest.mark.parametrize("when, state", [
    ((2026, 9, 29, 6, 59), "off_hours"),
    ((2026, 9, 29, 7, 0), "working"),
    ((2026, 9, 29, 11, 59, 59), "working"),
    ((2026, 9, 29, 12, 0), "off_hours"),  # end is exclusive: lunch
    ((2026, 9, 29, 13, 0), "working"),
    ((2026, 9, 29, 19, 0), "off_hours"),
    ((2026, 9, 27, 9, 0), "rest_day"),  # Sunday
    ((2026, 10, 1, 9, 0), "holiday"),
    ((2026, 10, 7, 18, 0), "holiday"),  # last day of the range is included
    ((2026, 10, 8, 9, 0), "working"),
    ((2026, 11, 3, 9, 0), "shutdown"),
    ((2026, 11, 4, 23, 0), "shutdown"),
    ((2026, 11, 5, 7, 0), "working"),
])
def test_state_and_is_working_in_shanghai(when, state):
    t = at(SH, *when)
    assert SITE.state_at(t) == state
    assert SITE.is_working_at(t) is (state == "working")
    assert SITE.is_working(np.array([t], dtype=np.int64)).tolist() == [state == "working"]


def test_vectorised_over_many_days_keeps_its_shape():
    ts = np.arange(at(SH, 2026, 9, 20), at(SH, 2026, 11, 10), 7 * MIN, dtype=np.int64)
    got = SITE.is_working(ts)
    assert got.dtype == bool and got.shape == ts.shape
    assert got.tolist() == [SITE.is_working_at(int(t)) for t in ts]
    assert SITE.is_working(ts.reshape(-1, 1)[: len(ts) // 2 * 2].reshape(2, -1)).shape == (2, len(ts) // 2)
    assert SITE.is_working(np.array([], dtype=np.int64)).shape == (0,)


def test_charging_window_ignores_rest_days_and_holidays():
    sunday_noon, holiday_night = at(SH, 2026, 9, 27, 12), at(SH, 2026, 10, 2, 20)
    ts = np.array([at(SH, 2026, 9, 29, 7, 59), at(SH, 2026, 9, 29, 8), sunday_noon, holiday_night,
                   at(SH, 2026, 9, 29, 18)], dtype=np.int64)
    assert SITE.in_charging_window(ts).tolist() == [False, True, True, False, False]
    assert [SITE.in_charging_window_at(int(t)) for t in ts] == [False, True, True, False, False]


def test_no_calendar_means_always_working_and_always_charging():
    cal = Calendar.from_config(CalendarConfig())
    ts = np.array([0, at(SH, 2026, 10, 1, 3), at(SH, 2026, 12, 27, 23, 59)], dtype=np.int64)
    assert cal.is_working(ts).all() and cal.in_charging_window(ts).all()
    assert cal.state_at(int(ts[1])) == "working"
    assert cal.working_ms_between(1000, 5000) == 4000
    assert cal.silent_deadline(at(SH, 2026, 10, 1, 3), 10 * MIN, 30 * MIN) == at(SH, 2026, 10, 1, 3, 10)


def test_working_ms_between():
    monday = at(SH, 2026, 9, 14)
    assert SITE.working_ms_between(monday, monday + 24 * H) == 11 * H
    assert SITE.working_ms_between(monday, monday + 7 * 24 * H) == 6 * 11 * H  # Sunday off
    assert SITE.working_ms_between(at(SH, 2026, 9, 28), at(SH, 2026, 10, 5)) == 3 * 11 * H  # Oct 1-3 off, 4th Sunday
    assert SITE.working_ms_between(at(SH, 2026, 9, 28, 11), at(SH, 2026, 9, 28, 14)) == 2 * H
    assert SITE.working_ms_between(at(SH, 2026, 9, 28, 11), at(SH, 2026, 9, 28, 14), grace_ms=30 * MIN) == 90 * MIN
    assert SITE.working_ms_between(at(SH, 2026, 10, 1), at(SH, 2026, 10, 8)) == 0  # National Day week
    assert SITE.working_ms_between(at(SH, 2026, 11, 2), at(SH, 2026, 11, 6)) == 2 * 11 * H  # 3rd, 4th stopped
    assert SITE.working_ms_between(5, 5) == 0 and SITE.working_ms_between(9, 5) == 0


# ------------------------------------------------------------------------------------------------ DST
def test_berlin_dst_days_are_23_and_25_hours_long():
    # Europe/Berlin 2026: clocks forward on Sun 29 March, back on Sun 25 October
    assert BERLIN_ALL_BUT_MON.working_ms_between(at(BER, 2026, 3, 29), at(BER, 2026, 3, 30)) == 23 * H
    assert BERLIN_ALL_BUT_MON.working_ms_between(at(BER, 2026, 10, 25), at(BER, 2026, 10, 26)) == 25 * H
    assert BERLIN_ALL_BUT_MON.working_ms_between(at(BER, 2026, 3, 30), at(BER, 2026, 3, 31)) == 0  # Monday off


def test_berlin_working_hours_follow_the_wall_clock_across_dst():
    utc = dt.timezone.utc
    # 07:00 local is 06:00 UTC in winter (CET) and 05:00 UTC in summer (CEST)
    fri_before = at(utc, 2026, 3, 27, 6, 0)
    mon_after = at(utc, 2026, 3, 30, 5, 0)
    assert BERLIN.is_working_at(fri_before) and not BERLIN.is_working_at(fri_before - 1)
    assert BERLIN.is_working_at(mon_after) and not BERLIN.is_working_at(mon_after - 1)
    ts = np.array([fri_before - 1, fri_before, mon_after - 1, mon_after], dtype=np.int64)
    assert BERLIN.is_working(ts).tolist() == [False, True, False, True]
    # a working range through the skipped hour is an hour shorter that night, one through the repeated hour longer
    night = Calendar("Europe/Berlin", working=[(60, 4 * 60)])
    assert night.working_ms_between(at(BER, 2026, 3, 29), at(BER, 2026, 3, 30)) == 2 * H
    assert night.working_ms_between(at(BER, 2026, 10, 25), at(BER, 2026, 10, 26)) == 4 * H
    assert night.working_ms_between(at(BER, 2026, 10, 26), at(BER, 2026, 10, 27)) == 3 * H


def test_berlin_deadline_across_the_dst_weekend():
    # Friday 27 March 16:55 CET, 10 min of working time: 5 today, 5 on Monday after grace, in CEST
    dl = BERLIN.silent_deadline(at(BER, 2026, 3, 27, 16, 55), 10 * MIN, 30 * MIN)
    assert local(BER, dl).replace(tzinfo=None) == dt.datetime(2026, 3, 30, 7, 35)
    assert local(BER, dl).utcoffset() == dt.timedelta(hours=2)


# ------------------------------------------------------------------------------------------------ deadline
@pytest.mark.parametrize("last, limit_min, grace_min, expect", [
    ((2026, 9, 29, 9, 0), 10, 30, (2026, 9, 29, 9, 10)),  # plain: in the middle of a period
    ((2026, 9, 29, 7, 5), 10, 30, (2026, 9, 29, 7, 40)),  # heard inside the grace: clock starts at 07:30
    ((2026, 9, 29, 11, 55), 10, 30, (2026, 9, 29, 13, 35)),  # 5 min before lunch + grace after lunch
    ((2026, 9, 29, 11, 55), 10, 0, (2026, 9, 29, 13, 5)),
    ((2026, 9, 29, 22, 0), 10, 30, (2026, 9, 30, 7, 40)),  # heard at night: next morning + grace
    ((2026, 9, 26, 18, 55), 10, 30, (2026, 9, 28, 7, 35)),  # Saturday evening: Sunday is a rest day
    ((2026, 9, 30, 18, 55), 10, 30, (2026, 10, 8, 7, 35)),  # the eve of National Day week
    ((2026, 11, 2, 18, 55), 10, 30, (2026, 11, 5, 7, 35)),  # stop-work order on the 3rd and 4th
    ((2026, 9, 29, 9, 0), 0, 30, (2026, 9, 29, 9, 0)),
    ((2026, 9, 29, 12, 30), 0, 30, (2026, 9, 29, 13, 30)),
    ((2026, 9, 29, 18, 50), 10, 30, (2026, 9, 30, 7, 30)),  # the limit runs out exactly at 19:00: next working instant
    # 30 h of working time: Tue 8.5 h (after 09:00; 13:30-19:00), Wed 10 h, Oct 1-7 off, Thu 8th 10 h, Fri 1.5 h
    ((2026, 9, 29, 9, 0), 30 * 60, 30, (2026, 10, 9, 9, 0)),
])
def test_silent_deadline_examples(last, limit_min, grace_min, expect):
    dl = SITE.silent_deadline(at(SH, *last), limit_min * MIN, grace_min * MIN)
    assert local(SH, dl).replace(tzinfo=None) == dt.datetime(*expect)
    assert SITE.is_working_at(dl)


def test_deadline_gives_up_after_the_look_ahead():
    stop = Calendar("Asia/Shanghai", shutdowns=[(at(SH, 2026, 1, 1), at(SH, 2028, 1, 1))])
    assert stop.silent_deadline(at(SH, 2026, 3, 1), 10 * MIN) == FAR_FUTURE_MS
    only_holidays = Calendar("Asia/Shanghai", working=[(420, 720)],
                             holidays=[(dt.date(2026, 1, 1), dt.date(2027, 12, 31))])
    assert only_holidays.silent_deadline(at(SH, 2026, 3, 1), 10 * MIN) == FAR_FUTURE_MS
    assert only_holidays.silent_deadline(at(SH, 2027, 12, 31), 10 * MIN) == at(SH, 2028, 1, 1, 7, 10)
    assert LOOKAHEAD_DAYS >= 366


def test_a_shutdown_starts_a_new_working_period_with_its_own_grace():
    cal = site_calendar(shutdowns=[{"from": "2026-09-29T09:00:00+08:00", "to": "2026-09-29T10:00:00+08:00"}])
    assert cal.state_at(at(SH, 2026, 9, 29, 9, 30)) == "shutdown"
    assert cal.silent_deadline(at(SH, 2026, 9, 29, 8, 55), 10 * MIN, 30 * MIN) == at(SH, 2026, 9, 29, 10, 35)


def test_grace_never_applies_across_midnight_of_a_round_the_clock_calendar():
    cal = Calendar("Asia/Shanghai", rest_days=[6])  # 24 h working, Sundays off
    assert cal.silent_deadline(at(SH, 2026, 9, 29, 23, 55), 10 * MIN, 30 * MIN) == at(SH, 2026, 9, 30, 0, 5)
    assert cal.silent_deadline(at(SH, 2026, 9, 26, 23, 55), 10 * MIN, 30 * MIN) == at(SH, 2026, 9, 28, 0, 35)


# ------------------------------------------------------------------------------------------------ properties
def _oracle(cal: Calendar, last: int, limit_min: int, grace_min: int, days: int) -> tuple[int | None, list]:
    """Deadline on a minute grid from is_working alone (all boundaries of these calendars are whole minutes)."""
    start = last - (grace_min + 24 * 60) * MIN
    grid = np.arange(start, last + days * 24 * H, MIN, dtype=np.int64)
    work = cal.is_working(grid)
    run = np.zeros(len(grid), dtype=np.int64)  # minutes into the current working period
    r = 0
    for i, w in enumerate(work.tolist()):
        r = r + 1 if w else 0
        run[i] = r
    eff = work & (run > grace_min)
    i0 = int((last - start) // MIN)
    count = 0
    for i in range(i0, len(grid)):
        if eff[i]:
            if count == limit_min:
                return int(grid[i]), eff
            count += 1
    return None, eff


minute_in_2026_autumn = st.integers(0, 80 * 24 * 60).map(lambda m: at(SH, 2026, 9, 15) + m * MIN)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(last=minute_in_2026_autumn, limit_min=st.integers(0, 13 * 60), grace_min=st.sampled_from([0, 15, 30, 90]))
def test_deadline_matches_a_minute_grid_oracle(last, limit_min, grace_min):
    dl = SITE.silent_deadline(last, limit_min * MIN, grace_min * MIN)
    want, _ = _oracle(SITE, last, limit_min, grace_min, days=12)
    assert dl == want
    assert SITE.is_working_at(dl), "a deadline lands only inside working time"
    assert SITE.working_ms_between(last, dl, grace_min * MIN) == limit_min * MIN


@settings(max_examples=150, deadline=None)
@given(last=st.integers(at(BER, 2026, 3, 20), at(BER, 2026, 4, 5)) | st.integers(at(BER, 2026, 10, 18),
                                                                                 at(BER, 2026, 11, 2)),
       limit=st.integers(0, 30 * H), grace=st.integers(0, 3 * H))
def test_deadline_properties_in_a_dst_zone(last, limit, grace):
    dl = BERLIN.silent_deadline(last, limit, grace)
    assert dl >= last
    assert BERLIN.is_working_at(dl)
    assert BERLIN.working_ms_between(last, dl, grace) == limit
    # nothing earlier qualifies: the instant before is either short of the limit or not (effective) working time
    assert (dl == last or BERLIN.working_ms_between(last, dl - 1, grace) < limit
            or BERLIN.working_ms_between(dl - 1, dl, grace) == 0)


ts_lists = st.lists(st.integers(at(BER, 2026, 3, 1), at(BER, 2026, 11, 30)), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(ts=ts_lists, which=st.sampled_from(["site", "berlin", "berlin24"]))
def test_vectorised_equals_scalar(ts, which):
    cal = {"site": SITE, "berlin": BERLIN, "berlin24": BERLIN_ALL_BUT_MON}[which]
    arr = np.array(ts, dtype=np.int64)
    assert cal.is_working(arr).tolist() == [cal.is_working_at(t) for t in ts]
    assert cal.is_working(arr).tolist() == [cal.state_at(t) == "working" for t in ts]
    assert cal.in_charging_window(arr).tolist() == [cal.in_charging_window_at(t) for t in ts]


@settings(max_examples=100, deadline=None)
@given(a=st.integers(at(BER, 2026, 3, 25), at(BER, 2026, 4, 3)), span=st.integers(0, 4 * 24 * H),
       cut=st.floats(0, 1))
def test_working_time_adds_up(a, span, cut):
    b = a + span
    m = a + int(span * cut)
    total = BERLIN.working_ms_between(a, b)
    assert total == BERLIN.working_ms_between(a, m) + BERLIN.working_ms_between(m, b)
    assert 0 <= total <= span


def test_plain_values_are_validated():
    with pytest.raises(ValueError):
        Calendar(working=[(600, 540)])
    with pytest.raises(ValueError):
        Calendar(rest_days=[7])
    cal = Calendar(working=[(420, 720), (700, 800)])  # overlapping ranges merge
    assert cal.working == ((420, 800),)
