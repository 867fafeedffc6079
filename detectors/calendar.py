"""A site's working calendar: when a site works, when charging is allowed. Pure numpy + zoneinfo, no I/O.

Built from a site file's ``calendar:`` block (``sitewatch.rules.CalendarConfig``, via ``Calendar.from_config``) or
from plain values. Every time is int64 epoch milliseconds; "local" means the site's IANA time zone.

How a day is laid out: for each local date the working ranges ("07:00-12:00", ...) are turned into epoch-ms
intervals through zoneinfo, so a DST day simply has a shorter or longer range (a wall time that does not exist
maps forward, PEP 495 ``fold=0``). A rest day or a holiday has no working intervals; declared shutdowns are cut
out of them. The intervals of one date are cached. All intervals are half-open ``[start, end)``.

Working periods and grace: touching intervals (also across midnight) form one working period. A device that
follows the calendar is powered on some minutes into a period, so the first ``grace_ms`` of every period do not
count as silent time: ``working_ms_between(a, b, grace_ms)`` and ``silent_deadline`` count only the rest. A
site that works 00:00-24:00 every day is one endless period: grace never applies and a calendar-following
device behaves like any other.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np

DAY_MS = 86_400_000
LOOKAHEAD_DAYS = 400  # silent_deadline looks this far ahead for enough working time, then gives up
FAR_FUTURE_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: "no deadline within the look-ahead"
WHOLE_DAY = ((0, 24 * 60),)

State = Literal["working", "off_hours", "rest_day", "holiday", "shutdown"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_EPOCH_ORD = dt.date(1970, 1, 1).toordinal()
_MS = dt.timedelta(milliseconds=1)
# keep date arithmetic inside datetime's years 1..9999 (a day of margin for the ±1 day candidates)
_MIN_TS = (dt.date(1, 1, 3).toordinal() - _EPOCH_ORD) * DAY_MS
_MAX_TS = (dt.date(9999, 12, 29).toordinal() - _EPOCH_ORD) * DAY_MS
_CACHE_MAX = 50_000  # (kind, date) entries; cleared when full (a few per day of data: never in practice)


def _merge_minutes(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[list[int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in ranges):
        if not 0 <= a < b <= 24 * 60:
            raise ValueError(f"minute range ({a}, {b}) must satisfy 0 <= start < end <= 1440")
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return tuple((a, b) for a, b in out)


def _merge_ms(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[list[int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in ranges if int(b) > int(a)):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return tuple((a, b) for a, b in out)


class Calendar:
    """Working time and charging window of one site.

    ``working`` / ``charging``: local minute-of-day ranges ``(start, end)``, ``0 <= start < end <= 1440``;
    ``rest_days``: weekdays, 0 = Monday .. 6 = Sunday; ``holidays``: inclusive local date ranges ``(first, last)``;
    ``shutdowns``: epoch-ms ranges ``[from, to)``.
    """

    def __init__(self, timezone: str = "Asia/Shanghai", working: Iterable[tuple[int, int]] = WHOLE_DAY,
                 rest_days: Iterable[int] = (), holidays: Iterable[tuple[dt.date, dt.date]] = (),
                 shutdowns: Iterable[tuple[int, int]] = (), charging: Iterable[tuple[int, int]] = WHOLE_DAY):
        self.timezone = timezone
        self.tz = ZoneInfo(timezone)
        self.working = _merge_minutes(working)
        self.charging = _merge_minutes(charging)
        self.rest_days = frozenset(int(d) for d in rest_days)
        if any(not 0 <= d <= 6 for d in self.rest_days):
            raise ValueError("rest days are weekdays 0 (Monday) .. 6 (Sunday)")
        hol: set[int] = set()
        for a, b in holidays:
            hol.update(range(a.toordinal(), b.toordinal() + 1))
        self.holidays = frozenset(hol)  # local date ordinals
        self.shutdowns = _merge_ms(shutdowns)
        self.always_working = self.working == WHOLE_DAY and not self.rest_days and not hol and not self.shutdowns
        self.always_charging = self.charging == WHOLE_DAY
        self._cache: dict[tuple[str, int], tuple[tuple[int, int], ...]] = {}

    @classmethod
    def from_config(cls, cfg: Any) -> "Calendar":
        """From a ``sitewatch.rules.CalendarConfig`` (or anything with the same attributes)."""
        return cls(cfg.timezone, cfg.working_minutes, cfg.rest_weekdays, cfg.holiday_ranges, cfg.shutdown_ranges,
                   cfg.charging_minutes)

    def __repr__(self) -> str:
        return (f"Calendar({self.timezone!r}, working={self.working}, rest_days={sorted(self.rest_days)}, "
                f"holidays={len(self.holidays)} day(s), shutdowns={len(self.shutdowns)}, charging={self.charging})")

    # -------------------------------------------------------------------------------------------- days
    def _local_ord(self, ts: int) -> int:
        ts = min(max(int(ts), _MIN_TS), _MAX_TS)
        return (_EPOCH + ts * _MS).astimezone(self.tz).toordinal()

    def _local_ms(self, d: dt.date, minute: int) -> int:
        if minute >= 24 * 60:
            d, minute = d + dt.timedelta(days=1), minute - 24 * 60
        local = dt.datetime(d.year, d.month, d.day, minute // 60, minute % 60, tzinfo=self.tz)
        return (local - _EPOCH) // _MS

    def _day(self, kind: str, o: int) -> tuple[tuple[int, int], ...]:
        """Epoch-ms intervals of local date ordinal ``o``: "work" (after rest days, holidays, shutdowns) or
        "charge"; sorted, disjoint, inside that date's [00:00, 24:00)."""
        key = (kind, o)
        got = self._cache.get(key)
        if got is not None:
            return got
        d = dt.date.fromordinal(o)
        lo, hi = self._local_ms(d, 0), self._local_ms(d, 24 * 60)
        if kind == "work" and (d.weekday() in self.rest_days or o in self.holidays):
            spans: list[tuple[int, int]] = []
        else:
            spans = []
            for a, b in (self.working if kind in ("work", "raw") else self.charging):
                s, e = max(self._local_ms(d, a), lo), min(self._local_ms(d, b), hi)
                if e > s:
                    spans.append((s, e))
            spans = list(_merge_ms(spans))
            if kind == "work" and self.shutdowns:
                spans = _subtract(spans, self.shutdowns)
        got = tuple(spans)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = got
        return got

    def _spans(self, ts: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """All intervals of the local dates ``ts`` can fall on (its UTC date ± 1), sorted."""
        days = np.unique(np.clip(ts, _MIN_TS, _MAX_TS) // DAY_MS)
        ords = np.unique((days[:, None] + np.array([-1, 0, 1])).ravel()) + _EPOCH_ORD
        pairs = [p for o in ords.tolist() for p in self._day(kind, o)]
        if not pairs:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        arr = np.array(pairs, dtype=np.int64)
        return arr[:, 0], arr[:, 1]

    def _mask(self, ts: Any, kind: str) -> np.ndarray:
        ts = np.asarray(ts, dtype=np.int64)
        if ts.size == 0:
            return np.zeros(ts.shape, dtype=bool)
        starts, ends = self._spans(ts.ravel(), kind)
        if starts.size == 0:
            return np.zeros(ts.shape, dtype=bool)
        idx = np.searchsorted(starts, ts, side="right") - 1
        return (idx >= 0) & (ts < ends[np.maximum(idx, 0)])

    @staticmethod
    def _in(spans: tuple[tuple[int, int], ...], ts: int) -> bool:
        return any(s <= ts < e for s, e in spans)

    # -------------------------------------------------------------------------------------------- questions
    def is_working(self, ts: Any) -> np.ndarray:
        """Vectorised: is each epoch-ms time inside working time (hours, minus rest days, holidays, shutdowns)?"""
        if self.always_working:
            return np.ones(np.shape(ts), dtype=bool)
        return self._mask(ts, "work")

    def is_working_at(self, ts: int) -> bool:
        return self.always_working or self._in(self._day("work", self._local_ord(ts)), int(ts))

    def in_charging_window(self, ts: Any) -> np.ndarray:
        """Vectorised: is charging allowed at each time (``charging_hours``; every day, holidays too)?"""
        if self.always_charging:
            return np.ones(np.shape(ts), dtype=bool)
        return self._mask(ts, "charge")

    def in_charging_window_at(self, ts: int) -> bool:
        return self.always_charging or self._in(self._day("charge", self._local_ord(ts)), int(ts))

    def state_at(self, ts: int) -> State:
        """Why a time is or is not working time, for explanations. "working" exactly when ``is_working_at``."""
        ts = int(ts)
        if any(a <= ts < b for a, b in self.shutdowns):
            return "shutdown"
        o = self._local_ord(ts)
        if o in self.holidays:
            return "holiday"
        if dt.date.fromordinal(o).weekday() in self.rest_days:
            return "rest_day"
        return "working" if self._in(self._day("raw", o), ts) else "off_hours"

    # -------------------------------------------------------------------------------------------- silence
    def _effective(self, t_from: int, grace_ms: int, days_ahead: int) -> Iterator[tuple[int, int]]:
        """Working intervals ending after ``t_from``, in order, each with what falls inside the first ``grace_ms``
        of its working period cut off; up to ``days_ahead`` local dates past ``t_from``'s."""
        o = self._local_ord(t_from - grace_ms) - 1  # a period starting before here began >= grace_ms before t_from
        last = self._local_ord(t_from) + days_ahead
        period_start = prev_end = None
        while o <= last:
            for s, e in self._day("work", o):
                if s != prev_end:
                    period_start = s
                prev_end = e
                if e <= t_from:
                    continue
                es = max(s, period_start + grace_ms)  # type: ignore[operator]
                if es < e:
                    yield es, e
            o += 1

    def working_ms_between(self, a: int, b: int, grace_ms: int = 0) -> int:
        """Working time in ``[a, b)`` in ms; with ``grace_ms``, not counting the first ``grace_ms`` of each period."""
        a, b, grace_ms = int(a), int(b), max(0, int(grace_ms))
        if b <= a:
            return 0
        if self.always_working:
            return b - a
        days = (b - a) // DAY_MS + 2
        total = 0
        for s, e in self._effective(a, grace_ms, days):
            if s >= b:
                break
            total += max(0, min(e, b) - max(s, a))
        return total

    def silent_deadline(self, last_ts: int, limit_ms: int, grace_ms: int = 0) -> int:
        """The earliest time at which a device last heard at ``last_ts`` has been silent for ``limit_ms`` of
        working time, counting from ``max(last_ts, start of its working period + grace_ms)``; outside working time
        the clock starts at the next working period's start + ``grace_ms``. Always a working instant: if the
        limit is reached exactly at the end of a period, the deadline is the next period's start + grace.
        ``FAR_FUTURE_MS`` if there is not that much working time within ``LOOKAHEAD_DAYS``.
        """
        last_ts, remaining, grace_ms = int(last_ts), max(0, int(limit_ms)), max(0, int(grace_ms))
        if self.always_working:
            return last_ts + remaining
        for s, e in self._effective(last_ts, grace_ms, LOOKAHEAD_DAYS):
            s = max(s, last_ts)
            avail = e - s
            if avail <= 0:
                continue
            if remaining < avail:
                return s + remaining
            remaining -= avail
        return FAR_FUTURE_MS


def _subtract(spans: list[tuple[int, int]], cuts: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    out = []
    for s, e in spans:
        for a, b in cuts:
            if b <= s or a >= e:
                continue
            if a > s:
                out.append((s, a))
            s = max(s, b)
            if s >= e:
                break
        if s < e:
            out.append((s, e))
    return out
