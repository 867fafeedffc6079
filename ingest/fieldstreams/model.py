"""What a generated field stream is: arrival events plus the ground truth of what really happened.

An *arrival event* is one MQTT message as the broker would receive it: ``(arrival_ms, topic, payload)``. The
payload carries the *measurement* time (``ts``); ``arrival_ms`` is when it reaches the broker. The two differ by
network delay, and by hours when a gateway buffered through an outage and flushed later. Everything a test or a
backtest needs to judge the pipeline is in the :class:`Manifest`: hazards (window, peak, level crossings), the
silences that are genuine (and only those), which devices sit behind which gateway, outages and flushes, the
nights a crane was switched off and whether it said so.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, NamedTuple


class Arrival(NamedTuple):
    """One MQTT message as it reaches the broker."""

    arrival_ms: int
    topic: str
    payload: bytes


@dataclass
class DeviceInfo:
    site: str
    device: str
    family: str
    metrics: list[str]
    gateway: str | None  # None: the device publishes its own single-reading topics
    cadence: str  # human-readable: "1 s", "1 h → 10 min → 1 h", "07:00–19:00 Asia/Shanghai, 1 s"


@dataclass
class HazardTruth:
    """A hazard that really happened, in measurement time."""

    site: str
    device: str
    family: str
    metric: str
    kind: str  # the detector kind it should raise: "crane.overload", "pit.rate", ...
    start_ms: int  # first reading at or above the lowest level line
    end_ms: int  # last reading of the episode
    peak_value: float
    peak_ts: int
    levels_ms: dict[str, int] = field(default_factory=dict)  # level -> first reading at or above its line
    gateway: str | None = None
    buffered: bool = False  # inside a buffered outage: arrives late, must be raised back-dated
    first_arrival_ms: int | None = None  # when the first reading of the episode reached the broker
    note: str = ""


@dataclass
class SilenceTruth:
    """A genuine silence: a device that really stopped (not a night, not a gateway outage, not a cadence)."""

    site: str
    device: str
    family: str
    start_ms: int  # ts of its last reading
    end_ms: int | None  # first reading after it, or None: never came back
    reason: str


@dataclass
class OutageTruth:
    """A gateway offline window (MQTT last will → online status), and what happened to its readings."""

    site: str
    gateway: str
    start_ms: int  # last frame sent before the link dropped
    end_ms: int  # link back
    buffered: bool
    devices: list[str]
    will_ts: int  # ts inside the last-will payload
    will_arrival_ms: int  # the broker publishes the will after the keepalive expires
    online_arrival_ms: int
    lost_readings: int = 0  # not buffered: these never arrive
    buffered_readings: int = 0
    flush_frames: int = 0  # frames of the flush, not counting the duplicate
    flush_order: str = ""  # "reverse" | "shuffled" | "chronological"
    shuffled_within_frames: bool = False
    duplicated_frames: int = 0  # frames of the flush sent twice
    duplicate_readings: int = 0
    flush_first_arrival_ms: int | None = None
    flush_last_arrival_ms: int | None = None
    max_frame_bytes: int = 0


@dataclass
class OffWindow:
    """A device that is off by design (crane at night or on the rest day): not a silence, not a fault."""

    site: str
    device: str
    family: str
    start_ms: int  # ts of its last reading before switching off
    end_ms: int | None  # ts of its first reading after power on (None: still off at the end)
    announced: bool  # a power-off device status message was sent
    status_arrival_ms: int | None = None
    reason: str = "night"  # "night" | "rest_day"


@dataclass
class CadenceChange:
    site: str
    device: str
    at_ms: int
    interval_s: float
    why: str = ""


@dataclass
class Cue:
    """A moment worth announcing to a watcher (the demo and ``sitewatch simulate`` print these)."""

    arrival_ms: int
    text: str


@dataclass
class Manifest:
    scenario: str
    seed: int
    start_ms: int
    end_ms: int
    sites: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    devices: list[DeviceInfo] = field(default_factory=list)
    topology: dict[str, list[str]] = field(default_factory=dict)  # "site/gateway" -> ["site/device", ...]
    hazards: list[HazardTruth] = field(default_factory=list)
    silences: list[SilenceTruth] = field(default_factory=list)  # genuine silences only
    outages: list[OutageTruth] = field(default_factory=list)
    off_windows: list[OffWindow] = field(default_factory=list)
    cadence_changes: list[CadenceChange] = field(default_factory=list)
    cues: list[Cue] = field(default_factory=list)
    readings: int = 0  # readings generated (measurement side)
    delivered_readings: int = 0  # reading items in the events, duplicates included
    messages: int = 0
    late_readings: int = 0  # reading items that arrive more than ``late_after_ms`` after their ts
    duplicate_readings: int = 0
    max_payload_bytes: int = 0
    late_after_ms: int = 60_000

    def gateway_of(self, site: str, device: str) -> str | None:
        key = f"{site}/{device}"
        for gw, devs in self.topology.items():
            if key in devs:
                return gw.split("/", 1)[1]
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


@dataclass
class FieldStream:
    """A generated scenario: arrival events in arrival order, and its ground truth."""

    manifest: Manifest
    events: list[Arrival]

    def __iter__(self) -> Iterator[Arrival]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    @property
    def first_arrival_ms(self) -> int | None:
        return self.events[0].arrival_ms if self.events else None

    @property
    def last_arrival_ms(self) -> int | None:
        return self.events[-1].arrival_ms if self.events else None

    def write_capture(self, path) -> None:
        """JSON lines ``{"rx", "topic", "payload"}`` (what ``sitewatch backtest --capture`` reads), plus the
        manifest next to it as ``<path>.manifest.json``."""
        write_capture(path, self.events)
        with open(f"{path}.manifest.json", "w", encoding="utf-8") as fh:
            fh.write(self.manifest.to_json())


def write_capture(path, events) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for a, topic, payload in events:
            fh.write(json.dumps({"rx": int(a), "topic": topic, "payload": payload.decode("utf-8")},
                                separators=(",", ":")))
            fh.write("\n")
            n += 1
    return n


def read_capture(path) -> Iterator[Arrival]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                d = json.loads(line)
                yield Arrival(int(d["rx"]), d["topic"], d["payload"].encode("utf-8"))
