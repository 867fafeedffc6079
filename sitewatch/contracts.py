"""Message contracts: the one place that says what crosses a process boundary.

Every room (ingest, streams, detectors, backlog, alerts) imports its topic names, payload shapes and
validation from here, so a change of contract is one diff and one bump of ``SCHEMA_VERSION``.

MQTT (sensor side)
    ``sw/{site}/{family}/{device}/{metric}``       one reading  ``{"ts": ms|RFC3339, "value": n, "unit": "t"}``
    ``sw/{site}/gateway/{gateway}/readings``       gateway frame ``{"readings": [{"family","device","metric",
                                                   "ts","value","unit"}, ...]}``
    ``sw/{site}/gateway/{gateway}/status``         gateway status / last-will ``{"ts", "online": bool, ...}``
    ``sw/{site}/{family}/{device}/status``         device power announcement / last-will ``{"ts", "online": bool,
                                                   "reason": "power_off"}``: a device that says it is off is
                                                   "off", not silent, until its next reading

Kafka (inside)
    ``sw.raw``          bridge envelopes: MQTT messages packed per key, original bytes kept
    ``sw.readings``     validated readings packed per device (key ``site/device``), and gateway status records
    ``sw.readings.dlq`` rejected input with the reason and the original bytes
    ``sw.hazards``      detector findings (key ``site/device``)
    ``sw.alerts``       notifications to deliver (key = ticket dedup key)
    ``sw.config``       rule configuration updates

Validation (docs/validation.md) rejects only what cannot be a reading, with a reason from ``REJECT_REASONS``. Any
finite value passes however far outside its metric's physical range: a broken sensor must be reported (the
detectors raise ``fault.out_of_range`` against the rules' per-site ranges), not parked in the DLQ where nobody is
paged. Unknown extra fields are ignored: gateway firmware adds fields before the contract knows them.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Iterable

import msgspec
import numpy as np

SCHEMA_VERSION = 2  # 2: sw.readings records carry many devices (see pack_readings); v1 records still read

# ---------------------------------------------------------------------------------------------- topics
TOPIC_RAW = "sw.raw"
TOPIC_READINGS = "sw.readings"
TOPIC_DLQ = "sw.readings.dlq"
TOPIC_HAZARDS = "sw.hazards"
TOPIC_ALERTS = "sw.alerts"
TOPIC_CONFIG = "sw.config"
ALL_TOPICS = (TOPIC_RAW, TOPIC_READINGS, TOPIC_DLQ, TOPIC_HAZARDS, TOPIC_ALERTS, TOPIC_CONFIG)

MQTT_ROOT = "sw"
MQTT_SUBSCRIPTION = "sw/#"
GATEWAY = "gateway"  # reserved word in the family position of a topic

# ---------------------------------------------------------------------------------------------- limits
MAX_PAYLOAD_BYTES = 64 * 1024       # one MQTT message; a gateway frame of ~500 readings fits
MAX_RECORD_READINGS = 20_000  # per sw.readings record (~1 MB packed): far below the producer's 4 MB request limit
MAX_FUTURE_SKEW_MS = 5 * 60 * 1000  # a reading stamped further ahead than this is a clock fault
MIN_TS_MS = 946_684_800_000         # 2000-01-01: anything older is an unset RTC, not history
# Allowed lateness: a gateway that buffered through a weekend 4G outage flushes readings up to ~3 days old;
# they are evaluated in event time. Anything older goes to the DLQ as ``too_late`` (rules: lateness.allowed).
DEFAULT_ALLOWED_LATENESS_MS = 72 * 3600 * 1000
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")

# ---------------------------------------------------------------------------------------------- families
# family -> metric -> canonical unit. Names are what appears in MQTT topics and rules.
FAMILIES: dict[str, dict[str, str]] = {
    "crane": {"load": "t", "moment": "%", "wind": "m/s", "tilt": "deg"},
    "formwork": {"settlement": "mm", "tilt": "deg", "axial_force": "kN", "horizontal_displacement": "mm"},
    "pit": {
        "wall_top_horizontal": "mm",
        "wall_top_vertical": "mm",
        "deep_horizontal": "mm",
        "strut_force": "kN",
        "groundwater_level": "m",
        "surface_settlement": "mm",
    },
    "electrical": {
        "current_a": "A",
        "current_b": "A",
        "current_c": "A",
        "leakage": "mA",
        "terminal_temp": "degC",
    },
    "battery": {"pack_temp": "degC", "cell_temp": "degC", "charge_current": "A", "smoke": "ppm", "co": "ppm"},
}

# (given unit, canonical unit) -> factor; spelled-out aliases sensors really send.
UNIT_CONVERSIONS: dict[tuple[str, str], float] = {
    ("kg", "t"): 0.001,
    ("kN", "t"): 1 / 9.80665,
    ("cm", "mm"): 10.0,
    ("m", "mm"): 1000.0,
    ("A", "mA"): 1000.0,
    ("mA", "A"): 0.001,
    ("N", "kN"): 0.001,
    ("cm", "m"): 0.01,
    ("mm", "m"): 0.001,
}
UNIT_ALIASES = {"°C": "degC", "℃": "degC", "C": "degC", "°": "deg", "pct": "%", "m/s2": "m/s2"}


class InvalidReading(ValueError):
    """A payload that breaks the contract. ``reason`` is a short machine-groupable code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# Every reason a DLQ record can carry (docs/validation.md says what each means). Only what cannot be a reading
# is rejected: a finite value outside a metric's physical range is accepted, and the detectors report the sensor
# (``fault.out_of_range``); unknown extra fields in a reading, a frame or a frame item are ignored.
REJECT_REASONS = frozenset({
    "oversized", "bad_topic", "bad_identifier", "bad_json", "bad_schema", "unknown_family", "unknown_metric",
    "missing_field", "missing_unit", "wrong_unit", "non_numeric_value", "non_finite_value", "bad_timestamp",
    "future_timestamp", "too_late", "bad_envelope",
})


@dataclass(frozen=True, slots=True)
class Reading:
    site: str
    family: str
    device: str
    metric: str
    ts: int  # epoch milliseconds, UTC
    value: float  # in the canonical unit of FAMILIES[family][metric]
    gateway: str | None = None  # the gateway whose frame carried it: topology is learned from this

    @property
    def key(self) -> str:
        return device_key(self.site, self.device)


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    site: str
    gateway: str
    ts: int
    online: bool
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A device announcing power off/on (status message or MQTT last will): off is not a fault."""

    site: str
    family: str
    device: str
    ts: int
    online: bool
    reason: str = ""


def device_key(site: str, device: str) -> str:
    """Kafka key: one device's readings stay ordered in one partition."""
    return f"{site}/{device}"


@functools.lru_cache(maxsize=1 << 20)  # murmur2 is pure Python; the bridge and validate ask for the same keys
def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) picks for a key: how ``sw.readings`` records, the
    device-state table and any other producer agree on where a device lives."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def reading_topic(site: str, family: str, device: str, metric: str) -> str:
    return f"{MQTT_ROOT}/{site}/{family}/{device}/{metric}"


def gateway_topic(site: str, gateway: str, kind: str = "readings") -> str:
    return f"{MQTT_ROOT}/{site}/{GATEWAY}/{gateway}/{kind}"


def kafka_key_for_mqtt_topic(topic: str) -> str:
    """The bridge keys by ``site/device`` (or ``site/gateway`` for frames) without parsing payloads."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[0] == MQTT_ROOT:
        return device_key(parts[1], parts[3])
    return topic  # malformed topic: keep it together, validation will reject it


# ---------------------------------------------------------------------------------------------- bridge envelope
def pack_raw(messages: Iterable[tuple[str, bytes]], received_ms: int | None = None) -> bytes:
    """Envelope for ``sw.raw``: several MQTT messages under one key, original bytes preserved."""
    out = []
    for topic, payload in messages:
        try:
            out.append({"t": topic, "p": payload.decode("utf-8")})
        except UnicodeDecodeError:
            out.append({"t": topic, "b64": base64.b64encode(payload).decode("ascii")})
    rx = received_ms if received_ms is not None else now_ms()
    return json.dumps({"v": SCHEMA_VERSION, "rx": rx, "msgs": out}, separators=(",", ":")).encode()


def unpack_raw(data: bytes) -> tuple[int, list[tuple[str, bytes]]]:
    """Raises (ValueError, KeyError, TypeError, …) on anything no bridge could have written; the worker keeps such
    bytes as ``bad_envelope``."""
    env = json.loads(data)
    msgs = []
    for m in env["msgs"]:
        payload = m["p"].encode("utf-8") if "p" in m else base64.b64decode(m["b64"])
        if not isinstance(m["t"], str):
            raise TypeError(f"topic {m['t']!r} is not a string")
        m["t"].encode("utf-8")  # lone surrogates: no MQTT topic, and no Kafka key for the DLQ record
        msgs.append((m["t"], payload))
    return int(env.get("rx", 0)), msgs


# ---------------------------------------------------------------------------------------------- validation
def now_ms() -> int:
    return time.time_ns() // 1_000_000


_TS_LIMIT = 2 ** 63


def parse_ts(raw: Any) -> int:
    if isinstance(raw, bool):
        raise InvalidReading("bad_timestamp", f"ts must be epoch ms or RFC 3339, got {raw!r}")
    if isinstance(raw, (int, float)):
        if isinstance(raw, float) and not math.isfinite(raw):
            raise InvalidReading("bad_timestamp", f"ts is not finite: {raw!r}")
        if not -_TS_LIMIT < raw < _TS_LIMIT:  # an int past int64 (or a float that becomes one) would crash later
            raise InvalidReading("bad_timestamp", f"ts is out of range for epoch ms: {raw!r:.40}")
        return int(raw)
    if isinstance(raw, str):
        try:
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidReading("bad_timestamp", f"ts is not RFC 3339: {raw!r}") from None
        if dt.tzinfo is None:
            raise InvalidReading("bad_timestamp", f"ts has no time zone: {raw!r}")
        return int(dt.timestamp() * 1000)
    raise InvalidReading("bad_timestamp", f"ts must be epoch ms or RFC 3339, got {type(raw).__name__}")


def check_id(kind: str, value: Any) -> str:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise InvalidReading("bad_identifier", f"{kind} {value!r} must match {_ID_RE.pattern}")
    return value


def _canonical_value(family: str, metric: str, value: Any, unit: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidReading("non_numeric_value", f"value must be a number, got {value!r}")
    try:
        v = float(value)
    except OverflowError:  # an integer beyond any float: as unusable as Infinity, and must not crash a worker
        raise InvalidReading("non_finite_value", f"value {value} is out of range") from None
    if not math.isfinite(v):
        raise InvalidReading("non_finite_value", f"value is {value!r}")
    want = FAMILIES[family][metric]
    if unit is None:
        raise InvalidReading("missing_unit", f"{family}.{metric} needs unit {want!r}")
    if not isinstance(unit, str):
        raise InvalidReading("wrong_unit", f"unit must be a string, got {unit!r}")
    unit = UNIT_ALIASES.get(unit, unit)
    if unit == want:
        return v
    factor = UNIT_CONVERSIONS.get((unit, want))
    if factor is None:
        raise InvalidReading("wrong_unit", f"{family}.{metric} is measured in {want!r}, got {unit!r}")
    if not math.isfinite(v * factor):  # 1e308 m is no number of mm
        raise InvalidReading("non_finite_value", f"{value!r} {unit} is beyond any float in {want!r}")
    return v * factor


def _check_family_metric(family: Any, metric: Any) -> None:
    if not isinstance(family, str) or family not in FAMILIES:  # a list or object would not even hash
        raise InvalidReading("unknown_family", f"{family!r} is not one of {sorted(FAMILIES)}")
    if not isinstance(metric, str) or metric not in FAMILIES[family]:
        raise InvalidReading("unknown_metric", f"{family} has no metric {metric!r}; known: {sorted(FAMILIES[family])}")


def _reading(site: str, family: Any, device: Any, metric: Any, body: dict, now: int,
             gateway: str | None = None, max_age_ms: int = DEFAULT_ALLOWED_LATENESS_MS) -> Reading:
    _check_family_metric(family, metric)
    check_id("device", device)
    if "ts" not in body:
        raise InvalidReading("missing_field", "reading has no 'ts'")
    if "value" not in body:
        raise InvalidReading("missing_field", "reading has no 'value'")
    ts = parse_ts(body["ts"])
    if ts > now + MAX_FUTURE_SKEW_MS:
        raise InvalidReading("future_timestamp", f"ts {ts} is {(ts - now) / 1000:.0f} s ahead of the clock")
    if ts < MIN_TS_MS:
        raise InvalidReading("bad_timestamp", f"ts {ts} is before 2000-01-01 (unset clock?)")
    if ts < now - max_age_ms:
        raise InvalidReading("too_late", f"ts {ts} is {(now - ts) / 3_600_000:.1f} h old, beyond the allowed "
                                         f"lateness of {max_age_ms / 3_600_000:g} h")
    value = _canonical_value(family, metric, body["value"], body.get("unit"))
    return Reading(site, family, device, metric, ts, value, gateway)


@dataclass
class Rejected:
    """One rejected input, ready for the DLQ."""

    reason: str
    detail: str
    topic: str
    payload: bytes
    index: int | None = None  # position inside a gateway frame, when only one item was bad

    def to_dlq(self, received_ms: int) -> bytes:
        return json.dumps(
            {
                "v": SCHEMA_VERSION,
                "reason": self.reason,
                "detail": self.detail,
                "topic": self.topic,
                "index": self.index,
                "received_ms": received_ms,
                "rejected_ms": now_ms(),
                "payload_b64": base64.b64encode(self.payload).decode("ascii"),
            },
            separators=(",", ":"),
        ).encode()


@dataclass
class Validated:
    readings: list[Reading] = field(default_factory=list)
    statuses: list[GatewayStatus] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    device_statuses: list[DeviceStatus] = field(default_factory=list)


def validate_message(topic: str, payload: bytes, now: int | None = None, out: Validated | None = None,
                     max_age_ms: int = DEFAULT_ALLOWED_LATENESS_MS) -> Validated:
    """Turn one MQTT message into readings, or rejections with a reason. Never raises on bad input.

    A gateway frame with one bad item keeps its good items: only the bad one goes to the DLQ.
    """
    out = out if out is not None else Validated()
    now = now if now is not None else now_ms()

    def reject(exc: InvalidReading, index: int | None = None) -> Validated:
        out.rejected.append(Rejected(exc.reason, exc.detail, topic, payload, index))
        return out

    try:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise InvalidReading("oversized", f"{len(payload)} bytes > limit {MAX_PAYLOAD_BYTES}")
        parts = topic.split("/")
        if len(parts) != 5 or parts[0] != MQTT_ROOT:
            raise InvalidReading("bad_topic", f"{topic!r} is not sw/{{site}}/{{family}}/{{device}}/{{metric}}")
        _, site, family, device, metric = parts
        check_id("site", site)
        try:
            body = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InvalidReading("bad_json", str(e)) from None
        except RecursionError:  # "[[[[…" nested deeper than the parser goes: fits in 64 KiB
            raise InvalidReading("bad_json", "nested too deep") from None
        if not isinstance(body, dict):
            raise InvalidReading("bad_schema", f"payload must be a JSON object, got {type(body).__name__}")
        if family == GATEWAY:
            check_id("gateway", device)
            if metric == "status":
                online, ts = _status_fields(body, now)
                detail = {k: v for k, v in body.items() if k not in ("ts", "online")}
                if not _plain_json(detail):
                    raise InvalidReading("bad_schema", "status fields must be plain JSON: finite numbers, UTF-8 "
                                                       f"text, nested at most {_MAX_DETAIL_DEPTH} deep")
                out.statuses.append(GatewayStatus(site, device, ts, online, detail))
                return out
            if metric != "readings":
                raise InvalidReading("bad_topic", f"gateway topics end in /readings or /status, got {metric!r}")
            items = body.get("readings")
            if not isinstance(items, list):
                raise InvalidReading("bad_schema", "gateway frame needs a 'readings' list")
            for i, item in enumerate(items):
                try:
                    if not isinstance(item, dict):
                        raise InvalidReading("bad_schema", f"readings[{i}] is not an object")
                    out.readings.append(_reading(site, item.get("family"), item.get("device"), item.get("metric"),
                                                 item, now, device, max_age_ms))
                except InvalidReading as e:
                    reject(e, i)
            return out
        if metric == "status":
            if family not in FAMILIES:
                raise InvalidReading("unknown_family", f"{family!r} is not one of {sorted(FAMILIES)}")
            check_id("device", device)
            online, ts = _status_fields(body, now)
            reason = body.get("reason", "")
            if not isinstance(reason, str) or len(reason) > 64 or not _plain_json(reason):
                raise InvalidReading("bad_schema", "status 'reason' must be a short string")
            out.device_statuses.append(DeviceStatus(site, family, device, ts, online, reason))
            return out
        out.readings.append(_reading(site, family, device, metric, body, now, None, max_age_ms))
        return out
    except InvalidReading as e:
        return reject(e)


def _status_fields(body: dict, now: int) -> tuple[bool, int]:
    online = body.get("online", True)
    if not isinstance(online, bool):
        raise InvalidReading("bad_schema", "status 'online' must be true/false")
    ts = parse_ts(body["ts"]) if "ts" in body else now
    if ts > now + MAX_FUTURE_SKEW_MS:
        raise InvalidReading("future_timestamp", f"ts {ts} is {(ts - now) / 1000:.0f} s ahead of the clock")
    if ts < MIN_TS_MS:  # as for readings; and -1e30 ms would be no int64 for the detect stage
        raise InvalidReading("bad_timestamp", f"ts {ts} is before 2000-01-01 (unset clock?)")
    return online, ts


_MAX_DETAIL_DEPTH = 16


def _plain_json(x: Any, depth: int = 0) -> bool:
    """Whether a status field survives ``sw.readings``: strict JSON (no NaN/Infinity, no lone surrogates) that the
    detect stage's schema decoder reads back, not nested deep enough to reach a recursion limit there."""
    if depth > _MAX_DETAIL_DEPTH:
        return False
    if isinstance(x, float):
        return math.isfinite(x)
    if isinstance(x, str):
        try:
            x.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(x, dict):
        return all(_plain_json(k, depth + 1) and _plain_json(v, depth + 1) for k, v in x.items())
    if isinstance(x, list):
        return all(_plain_json(v, depth + 1) for v in x)
    return True


# ---------------------------------------------------------------------------------------------- sw.readings
def pack_readings(readings: list[Reading], received_ms: int) -> bytes:
    """One ``sw.readings`` record for readings of any number of devices that share a partition.

    Columns, not objects, and the (site, device, family) triple dictionary-encoded: ``devs`` lists each device
    once and ``d`` points every row at its device. Per-record overhead in Kafka and Faust is what limits a
    worker (DESIGN §4), so the validate stage sends one record per partition per batch, not one per device.
    """
    devs: dict[tuple, int] = {}
    d = [devs.setdefault((r.site, r.device, r.family, r.gateway) if r.gateway else (r.site, r.device, r.family),
                         len(devs)) for r in readings]
    return json.dumps(
        {
            "v": SCHEMA_VERSION,
            "type": "readings",
            "rx": received_ms,
            "devs": [list(k) for k in devs],
            "d": d,
            "m": [r.metric for r in readings],
            "ts": [r.ts for r in readings],
            "val": [r.value for r in readings],
        },
        separators=(",", ":"),
    ).encode()


def pack_status(status: GatewayStatus) -> bytes:
    return json.dumps(
        {
            "v": SCHEMA_VERSION,
            "type": "status",
            "site": status.site,
            "gateway": status.gateway,
            "ts": status.ts,
            "online": status.online,
            "detail": status.detail,
        },
        separators=(",", ":"),
    ).encode()


def pack_device_status(st: DeviceStatus) -> bytes:
    return json.dumps({"v": SCHEMA_VERSION, "type": "dstatus", "site": st.site, "family": st.family,
                       "device": st.device, "ts": st.ts, "online": st.online, "reason": st.reason},
                      separators=(",", ":")).encode()


def unpack_readings(record: dict) -> list[Reading]:
    """Readings of a ``sw.readings`` record (v2 multi-device; v1 single-device records are still read)."""
    if "devs" not in record:  # v1
        site, device, family = record["site"], record["device"], record["family"]
        return [Reading(site, family, device, m, t, v) for m, t, v in zip(record["m"], record["ts"], record["val"])]
    devs = record["devs"]
    return [
        Reading(devs[i][0], devs[i][2], devs[i][1], m, t, v, devs[i][3] if len(devs[i]) > 3 else None)
        for i, m, t, v in zip(record["d"], record["m"], record["ts"], record["val"])
    ]


# ---------------------------------------------------------------------------------------------- batch hot path
# The worker validates whole batches of bridge envelopes. ``validate_message`` above is the reference: it builds a
# ``Reading`` per reading and gives every rejection its reason. The batch path below decodes with schemas
# (msgspec: types checked in C while parsing) straight into columns, and checks what the schema cannot (family,
# metric, unit, identifiers, time bounds) once per distinct topic / device / (family, metric, unit) or over the
# whole batch with numpy. It only ever *accepts*: a message with anything out of the ordinary — a bad item,
# an RFC 3339 time, a status, a binary payload — is handed whole to ``validate_message``, so what is accepted
# and what reaches the DLQ with which reason is decided by the reference and nothing else.
_BatchTs = Annotated[int, msgspec.Meta(ge=MIN_TS_MS, lt=1 << 62)]


class _Item(msgspec.Struct, gc=False):  # gc=False: transient, no cycles; spares the collector
    family: str
    device: str
    metric: str
    ts: _BatchTs
    value: float  # msgspec accepts ints here, rejects bools, NaN and out-of-range numbers
    unit: str


class _Frame(msgspec.Struct, gc=False):
    readings: list[_Item]


class _One(msgspec.Struct, gc=False):
    ts: _BatchTs
    value: float
    unit: str


class _Msg(msgspec.Struct, gc=False):
    t: str
    p: str | None = None
    b64: str | None = None


class _Envelope(msgspec.Struct, gc=False):
    msgs: list[_Msg]
    rx: int = 0


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_FRAME = msgspec.json.Decoder(_Frame)
_ONE = msgspec.json.Decoder(_One)
_CACHE_LIMIT = 1 << 16  # per cache; junk from a misbehaving sender must not grow a worker without bound
_topics: dict[str, tuple | None] = {}
_factors: dict[tuple[str, str, str], float | None] = {}
_good_ids: set[str] = set()


def _id_ok(value: str) -> bool:
    if value in _good_ids:
        return True
    if not _ID_RE.fullmatch(value):
        return False
    if len(_good_ids) >= _CACHE_LIMIT * 16:
        _good_ids.clear()
    _good_ids.add(value)
    return True


def _topic_info(topic: str) -> tuple | None:
    """``("frame", site, gateway)`` or ``("one", site, family, device, metric)`` for a topic the batch path can
    take, None for everything else (statuses, and whatever ``validate_message`` must judge)."""
    try:
        return _topics[topic]
    except KeyError:
        pass
    info = None
    parts = topic.split("/")
    if len(parts) == 5 and parts[0] == MQTT_ROOT and _id_ok(parts[1]) and _id_ok(parts[3]):
        _, site, family, device, metric = parts
        if family == GATEWAY:
            info = ("frame", site, device) if metric == "readings" else None
        elif metric in FAMILIES.get(family, ()):
            info = ("one", site, family, device, metric)
    if len(_topics) < _CACHE_LIMIT:
        _topics[topic] = info
    return info


def _factor(key: tuple[str, str, str]) -> float | None:
    """Canonical-unit factor of (family, metric, unit), or None when ``validate_message`` would reject it."""
    try:
        return _factors[key]
    except KeyError:
        pass
    family, metric, unit = key
    out = None
    if metric in FAMILIES.get(family, ()):
        want = FAMILIES[family][metric]
        unit = UNIT_ALIASES.get(unit, unit)
        out = 1.0 if unit == want else UNIT_CONVERSIONS.get((unit, want))
    if len(_factors) < _CACHE_LIMIT:
        _factors[key] = out
    return out


@dataclass
class ReadingColumns:
    """Validated readings of a batch as columns: ``devs`` lists each (site, device, family, gateway) once and
    ``d`` points every row at its device — the shape of a ``sw.readings`` record, without a ``Reading`` per row."""

    devs: list[tuple] = field(default_factory=list)
    d: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    metric: np.ndarray = field(default_factory=lambda: np.zeros(0, object))
    ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    value: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    statuses: list[GatewayStatus] = field(default_factory=list)
    device_statuses: list[DeviceStatus] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    rx: int = 0  # latest bridge receive time in the batch

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def keys(self) -> list[str]:
        """The Kafka key (``site/device``) of every entry of ``devs``."""
        return [f"{dv[0]}/{dv[1]}" for dv in self.devs]

    def by_partition(self, partitions: int, max_readings: int = MAX_RECORD_READINGS) -> list[tuple[int, bytes]]:
        """(partition, packed ``sw.readings`` record) for each partition the devices' keys map to: one record per
        partition, or several of at most ``max_readings`` readings each. Unbounded, a batch of gateway frames
        after an outage once made a 4.5 MB record, over the producer's limit: the validate agent died and the
        worker sat at 0 readings/s."""
        if not len(self):
            return []
        dev_part = np.fromiter((partition_of(k.encode(), partitions) for k in self.keys()), np.int64,
                               len(self.devs))
        row_part = dev_part[self.d]
        out = []
        remap = np.empty(len(self.devs), dtype=np.int64)
        for p in np.unique(dev_part).tolist():
            part_rows = np.flatnonzero(row_part == p)
            for start in range(0, part_rows.shape[0], max_readings):
                rows = part_rows[start:start + max_readings]
                d = self.d[rows]
                used = np.flatnonzero(np.bincount(d, minlength=len(self.devs)))
                remap[used] = np.arange(used.shape[0])
                out.append((p, pack_columns([self.devs[i] for i in used.tolist()], remap[d], self.metric[rows],
                                            self.ts[rows], self.value[rows], self.rx)))
        return out


_ENCODER = msgspec.json.Encoder()


def pack_columns(devs: list[tuple], d, metric, ts, value, received_ms: int) -> bytes:
    """A v2 ``sw.readings`` record from columns (lists or numpy arrays); see ``pack_readings``. A device entry
    is ``[site, device, family]``, or ``[site, device, family, gateway]`` when a gateway frame carried it."""
    def col(x):
        return x.tolist() if isinstance(x, np.ndarray) else list(x)

    return _ENCODER.encode({
        "v": SCHEMA_VERSION,
        "type": "readings",
        "rx": received_ms,
        "devs": [list(dv) if dv[3:4] and dv[3] else list(dv[:3]) for dv in devs],
        "d": col(d),
        "m": col(metric),
        "ts": col(ts),
        "val": col(value),
    })


def validate_envelopes(envelopes: Iterable[bytes], now: int | None = None,
                       max_age_ms: int = DEFAULT_ALLOWED_LATENESS_MS) -> ReadingColumns:
    """Validate a batch of ``sw.raw`` records into columns; the same outcome as ``validate_message`` on each
    MQTT message in them (which judges every message the batch path does not accept outright)."""
    now = now if now is not None else now_ms()
    lo, hi = now - max_age_ms, now + MAX_FUTURE_SKEW_MS
    out = ReadingColumns()
    devs: dict[tuple, int] = {}
    d: list[int] = []
    metric: list[str] = []
    ts: list[int] = []
    val: list[float] = []
    fac: list[float] = []
    msg_of: list[int] = []  # row -> message number, to take a message back out when a batch check fails it
    slow: list[tuple[str, bytes]] = []
    msgs_seen: list[tuple[str, str]] = []
    devs_get, factors_get = devs.get, _factors.get
    for data in envelopes:
        try:
            env = _ENVELOPE.decode(data)
            if any(m.p is None for m in env.msgs):
                raise ValueError("binary payload")
            msgs = env.msgs
            rx = env.rx
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError):  # skipping a deep
            # unknown field recurses too: the reference (or bad_envelope) judges it
            try:
                rx, raw = unpack_raw(data)
            except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as e:
                # not a bridge envelope (p not a string, rx Infinity, nested past the parser): keep the bytes anyway
                out.rejected.append(Rejected("bad_envelope", str(e), "", data))
                continue
            out.rx = max(out.rx, rx)
            slow.extend(raw)
            continue
        out.rx = max(out.rx, rx)
        for m in msgs:
            topic, payload = m.t, m.p
            info = _topic_info(topic)
            if info is None or len(payload) * 4 > MAX_PAYLOAD_BYTES and len(payload.encode()) > MAX_PAYLOAD_BYTES:
                slow.append((topic, payload.encode()))
                continue
            mi = len(msgs_seen)
            start = len(ts)
            try:
                if info[0] == "frame":  # column by column: each pass a comprehension or a map over the items
                    site, gw = info[1], info[2]
                    items = _FRAME.decode(payload).readings
                    ms = [it.metric for it in items]
                    fs = list(map(factors_get, zip([it.family for it in items], ms, [it.unit for it in items])))
                    if None in fs:
                        fs = [_factor((it.family, it.metric, it.unit)) for it in items]
                        if None in fs:
                            raise ValueError
                    dks = [(site, it.device, it.family, gw) for it in items]
                    idx = list(map(devs_get, dks))
                    if None in idx:
                        for k, dk in enumerate(dks):
                            if idx[k] is None:
                                if not _id_ok(dk[1]):
                                    raise ValueError
                                i = devs_get(dk)
                                idx[k] = devs[dk] = len(devs) if i is None else i
                    d += idx
                    metric += ms
                    ts += [it.ts for it in items]
                    val += [it.value for it in items]
                    fac += fs
                else:
                    _, site, family, device, met = info
                    one = _ONE.decode(payload)
                    f = factors_get((family, met, one.unit)) or _factor((family, met, one.unit))
                    if f is None:
                        raise ValueError
                    dk = (site, device, family, None)
                    i = devs_get(dk)
                    if i is None:
                        i = devs[dk] = len(devs)
                    d.append(i)
                    metric.append(met)
                    ts.append(one.ts)
                    val.append(one.value)
                    fac.append(f)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError):
                del d[start:], metric[start:], ts[start:], val[start:], fac[start:]
                slow.append((topic, payload.encode()))
                continue
            msgs_seen.append((topic, payload))
            msg_of.extend([mi] * (len(ts) - start))
    t = np.array(ts, dtype=np.int64)
    with np.errstate(over="ignore"):  # 1e308 m in mm: Infinity, sent to the reference below
        v = np.array(val, dtype=np.float64) * np.array(fac, dtype=np.float64)
    bad = (t > hi) | (t < lo) | ~np.isfinite(v)
    keep = slice(None)
    if bad.any():  # out of the time window: the reference says why (future_timestamp, too_late …)
        mo = np.array(msg_of, dtype=np.int64)
        bad_msgs = np.unique(mo[bad])
        keep = ~np.isin(mo, bad_msgs)
        slow.extend((msgs_seen[i][0], msgs_seen[i][1].encode()) for i in bad_msgs.tolist())
    out.d = np.array(d, dtype=np.int64)[keep]
    out.metric = np.array(metric, dtype=object)[keep]
    out.ts, out.value = t[keep], v[keep]
    out.devs = list(devs)
    if slow:
        _add_slow(out, slow, devs, now, max_age_ms)
    return out


def _add_slow(out: ReadingColumns, slow: list[tuple[str, bytes]], devs: dict[tuple, int], now: int,
              max_age_ms: int) -> None:
    """Messages the batch path did not accept outright, judged by ``validate_message``."""
    v = Validated()
    for topic, payload in slow:
        validate_message(topic, payload, now, v, max_age_ms)
    out.statuses += v.statuses
    out.device_statuses += v.device_statuses
    out.rejected += v.rejected
    if v.readings:
        idx = []
        for r in v.readings:
            dk = (r.site, r.device, r.family, r.gateway)
            i = devs.get(dk)
            if i is None:
                i = devs[dk] = len(devs)
            idx.append(i)
        out.devs = list(devs)
        out.d = np.concatenate([out.d, np.array(idx, dtype=np.int64)])
        out.metric = np.concatenate([out.metric, np.array([r.metric for r in v.readings], dtype=object)])
        out.ts = np.concatenate([out.ts, np.array([r.ts for r in v.readings], dtype=np.int64)])
        out.value = np.concatenate([out.value, np.array([r.value for r in v.readings], dtype=np.float64)])


# ---------------------------------------------------------------------------------------------- sw.readings decode
class _ReadingsRec(msgspec.Struct, tag_field="type", tag="readings", gc=False):
    d: list[int] | None = None
    devs: list[list[str | None]] | None = None
    m: list[str] = []
    ts: list[int] = []
    val: list[float] = []
    site: str = ""  # v1: one device per record
    device: str = ""
    family: str = ""


class _StatusRec(msgspec.Struct, tag_field="type", tag="status"):
    site: str
    gateway: str
    ts: int
    online: bool
    detail: dict[str, Any] = {}


class _DStatusRec(msgspec.Struct, tag_field="type", tag="dstatus"):
    site: str
    family: str
    device: str
    ts: int
    online: bool
    reason: str = ""


_READINGS_RECORD = msgspec.json.Decoder(_ReadingsRec | _StatusRec | _DStatusRec)


@dataclass
class ReadingsBatch:
    """Many ``sw.readings`` records as columns (``devs`` entries are (site, device, family, gateway-or-None))."""

    devs: list[tuple]
    d: np.ndarray
    metric: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    statuses: list[GatewayStatus]
    device_statuses: list[DeviceStatus]


def _readings_record(data: bytes):
    try:
        return _READINGS_RECORD.decode(data)
    except msgspec.ValidationError:  # a record without "type" (early v1): read it by its fields
        rec = json.loads(data)
        return _ReadingsRec(rec.get("d"), rec.get("devs"), rec["m"], rec["ts"], rec["val"], rec.get("site", ""),
                            rec.get("device", ""), rec.get("family", ""))


def decode_readings_records(records: Iterable[bytes]) -> ReadingsBatch:
    """Decode ``sw.readings`` records (v2 and v1 readings, gateway and device status) into one columnar batch."""
    devs: list[tuple] = []
    d_parts: list[np.ndarray] = []
    metric: list[str] = []
    ts: list[int] = []
    val: list[float] = []
    statuses: list[GatewayStatus] = []
    dstatuses: list[DeviceStatus] = []
    for data in records:
        rec = _readings_record(data)
        if type(rec) is _StatusRec:
            statuses.append(GatewayStatus(rec.site, rec.gateway, rec.ts, rec.online, rec.detail))
            continue
        if type(rec) is _DStatusRec:
            dstatuses.append(DeviceStatus(rec.site, rec.family, rec.device, rec.ts, rec.online, rec.reason))
            continue
        base = len(devs)
        if rec.devs is not None:
            devs.extend((dv[0], dv[1], dv[2], dv[3] if len(dv) > 3 else None) for dv in rec.devs)
            d_parts.append(np.array(rec.d, dtype=np.int64) + base)
        else:  # v1: one device per record
            devs.append((rec.site, rec.device, rec.family, None))
            d_parts.append(np.full(len(rec.ts), base, dtype=np.int64))
        metric.extend(rec.m)
        ts.extend(rec.ts)
        val.extend(rec.val)
    return ReadingsBatch(devs, np.concatenate(d_parts) if d_parts else np.zeros(0, np.int64),
                         np.array(metric, dtype=object), np.array(ts, dtype=np.int64),
                         np.array(val, dtype=np.float64), statuses, dstatuses)
