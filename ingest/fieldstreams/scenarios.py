"""Realistic field-stream scenarios, generated in fast-forwarded event time (weeks in seconds), deterministic by seed.

Each scenario writes into a :class:`_Build` (events + manifest); ``field-mix`` runs several of them on one site.
Signals are vectorised with numpy per device and metric; only the JSON encoding is per reading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

import numpy as np

from sitewatch.contracts import FAMILIES, MAX_PAYLOAD_BYTES, gateway_topic, reading_topic

from .model import (Arrival, CadenceChange, Cue, DeviceInfo, FieldStream, HazardTruth, Manifest, OffWindow,
                    OutageTruth, SilenceTruth)

S = 1000
MIN = 60 * S
H = 60 * MIN
D = 24 * H
LEVELS = ("yellow", "orange", "red")

# Default lines (config/rules/defaults.yaml) used to compute ground truth: the *scenario* says where the signal
# crosses them, whatever a candidate config later does with it.
CRANE_RATED_T = 10.0
CRANE_LINES = (9.0, 10.0, 11.0)  # 90 / 100 / 110 % of 10 t
PIT_RATE = {"window_ms": 24 * H, "consecutive": 2, "per_ms": D, "buckets": 12,
            "lines": (2.1, 2.55, 3.0)}  # 70 / 85 / 100 % of 3 mm/d

FRAME_ITEM = b'{"family":"%s","device":"%s","metric":"%s","ts":%d,"value":%.3f,"unit":"%s"}'
READING = b'{"ts":%d,"value":%.3f,"unit":"%s"}'


def _b(s: str) -> bytes:
    return s.encode()


# ================================================================================================ builder
class _Build:
    def __init__(self, scenario: str, seed: int, start_ms: int, end_ms: int, site: str, params: dict[str, Any],
                 late_after_ms: int = 60_000):
        self.rng = np.random.default_rng(seed)
        self.site = site
        self.start, self.end = int(start_ms), int(end_ms)
        self.ev: list[tuple[int, int, str, bytes]] = []
        self.seq = 0
        self.m = Manifest(scenario, seed, self.start, self.end, [site], dict(params), late_after_ms=late_after_ms)
        self._items: list[tuple[int, int]] = []  # (arrival, ts) per delivered reading item, for lateness
        self._dups = 0

    # ------------------------------------------------------------------ events
    def add(self, arrival: int, topic: str, payload: bytes) -> None:
        self.ev.append((int(arrival), self.seq, topic, payload))
        self.seq += 1

    def direct(self, family: str, device: str, metric: str, ts: np.ndarray, values: np.ndarray,
               arrival: np.ndarray) -> None:
        """Single-reading topic per reading (a device with its own DTU)."""
        topic = reading_topic(self.site, family, device, metric)
        unit = _b(FAMILIES[family][metric])
        seq0 = self.seq
        ts_l, a_l = ts.tolist(), arrival.tolist()
        self.ev.extend((a, seq0 + i, topic, READING % (t, v, unit))
                       for i, (a, t, v) in enumerate(zip(a_l, ts_l, values.tolist())))
        self.seq += len(ts_l)
        self.m.readings += len(ts_l)
        self._items.extend(zip(a_l, ts_l))

    def device_status(self, family: str, device: str, ts: int, online: bool, arrival: int,
                      reason: str = "power_off") -> None:
        topic = f"sw/{self.site}/{family}/{device}/status"
        body = (b'{"ts":%d,"online":false,"reason":"%s"}' % (ts, _b(reason))) if not online else \
            (b'{"ts":%d,"online":true}' % ts)
        self.add(arrival, topic, body)

    def gateway_status(self, gw: str, ts: int, online: bool, arrival: int) -> None:
        self.add(arrival, gateway_topic(self.site, gw, "status"),
                 b'{"ts":%d,"online":%s}' % (ts, b"true" if online else b"false"))

    def delays(self, n: int, lo_ms: float = 40, median_ms: float = 250, hi_ms: float = 3000) -> np.ndarray:
        """Network delay of a 4G DTU: lognormal around ``median_ms``, clipped."""
        d = self.rng.lognormal(math.log(median_ms), 0.6, n)
        return np.clip(d, lo_ms, hi_ms).astype(np.int64)

    def cue(self, arrival: int, text: str) -> None:
        self.m.cues.append(Cue(int(arrival), text))

    # ------------------------------------------------------------------ result
    def finish(self) -> FieldStream:
        self.ev.sort(key=lambda e: (e[0], e[1]))
        events = [Arrival(a, t, p) for a, _, t, p in self.ev]
        m = self.m
        m.messages = len(events)
        m.max_payload_bytes = max((len(p) for _, _, p in events), default=0)
        if self._items:
            it = np.asarray(self._items, dtype=np.int64)
            m.delivered_readings = int(it.shape[0])
            m.late_readings = int(((it[:, 0] - it[:, 1]) > m.late_after_ms).sum())
        m.duplicate_readings = self._dups
        m.cues.sort(key=lambda c: c.arrival_ms)
        m.hazards.sort(key=lambda h: h.start_ms)
        return FieldStream(m, events)


# ================================================================================================ signals
def _crossings(ts: np.ndarray, v: np.ndarray, lines) -> dict[str, int]:
    out = {}
    for name, line in zip(LEVELS, lines):
        if line is None:
            continue
        hit = np.flatnonzero(v >= line)
        if hit.size:
            out[name] = int(ts[hit[0]])
    return out


def pit_rate_series(ts: np.ndarray, v: np.ndarray, window_ms: int = PIT_RATE["window_ms"],
                    consecutive: int = PIT_RATE["consecutive"], per_ms: int = PIT_RATE["per_ms"],
                    buckets: int = PIT_RATE["buckets"]) -> np.ndarray:
    """The rate the pit detector computes at each reading (``detectors/rate.py``): change from the latest sample
    at or before ``ts - k * window``, samples being the first reading of each ``window / buckets`` bucket, and
    the smallest of ``consecutive`` windows. NaN while the history is too short."""
    bucket = max(1, window_ms // buckets)
    b = ts // bucket
    sample = np.r_[True, b[1:] != b[:-1]]
    st, sv = ts[sample], v[sample]
    x = np.full(ts.shape[0], np.inf)
    prev_t, prev_v = ts.astype(np.float64), v.astype(np.float64)
    for k in range(1, consecutive + 1):
        j = np.searchsorted(st, ts - k * window_ms, side="right") - 1
        ok = (j >= 0)
        jc = np.maximum(j, 0)
        ok &= st[jc] < prev_t
        pt = np.where(ok, st[jc], np.nan)
        pv = np.where(ok, sv[jc], np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            seg = np.abs((prev_v - pv) / (prev_t - pt) * per_ms)
        x = np.minimum(x, seg)
        prev_t, prev_v = pt, pv
    x[np.isinf(x)] = np.nan
    return x


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _grid(start: int, end: int, step_ms: int, rng: np.random.Generator, jitter_ms: int = 0) -> np.ndarray:
    """Sample times every ``step_ms`` in [start, end), with a little clock jitter, strictly increasing."""
    if end <= start:
        return np.empty(0, dtype=np.int64)
    t = np.arange(start, end, step_ms, dtype=np.int64)
    if jitter_ms and t.size:
        t = t + rng.integers(-jitter_ms, jitter_ms + 1, t.size)
        t = np.maximum.accumulate(np.clip(t, start, end - 1))
        t = t[np.r_[True, t[1:] > t[:-1]]]
    return t


def _monotone_arrivals(ts: np.ndarray, delay: np.ndarray) -> np.ndarray:
    """A device's messages leave over one connection in order: arrival never goes backwards."""
    return np.maximum.accumulate(ts + delay)


def _crane_signals(rng, ts: np.ndarray, phase: float) -> dict[str, np.ndarray]:
    """Lifting cycles every ~4 min between an empty hook and 2–6 t; moment follows load; wind gusts; tilt."""
    t = ts.astype(np.float64) / 1000.0
    cycle = np.sin(2 * math.pi * t / 240.0 + phase)
    load = np.clip(3.2 + 2.6 * cycle + rng.normal(0, 0.15, ts.size), 0.15, None)
    moment = np.clip(18.0 + 5.5 * load + rng.normal(0, 1.2, ts.size), 0, None)
    wind = np.clip(4.5 + 1.5 * np.sin(2 * math.pi * t / 5400.0 + phase) + rng.normal(0, 0.4, ts.size), 0, None)
    tilt = 0.10 + 0.02 * np.sin(2 * math.pi * t / 86400.0 + phase) + rng.normal(0, 0.005, ts.size)
    return {"load": load, "moment": moment, "wind": wind, "tilt": tilt}


# steady per-family signals for gateway-borne devices: metric -> (base, noise sd, slow amplitude)
_STEADY = {
    "crane": None,  # lifting cycles, see _crane_signals
    "electrical": {"current_a": (60.0, 3.0, 12.0), "current_b": (58.0, 3.0, 12.0), "current_c": (62.0, 3.0, 12.0),
                   "leakage": (5.0, 0.4, 1.0), "terminal_temp": (38.0, 0.5, 4.0)},
    "battery": {"pack_temp": (30.0, 0.3, 3.0), "cell_temp": (31.0, 0.3, 3.0), "charge_current": (8.0, 0.3, 1.0),
                "smoke": (1.0, 0.2, 0.1), "co": (3.0, 0.5, 0.3)},
    "formwork": {"settlement": (2.0, 0.05, 0.2), "tilt": (0.05, 0.005, 0.01), "axial_force": (30.0, 0.8, 3.0),
                 "horizontal_displacement": (1.0, 0.05, 0.2)},
    "pit": {"wall_top_horizontal": (8.0, 0.1, 0.3), "wall_top_vertical": (5.0, 0.1, 0.3),
            "deep_horizontal": (6.0, 0.1, 0.2), "strut_force": (600.0, 8.0, 40.0),
            "groundwater_level": (-3.0, 0.01, 0.05), "surface_settlement": (4.0, 0.1, 0.2)},
}
_GW_METRICS = {"crane": ["load", "moment", "wind", "tilt"],
               "electrical": ["current_a", "current_b", "current_c", "leakage", "terminal_temp"],
               "battery": ["pack_temp", "cell_temp", "charge_current", "smoke", "co"],
               "formwork": ["settlement", "tilt", "axial_force", "horizontal_displacement"],
               "pit": ["wall_top_horizontal", "wall_top_vertical"]}
_PREFIX = {"crane": "tc", "formwork": "fw", "pit": "jc", "electrical": "eb", "battery": "bc"}


def _steady(rng, family: str, metric: str, ts: np.ndarray, phase: float) -> np.ndarray:
    base, sd, amp = _STEADY[family][metric]
    t = ts.astype(np.float64) / 1000.0
    return base + amp * np.sin(2 * math.pi * t / 86400.0 + phase) + rng.normal(0, sd, ts.size)


# ================================================================================================ gateway
@dataclass
class Outage:
    start_ms: int
    end_ms: int
    buffered: bool = False
    flush_order: str = "reverse"  # "reverse" | "shuffled" | "chronological"
    shuffle_within: bool = True
    duplicate: str | None = "random"  # None | "random" | "hazard" (the frame holding a hazard's peak)
    will_delay_ms: int = 90 * S  # 1.5 x a 60 s keepalive: when the broker publishes the last will
    online_delay_ms: int = 1500  # after the link is back, before the online status
    flush_delay_ms: int = 3 * S  # online status -> first flush frame
    flush_gap_ms: int = 400  # between flush frames (live frames keep their own cadence in between)


class _Gateway:
    """Collects a gateway's readings, then sends them as frames on its cadence, with outages and flushes."""

    def __init__(self, b: _Build, name: str, frame_ms: int = 5 * S, max_items: int = 500,
                 max_bytes: int = MAX_PAYLOAD_BYTES):
        self.b, self.name, self.frame_ms = b, name, int(frame_ms)
        self.max_items, self.max_bytes = max_items, max_bytes
        self.cols: list[tuple[str, str, str, np.ndarray, np.ndarray]] = []
        self.devices: dict[str, str] = {}
        self.mark_ts: tuple[str, str, int] | None = None  # (device, metric, ts) whose flush frame is duplicated

    def series(self, family: str, device: str, metric: str, ts: np.ndarray, values: np.ndarray) -> None:
        self.cols.append((family, device, metric, ts.astype(np.int64), values.astype(np.float64)))
        self.devices[device] = family

    def emit(self, outages: list[Outage]) -> None:
        b = self.b
        topic = gateway_topic(b.site, self.name)
        fam = np.concatenate([np.full(c[3].size, i, dtype=np.int64) for i, c in enumerate(self.cols)])
        ts = np.concatenate([c[3] for c in self.cols])
        val = np.concatenate([c[4] for c in self.cols])
        order = np.argsort(ts, kind="stable")
        ser, ts, val = fam[order], ts[order], val[order]
        b.m.readings += int(ts.size)
        heads = [b"%s|%s|%s|%s" % (_b(c[0]), _b(c[1]), _b(c[2]), _b(FAMILIES[c[0]][c[2]])) for c in self.cols]
        heads = [tuple(h.split(b"|")) for h in heads]

        def item(i: int) -> bytes:
            f, d, m, u = heads[ser[i]]
            return FRAME_ITEM % (f, d, m, int(ts[i]), float(val[i]), u)

        # frame k is sent at start + k * frame_ms and carries readings with ts in ((k-1) f, k f]
        send = b.start + (-((b.start - ts) // self.frame_ms)) * self.frame_ms
        status = np.zeros(ts.size, dtype=np.int8)  # 0 live, 1 lost, 2 buffered
        owner = np.full(ts.size, -1, dtype=np.int64)
        for k, o in enumerate(outages):
            inside = (send >= o.start_ms) & (send < o.end_ms)
            status[inside] = 2 if o.buffered else 1
            owner[inside] = k
        # live frames
        live = np.flatnonzero(status == 0)
        if live.size:
            s_live = send[live]
            cuts = np.flatnonzero(np.r_[True, s_live[1:] != s_live[:-1]])
            delay = b.delays(cuts.size)
            bounds = np.r_[cuts, live.size]
            for j in range(cuts.size):
                rows = live[bounds[j]:bounds[j + 1]]
                at = int(s_live[cuts[j]]) + int(delay[j])
                for chunk in self._chunks([item(i) for i in rows.tolist()]):
                    b.add(at, topic, chunk)
                b._items.extend((at, int(t)) for t in ts[rows].tolist())
        # outages
        for k, o in enumerate(outages):
            rows = np.flatnonzero(owner == k)
            heard = int(send[(send < o.start_ms)].max()) if (send < o.start_ms).any() else b.start
            will_at = o.start_ms + o.will_delay_ms
            online_at = o.end_ms + o.online_delay_ms
            b.gateway_status(self.name, heard, False, will_at)
            b.gateway_status(self.name, o.end_ms, True, online_at)
            truth = OutageTruth(b.site, self.name, o.start_ms, o.end_ms, o.buffered,
                                sorted(f"{b.site}/{d}" for d in self.devices), heard, will_at, online_at)
            b.m.outages.append(truth)
            if not o.buffered:
                truth.lost_readings = int(rows.size)
                continue
            truth.buffered_readings = int(rows.size)
            self._flush(o, truth, rows, item, ts, ser, topic, online_at)

    def _chunks(self, items: list[bytes]) -> list[bytes]:
        """Frames of at most ``max_items`` readings and ``max_bytes`` bytes."""
        out, cur, size = [], [], 14
        for it in items:
            if cur and (len(cur) >= self.max_items or size + len(it) + 1 > self.max_bytes):
                out.append(b'{"readings":[' + b",".join(cur) + b"]}")
                cur, size = [], 14
            cur.append(it)
            size += len(it) + 1
        if cur:
            out.append(b'{"readings":[' + b",".join(cur) + b"]}")
        return out

    def _flush(self, o: Outage, truth: OutageTruth, rows: np.ndarray, item, ts, ser, topic, online_at) -> None:
        b = self.b
        rng = b.rng
        # chronological chunks first (what the gateway's buffer holds), then the order it sends them in
        groups: list[list[int]] = []
        cur: list[int] = []
        size = 14
        for i in rows.tolist():
            n = len(item(i)) + 1
            if cur and (len(cur) >= self.max_items or size + n > self.max_bytes):
                groups.append(cur)
                cur, size = [], 14
            cur.append(i)
            size += n
        if cur:
            groups.append(cur)
        if o.flush_order == "reverse":
            groups = groups[::-1]
        elif o.flush_order == "shuffled":
            groups = [groups[j] for j in rng.permutation(len(groups)).tolist()]
        if o.shuffle_within:
            groups = [[g[j] for j in rng.permutation(len(g)).tolist()] for g in groups]
        frames = [b'{"readings":[' + b",".join(item(i) for i in g) + b"]}" for g in groups]
        sched = [online_at + o.flush_delay_ms + j * o.flush_gap_ms for j in range(len(frames))]
        dup: int | None = None
        if o.duplicate and frames:
            if o.duplicate == "hazard" and self.mark_ts is not None:
                d_, m_, t_ = self.mark_ts
                for j, g in enumerate(groups):
                    if any(int(ts[i]) == t_ and self.cols[ser[i]][1] == d_ and self.cols[ser[i]][2] == m_ for i in g):
                        dup = j
                        break
            if dup is None:
                dup = int(rng.integers(len(frames)))
        for j, (at, fr) in enumerate(zip(sched, frames)):
            b.add(at, topic, fr)
            b._items.extend((at, int(ts[i])) for i in groups[j])
        if dup is not None:  # a QoS 1 resend after a reconnect glitch: the same bytes, a little later
            at = sched[min(len(sched) - 1, dup + 3)] + o.flush_gap_ms // 2
            b.add(at, topic, frames[dup])
            b._items.extend((at, int(ts[i])) for i in groups[dup])
            truth.duplicated_frames = 1
            truth.duplicate_readings = len(groups[dup])
            b._dups += len(groups[dup])
            sched.append(at)
        truth.flush_frames = len(frames)
        truth.flush_order = o.flush_order
        truth.shuffled_within_frames = o.shuffle_within
        truth.flush_first_arrival_ms = min(sched) if sched else None
        truth.flush_last_arrival_ms = max(sched) if sched else None
        truth.max_frame_bytes = max((len(f) for f in frames), default=0)


# ================================================================================================ scenarios
def _local_midnights(start_ms: int, end_ms: int, tz: str) -> list[datetime]:
    from zoneinfo import ZoneInfo

    z = ZoneInfo(tz)
    day = datetime.fromtimestamp(start_ms / 1000, z).replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    while day.timestamp() * 1000 < end_ms:
        out.append(day)
        day = (day + timedelta(days=1, hours=2)).replace(hour=0)  # DST-safe step to the next midnight
    return out


def pit_cadence(b: _Build, *, points: int = 6, densify_point: int = 0, base_interval_s: float = 3600.0,
                dense_interval_s: float = 600.0, die_at_s: float | None = None, prefix: str = "jc",
                first_index: int = 1) -> None:
    """Pit monitoring points at 10 min–2 h cadences that change over time, published point by point."""
    span = b.end - b.start
    rng = b.rng
    specs = [  # (metrics, base cadence s)
        (["wall_top_horizontal", "wall_top_vertical"], base_interval_s),
        (["wall_top_horizontal", "wall_top_vertical"], base_interval_s),
        (["wall_top_horizontal"], base_interval_s),
        (["deep_horizontal"], 2 * base_interval_s),
        (["strut_force"], base_interval_s / 2),
        (["groundwater_level"], 2 * base_interval_s),
    ]
    die_dev = None
    for p in range(points):
        metrics, interval_s = specs[p % len(specs)]
        dev = f"{prefix}-{first_index + p:02d}"
        segments: list[tuple[int, int, float, str]] = []
        curve: Callable[[np.ndarray], np.ndarray] | None = None
        cadence = f"{interval_s / 60:g} min"
        if p == densify_point:
            # wall-top displacement creeps towards its alarm value (30 mm): the scheme densifies the readings
            # from 1 h to 10 min once it passes 60 % of the rise, and relaxes back after it has been stable.
            r0, r1 = b.start + int(0.25 * span), b.start + int(0.55 * span)
            rise = min(12.0, 1.2 * (r1 - r0) / D)  # ≤ 1.2 mm/d on average: no rate alarm, no cumulative alarm
            peak = 18.0
            base = peak - rise

            def curve(t, r0=r0, r1=r1, base=base, rise=rise):
                return base + rise * _smoothstep((t - r0) / (r1 - r0))

            fine = np.arange(r0, r1, 60 * S, dtype=np.int64)
            dense_from = int(fine[np.argmax(curve(fine) >= base + 0.6 * rise)]) if fine.size else r0
            relax_at = min(b.end, r1 + int(0.1 * span))
            segments = [(b.start, dense_from, interval_s, "normal"),
                        (dense_from, relax_at, dense_interval_s, "value above 60 % of its rise towards the alarm"),
                        (relax_at, b.end, interval_s, "stable again")]
            cadence = (f"{interval_s / 60:g} min → {dense_interval_s / 60:g} min → {interval_s / 60:g} min")
        elif p == 4 % max(points, 1) and p != densify_point:
            change = b.start + int(0.4 * span)  # excavation done: strut force read less often
            segments = [(b.start, change, interval_s, "excavation"),
                        (change, b.end, 4 * interval_s, "excavation finished")]
            cadence = f"{interval_s / 60:g} min → {4 * interval_s / 60:g} min"
        else:
            segments = [(b.start, b.end, interval_s, "normal")]
        times = []
        for s0, s1, iv, why in segments:
            if s1 <= s0:
                continue
            times.append(_grid(s0, s1, int(iv * S), rng, jitter_ms=20 * S))
            b.m.cadence_changes.append(CadenceChange(b.site, dev, int(s0), iv, why))
        ts = np.unique(np.concatenate(times)) if times else np.empty(0, np.int64)
        if die_at_s is not None and p == (3 % points):
            cut = b.start + int(die_at_s * S)
            last = ts[ts < cut]
            ts = last
            die_dev = dev
            if ts.size:
                b.m.silences.append(SilenceTruth(b.site, dev, "pit", int(ts[-1]), None, "point destroyed"))
        phase = float(rng.uniform(0, 2 * math.pi))
        arrival = _monotone_arrivals(ts, b.delays(ts.size))
        for metric in metrics:
            if curve is not None and metric == "wall_top_horizontal":
                v = curve(ts) + rng.normal(0, 0.08, ts.size)
            else:
                v = _steady(rng, "pit", metric, ts, phase)
            b.direct("pit", dev, metric, ts, v, arrival)
        b.m.devices.append(DeviceInfo(b.site, dev, "pit", metrics, None, cadence))
    if die_dev:
        b.m.params["died"] = die_dev


def crane_nightly(b: _Build, *, device: str = "tc-01", interval_s: float = 1.0, tz: str = "Asia/Shanghai",
                  hours: tuple[int, int] = (7, 19), rest_days: tuple[int, ...] = (6,),
                  announce_p: float = 0.5) -> None:
    """A crane on the working calendar: 1 Hz while working, off at night and on the rest day (Sunday)."""
    rng = b.rng
    days = _local_midnights(b.start, b.end, tz)
    windows = []
    for day in days:
        if day.weekday() in rest_days:
            continue
        on = int((day.replace(hour=hours[0]).timestamp()) * 1000) + int(rng.integers(0, 10 * MIN))
        off = int((day.replace(hour=hours[1]).timestamp()) * 1000) + int(rng.integers(-10 * MIN, 20 * MIN))
        on, off = max(on, b.start), min(off, b.end)
        if off - on > interval_s * S:
            windows.append((on, off))
    # announce on some nights, not on others: at least one of each when there are two nights or more
    announce = (rng.random(len(windows)) < announce_p).tolist()
    if len(windows) >= 2 and all(announce):
        announce[-1] = False
    if len(windows) >= 2 and not any(announce):
        announce[0] = True
    phase = float(rng.uniform(0, 2 * math.pi))
    all_ts, arrivals = [], []
    step = int(interval_s * S)
    prev_last: int | None = None
    for k, (on, off) in enumerate(windows):
        ts = _grid(on, off, step, rng)
        if not ts.size:
            continue
        arr = _monotone_arrivals(ts, b.delays(ts.size, median_ms=150, hi_ms=900))
        all_ts.append(ts)
        arrivals.append(arr)
        if prev_last is not None:
            b.m.off_windows[-1].end_ms = int(ts[0])
        if on > b.start:  # power on (a crane already working when the scenario starts says nothing)
            b.device_status("crane", device, int(ts[0]) - 2 * S, True, int(ts[0]) - 2 * S + 200)
        last = int(ts[-1])
        if off >= b.end:  # still working when the scenario ends: no power off
            break
        day = datetime.fromtimestamp(last / 1000, _tz(tz))
        nxt = (day + timedelta(days=1)).weekday()
        reason = "rest_day" if nxt in rest_days else "night"
        st_arrival = None
        if announce[k]:
            st_arrival = int(arr[-1]) + 800
            b.device_status("crane", device, last + 500, False, st_arrival)
        b.m.off_windows.append(OffWindow(b.site, device, "crane", last, None, bool(announce[k]), st_arrival, reason))
        prev_last = last
    if all_ts:
        ts = np.concatenate(all_ts)
        arr = np.concatenate(arrivals)
        sig = _crane_signals(rng, ts, phase)
        for metric, v in sig.items():
            b.direct("crane", device, metric, ts, v, arr)
    b.m.devices.append(DeviceInfo(b.site, device, "crane", list(FAMILIES["crane"]), None,
                                  f"{hours[0]:02d}:00–{hours[1]:02d}:00 {tz}, every {interval_s:g} s; "
                                  f"rest day {','.join(str(d) for d in rest_days)} (0=Mon)"))


def _tz(name: str):
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def _mixed_devices(n: int, first_index: int) -> list[tuple[str, str]]:
    """n devices of mixed families: cranes, switch boxes, chargers, formwork, pit points."""
    share = [("crane", 0.07), ("electrical", 0.27), ("battery", 0.2), ("formwork", 0.2), ("pit", 0.26)]
    counts = {f: max(1, int(round(n * s))) for f, s in share}
    while sum(counts.values()) > n:
        big = max(counts, key=lambda f: counts[f])
        counts[big] -= 1
    while sum(counts.values()) < n:
        counts["electrical"] += 1
    return [(f, f"{_PREFIX[f]}-{first_index + i:02d}") for f, c in counts.items() for i in range(c)]


def gateway_outage(b: _Build, *, gateway: str = "gw-01", devices: int = 30, fast_interval_s: float = 5.0,
                   crane_interval_s: float = 1.0, pit_interval_s: float = 30.0, frame_s: float = 5.0,
                   outage_at_s: float | None = None, outage_s: float = 600.0, buffered: bool = False,
                   will_delay_s: float = 90.0, first_index: int = 1) -> None:
    """A gateway with dozens of devices goes offline (last will) for ``outage_s`` and comes back."""
    span = b.end - b.start
    rng = b.rng
    gw = _Gateway(b, gateway, int(frame_s * S))
    for fam, dev in _mixed_devices(devices, first_index):
        iv = crane_interval_s if fam == "crane" else pit_interval_s if fam == "pit" else fast_interval_s
        ts = _grid(b.start, b.end, int(iv * S), rng)
        phase = float(rng.uniform(0, 2 * math.pi))
        metrics = _GW_METRICS[fam]
        sig = _crane_signals(rng, ts, phase) if fam == "crane" else None
        for metric in metrics:
            v = sig[metric] if sig is not None else _steady(rng, fam, metric, ts, phase)
            gw.series(fam, dev, metric, ts, v)
        b.m.devices.append(DeviceInfo(b.site, dev, fam, metrics, gateway, f"{iv:g} s, frames every {frame_s:g} s"))
    at = b.start + int((outage_at_s * S) if outage_at_s is not None else 0.4 * span)
    o = Outage(at, min(b.end, at + int(outage_s * S)), buffered=buffered, flush_order="chronological",
               shuffle_within=False, duplicate=None, will_delay_ms=int(will_delay_s * S))
    gw.emit([o])
    b.m.topology[f"{b.site}/{gateway}"] = sorted(f"{b.site}/{d}" for d in gw.devices)
    ot = b.m.outages[-1]
    b.cue(ot.will_arrival_ms, f"{gateway} offline (last will) with {len(gw.devices)} devices behind it"
          f"{' — buffering' if buffered else ', their readings are lost'}: expect ONE gateway fault, "
          f"not {len(gw.devices)} silent sensors")
    b.cue(ot.online_arrival_ms, f"{gateway} back online after {(o.end_ms - o.start_ms) / 1000:.0f} s: "
          "the gateway fault should clear")


def buffered_flush(b: _Build, *, gateway: str = "gw-01", crane: str = "tc-01", pit: str = "jc-01",
                   crane_interval_s: float = 1.0, fast_interval_s: float = 5.0, pit_interval_s: float = 600.0,
                   frame_s: float = 5.0, outage_at_s: float | None = None, outage_s: float | None = None,
                   overload_after_s: float | None = None, overload_s: float = 30.0, overload_pct: float = 115.0,
                   pit_rate: bool = True, pit_rate_mm_d: float = 6.0, flush_order: str = "reverse",
                   duplicate: str = "hazard", will_delay_s: float = 90.0, extra: str | None = "eb-01",
                   max_items: int = 500) -> None:
    """A gateway loses 4G for hours, buffers, and flushes on reconnect: out of order, one frame twice."""
    span = b.end - b.start
    rng = b.rng
    gw = _Gateway(b, gateway, int(frame_s * S), max_items=max_items)
    # ---- outage placement: a pit rate over 2 windows of 24 h needs 48 h of history before it can breach;
    # default on a 72 h run: 50 h .. 60 h, pit creep from 18 h, rate lines crossed at ~50.4 / 52.2 / 54 h
    o_start = b.start + int(outage_at_s * S if outage_at_s is not None else max(0.625 * span, span - 22 * H))
    o_end = min(b.end, o_start + int(outage_s * S if outage_s is not None else 10 * H))
    # ---- crane with the overload inside the outage
    ts = _grid(b.start, b.end, int(crane_interval_s * S), rng)
    sig = _crane_signals(rng, ts, float(rng.uniform(0, 2 * math.pi)))
    ov_at = o_start + int(overload_after_s * S if overload_after_s is not None else min(1 * H, (o_end - o_start) / 3))
    in_ov = (ts >= ov_at) & (ts < ov_at + int(overload_s * S))
    load = sig["load"]
    rated = CRANE_RATED_T * overload_pct / 100.0
    n_ov = int(in_ov.sum())
    bump = np.sin(np.linspace(0, math.pi, n_ov)) * 0.25 if n_ov else np.empty(0)
    load[in_ov] = rated + bump + rng.normal(0, 0.04, n_ov)
    sig["moment"][in_ov] = np.clip(18.0 + 8.6 * load[in_ov], 0, None)
    for metric, v in sig.items():
        gw.series("crane", crane, metric, ts, v)
    b.m.devices.append(DeviceInfo(b.site, crane, "crane", list(sig), gateway, f"{crane_interval_s:g} s"))
    if n_ov:
        ot, ov = ts[in_ov], load[in_ov]
        pk = int(np.argmax(ov))
        gw.mark_ts = (crane, "load", int(ot[pk]))
        b.m.hazards.append(HazardTruth(
            b.site, crane, "crane", "load", "crane.overload", int(ot[0]), int(ot[-1]), round(float(ov[pk]), 3),
            int(ot[pk]), _crossings(ot, np.round(ov, 3), CRANE_LINES), gateway, o_start <= ov_at < o_end,
            note=f"{overload_pct:g} % of rated {CRANE_RATED_T:g} t for {overload_s:g} s"))
    # ---- pit point creeping so that its rate crosses 3 mm/d (2 windows of 24 h) inside the outage
    pts = _grid(b.start, b.end, int(pit_interval_s * S), rng, jitter_ms=10 * S)
    pv = 8.0 + rng.normal(0, 0.05, pts.size)
    if pit_rate:
        target = o_start + int(0.4 * (o_end - o_start))  # red crossing wanted here
        red = PIT_RATE["lines"][2]  # rate r from `accel`: the 2nd window reaches the red line at accel + 24 h + 24 h * red / r
        accel = target - int(24 * H + 24 * H * red / pit_rate_mm_d)
        accel = max(b.start, accel)
        # the wall is propped when the crew gets there (the end of the outage): the creep stops, the cumulative
        # displacement stays below its 70 % line (21 mm) so the rate breach is the only pit hazard
        pv = pv + (np.clip(np.minimum(pts, o_end) - accel, 0, None) / D * pit_rate_mm_d)
        rate = pit_rate_series(pts, pv)
        hit = np.flatnonzero(rate >= PIT_RATE["lines"][0])
        if hit.size:
            peak_i = int(np.nanargmax(np.where(np.isnan(rate), -np.inf, rate)))
            b.m.hazards.append(HazardTruth(
                b.site, pit, "pit", "wall_top_horizontal", "pit.rate", int(pts[hit[0]]), int(pts[hit[-1]]),
                round(float(rate[peak_i]), 3), int(pts[peak_i]),
                _crossings(pts, np.nan_to_num(rate, nan=-1.0), PIT_RATE["lines"]), gateway,
                bool(o_start <= int(pts[hit[0]]) < o_end),
                note=f"wall-top creeps {pit_rate_mm_d:g} mm/d from {accel}; rate as detectors/rate.py computes it "
                     "(24 h window, 2 consecutive, lines 2.1/2.55/3 mm/d)"))
    gw.series("pit", pit, "wall_top_horizontal", pts, pv)
    b.m.devices.append(DeviceInfo(b.site, pit, "pit", ["wall_top_horizontal"], gateway, f"{pit_interval_s / 60:g} min"))
    if extra:
        ets = _grid(b.start, b.end, int(fast_interval_s * S), rng)
        ph = float(rng.uniform(0, 2 * math.pi))
        for metric in _GW_METRICS["electrical"]:
            gw.series("electrical", extra, metric, ets, _steady(rng, "electrical", metric, ets, ph))
        b.m.devices.append(DeviceInfo(b.site, extra, "electrical", _GW_METRICS["electrical"], gateway,
                                      f"{fast_interval_s:g} s"))
    o = Outage(o_start, o_end, buffered=True, flush_order=flush_order, shuffle_within=True, duplicate=duplicate,
               will_delay_ms=int(will_delay_s * S))
    gw.emit([o])
    b.m.topology[f"{b.site}/{gateway}"] = sorted(f"{b.site}/{d}" for d in gw.devices)
    out = b.m.outages[-1]
    for h in b.m.hazards:
        if h.gateway == gateway and h.buffered:
            h.first_arrival_ms = out.flush_first_arrival_ms
    b.cue(out.will_arrival_ms, f"{gateway} lost 4G (last will) — it buffers; {', '.join(gw.devices)} go quiet")
    for h in b.m.hazards:
        if h.gateway == gateway and h.buffered:
            b.cue(h.start_ms, f"{h.device} {h.kind} happens now ({h.note}) inside the outage: nothing can see it yet")
    b.cue(out.online_arrival_ms, f"{gateway} back: flushing {out.buffered_readings} buffered readings in "
          f"{out.flush_frames} frames ({out.flush_order}, shuffled inside, one frame twice) → expect the hazard "
          "raised back-dated to when it happened")


# ================================================================================================ registry
@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    description: str
    default_duration_ms: int
    build: Callable[..., None]


def _field_mix(b: _Build, *, components: tuple[str, ...] = ("pit-cadence", "crane-nightly", "gateway-outage",
                                                            "buffered-flush"),
               crane_interval_s: float = 1.0, **kw) -> None:
    """All of the above on one site, with distinct device names and gateways."""
    span = b.end - b.start
    if "pit-cadence" in components:
        pit_cadence(b, points=kw.pop("pit_points", 6), prefix="jc", first_index=1,
                    die_at_s=kw.pop("die_at_s", None))
    if "crane-nightly" in components:
        crane_nightly(b, device="tc-01", interval_s=crane_interval_s)
    if "gateway-outage" in components:
        gateway_outage(b, gateway="gw-01", devices=kw.pop("gateway_devices", 30), first_index=31,
                       crane_interval_s=kw.pop("gw_crane_interval_s", max(crane_interval_s, 10.0)),
                       fast_interval_s=kw.pop("fast_interval_s", 30.0), pit_interval_s=kw.pop("pit_interval_s", 600.0),
                       frame_s=kw.pop("frame_s", 10.0),
                       outage_at_s=kw.pop("gw_outage_at_s", 0.3 * span / S), outage_s=kw.pop("gw_outage_s", 600.0),
                       will_delay_s=kw.pop("will_delay_s", 90.0))
    if "buffered-flush" in components:
        buffered_flush(b, gateway="gw-02", crane="tc-71", pit="jc-71", extra="eb-71",
                       crane_interval_s=crane_interval_s, frame_s=kw.pop("bf_frame_s", 5.0),
                       fast_interval_s=kw.pop("bf_fast_interval_s", 5.0),
                       outage_at_s=kw.pop("bf_outage_at_s", None), outage_s=kw.pop("bf_outage_s", None),
                       overload_after_s=kw.pop("overload_after_s", None), overload_s=kw.pop("overload_s", 30.0),
                       pit_rate=kw.pop("pit_rate", True),
                       will_delay_s=kw.pop("bf_will_delay_s", 90.0), max_items=kw.pop("bf_max_items", 500))
    if kw:
        raise TypeError(f"field-mix: unknown parameters {sorted(kw)}")


SCENARIOS: dict[str, ScenarioSpec] = {s.name: s for s in (
    ScenarioSpec("pit-cadence", "pit points at 10 min–2 h cadences that change (one densifies 1 h → 10 min near "
                 "its alarm value and relaxes back) over 30 days; no genuine silence unless die_at_s", 30 * D,
                 pit_cadence),
    ScenarioSpec("crane-nightly", "a crane at 1 Hz 07:00–19:00 Asia/Shanghai, off at night (power-off announced on "
                 "some nights only) and on Sundays, for 7 days; no genuine silence", 7 * D, crane_nightly),
    ScenarioSpec("gateway-outage", "gateway gw-01 with 30 mixed devices goes offline (last will) for 10 min and "
                 "comes back; readings lost (buffered=True: flushed in order)", 2 * H, gateway_outage),
    ScenarioSpec("buffered-flush", "gateway loses 4G for 10 h; a 115 % crane overload and a pit-rate breach happen "
                 "inside; flushed in reverse, frames shuffled, one frame twice, between live frames (3 days)", 72 * H,
                 buffered_flush),
    ScenarioSpec("field-mix", "all of the above on one site (pit points, nightly crane, gw-01 outage, gw-02 "
                 "buffered flush), for 3 days", 72 * H, _field_mix),
)}


def scenario_names() -> list[str]:
    return list(SCENARIOS)


def describe(name: str) -> str:
    return SCENARIOS[name].description


def generate(name: str, *, start_ms: int, duration_ms: int | None = None, seed: int = 7, site: str = "fd-0001",
             late_after_ms: int = 60_000, **params) -> FieldStream:
    """Generate scenario ``name`` from ``start_ms`` (event time, epoch ms) for ``duration_ms`` (its default when
    None). Same arguments, same seed → byte-identical events. ``params`` go to the scenario (see each builder's
    keyword arguments, e.g. ``interval_s=10`` for a crane at one reading per 10 s)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown field scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    spec = SCENARIOS[name]
    dur = int(duration_ms if duration_ms is not None else spec.default_duration_ms)
    b = _Build(name, seed, int(start_ms), int(start_ms) + dur, site, params, late_after_ms)
    spec.build(b, **params)
    return b.finish()


def demo_stream(start_ms: int, seed: int = 7, site: str = "fd-0001") -> FieldStream:
    """``field-mix`` compressed into a few live minutes for ``sitewatch demo``: gw-02 loses 4G at 30 s for 60 s
    with a crane overload inside (flushed back at ~90 s → a back-dated alarm), and gw-01 with 30 devices goes
    offline at 150 s for 60 s (one gateway fault). Cadences fit the default deadmen; no pit-rate (needs days)."""
    return generate("field-mix", start_ms=start_ms, duration_ms=15 * MIN, seed=seed, site=site,
                    components=("gateway-outage", "buffered-flush"), crane_interval_s=1.0,
                    gw_crane_interval_s=1.0, fast_interval_s=2.0, pit_interval_s=20.0, frame_s=2.0,
                    gw_outage_at_s=150.0, gw_outage_s=60.0, will_delay_s=10.0,
                    bf_frame_s=2.0, bf_fast_interval_s=2.0, bf_outage_at_s=30.0, bf_outage_s=60.0,
                    overload_after_s=20.0, pit_rate=False, bf_will_delay_s=10.0, bf_max_items=40)
