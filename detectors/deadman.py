"""Knowing when a device is silent: its own learned cadence, the site's working calendar, and a deadline index.

Why learned: one family default cannot fit a pit monitoring point that reports every 10 minutes one week and
every hour the next (GB 50497 asks for denser monitoring as values approach their alarm values), nor a crane
black box at 1 Hz. Each device's reporting interval is the *median* of its last ``K_GAPS`` event-time gaps between
distinct measurement times — robust to one outage or one burst — and the family default applies only until
``min_gaps`` gaps are known. The deadman limit is ``silent_after x interval``, clamped to the family's floor
and ceiling, so a point that relaxes from 10 min back to 1 h stays inside the floor, and a point that reports
once a day is still caught within the ceiling.

Why a calendar: a crane switched off after the shift is *off*, not broken. For devices that follow the site
calendar, silence is counted in working time only, with a grace after each working period starts (the crane is
powered on some minutes into the shift) and before it ends (a silence beginning within the grace of the end of a
period is the end of the shift: it counts from the next period).

Why an index: the tick must not walk every device of a city each few seconds; ``DeadlineIndex`` is a heap of
each device's next due time, so a tick costs O(due devices x log n).
"""

from __future__ import annotations

import heapq
from statistics import median_low
from typing import Any

K_GAPS = 8


def learn(gaps: list[int], new_gaps: list[int], k: int = K_GAPS) -> list[int]:
    """Keep the last ``k`` positive gaps (ms)."""
    return (list(gaps) + [g for g in new_gaps if g > 0])[-k:]


def interval_ms(plan: Any, gaps: list[int]) -> int:
    """The device's reporting interval: learned once enough gaps are seen, the family default before."""
    return int(plan.cadence_ms(median_low(gaps) if gaps else None, len(gaps)))


def limit_ms(plan: Any, gaps: list[int]) -> int:
    """How long a silence may last before it is a fault."""
    return plan.silent_limit_ms(median_low(gaps) if gaps else None, len(gaps))


def gap_threshold_ms(plan: Any, gaps: list[int], gap_factor: float) -> int:
    """An in-order jump larger than this is a gap that buffered readings may fill later. While the cadence is
    still being learned, the largest gap seen so far counts as normal (a device slower than its family default
    must not leave a trail of one-reading "gaps" behind it)."""
    iv = interval_ms(plan, gaps)
    if len(gaps) < plan.min_gaps and gaps:
        iv = max(iv, max(gaps))
    return int(max(gap_factor * iv, 2_000))


def deadlines(plan: Any, calendar: Any, last_ts: int, gaps: list[int], gateway: str | None,
              lim: int | None = None) -> tuple[int, int | None]:
    """(deadline of the silent fault, time the device counts as *off* or None).

    For a calendar-following device the deadline only lands in working time; if it lies beyond the plain
    ``last_ts + limit``, the device is off (outside working hours) from that plain time until the deadline.
    ``lim``: ``limit_ms(plan, gaps)`` when the caller has it already (the engine computes it for a whole batch).
    """
    if lim is None:
        lim = limit_ms(plan, gaps)
    plain = last_ts + lim
    dl = plain
    if plan.follows_calendar and calendar is not None:
        grace, start = plan.calendar_grace_ms, last_ts
        if grace and calendar.working_ms_between(last_ts, last_ts + grace) < grace:
            # its working period ends within the grace: switched off at the end of the shift (or before the
            # lunch break), not broken — the silence counts from the next period, like a crane not yet started
            start = last_ts + grace
        dl = int(calendar.silent_deadline(start, lim, grace))
    off_at = plain if dl > plain else None
    if gateway:  # the gateway's last will should arrive first, so its fault inhibits this silence
        dl += plan.gateway_grace_ms
    return dl, off_at


class DeadlineIndex:
    """Next due time per key, as a heap with lazy updates: at most one live heap entry per key.

    ``update`` records the wanted due time; the heap only gets a new entry when the due time moves *earlier*.
    When an entry pops and the wanted time has moved later, it is pushed again once — so a device that reports
    every second costs no heap traffic at all until it actually falls silent.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []
        self._queued: dict[str, int] = {}  # key -> due time of its live heap entry
        self._want: dict[str, int | None] = {}

    def __len__(self) -> int:
        return len(self._queued)

    def update(self, key: str, due: int | None) -> None:
        self._want[key] = due
        if due is None:
            return
        q = self._queued.get(key)
        if q is None or due < q:
            self._queued[key] = due
            heapq.heappush(self._heap, (due, key))

    def pop_due(self, now: int) -> list[str]:
        """Keys whose wanted due time is before ``now`` (each returned once; ``update`` them again after)."""
        out = []
        h = self._heap
        while h and h[0][0] < now:
            due, key = heapq.heappop(h)
            if self._queued.get(key) != due:
                continue  # superseded by an earlier entry
            del self._queued[key]
            want = self._want.get(key)
            if want is None:
                self._want.pop(key, None)
                continue
            if want >= now:
                self._queued[key] = want
                heapq.heappush(h, (want, key))
                continue
            out.append(key)
        return out

    def clear(self) -> None:
        self._heap.clear()
        self._queued.clear()
        self._want.clear()
