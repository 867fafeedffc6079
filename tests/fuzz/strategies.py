"""What the fuzz tests throw at the bridge and the validate stage, and the accounting they check it against.

The generators mix near-valid input (real families, metrics, units and ids, so that readings do get through and
the checks downstream of acceptance run) with everything a broken or hostile sender can publish: bytes that are
not UTF-8, NUL bytes, empty and huge payloads, JSON nested past the parser, NaN / Infinity / integers beyond any
float, unknown extra fields, wrong types in every field, unicode confusables in ids, topics with wildcards, ``$``,
missing or extra levels.

Speed: a hypothesis draw costs tens of microseconds, and CI runs 10,000 examples on two shared cores. So
hypothesis draws the *shape* of each example (how many envelopes and messages, which kind of message, whether a
record is junk) and one seed per message, and a seeded ``random.Random`` builds the message from it. Examples
stay reproducible (derandomized runs, a failing example is printed in full), and hypothesis still shrinks a
failure to the fewest envelopes and messages.
"""

from __future__ import annotations

import base64
import json
import math
import random

import msgspec
from hypothesis import strategies as st

from sitewatch.contracts import (
    FAMILIES,
    GATEWAY,
    MAX_PAYLOAD_BYTES,
    MQTT_ROOT,
    REJECT_REASONS,
    UNIT_ALIASES,
    UNIT_CONVERSIONS,
    _ID_RE,
    Validated,
    decode_readings_records,
    pack_raw,
    unpack_raw,
    validate_message,
)

NOW = 1_790_000_000_000  # 2026-09-21
MQTT_TOPIC_MAX = 65_535  # an MQTT topic is a length-prefixed UTF-8 string
MQTT_MESSAGE_LIMIT = 256 * 1024  # mosquitto's message_size_limit as deployed (deploy/mosquitto, app/localstack)

GOOD_IDS = ["s1", "cz-0412", "tc-01", "gw-01", "d-7", "a", "x.y_z", "0" * 63]
BAD_IDS = [
    "", "+", "#", "$SYS", "TC-01", "tc 01", "-tc", "a" * 64,
    "tс-01",  # Cyrillic es
    "ｔｃ-01",  # fullwidth
    "tc‐01",  # U+2010 hyphen
    "tc-01\n", "tc-01\x00", "tc-01\u200b", "é", "😀", "\u202etc", "\ufefftc",
]
_CHARS = "aZ09_-./+#$ \t\n\x00\x7f\u00e9\u0441\uff54\u2010\u200b\u202e\ufeff\U0001f600\\\"'{}[]:,"
METRICS = sorted({m for ms in FAMILIES.values() for m in ms})
ALL_UNITS = sorted({u for ms in FAMILIES.values() for u in ms.values()} | set(UNIT_ALIASES)
                   | {a for a, _ in UNIT_CONVERSIONS})
EXTRA_KEYS = ["rssi", "seq", "fw", "meta", "battery", "q", "", "ts2", "Value", "readings", "unit", "value"]
_GOOD_TOPICS = [f"sw/{{site}}/{f}/{{dev}}/{m}" for f, ms in FAMILIES.items() for m in [*ms, "status"]] + \
    ["sw/{site}/gateway/{dev}/readings"] * 10 + ["sw/{site}/gateway/{dev}/status"] * 3
_ODD_PAYLOADS = [
    b'{"ts":1790000000000,"value":1,"unit":"t\\u0000"}', b'{"ts":1790000000000,"value":1,"unit":"\\ud800"}',
    b'{"ts":1790000000000,"value":1,"unit":"t"}\x00', b'\x00{"ts":1790000000000,"value":1,"unit":"t"}',
    b'{"online":false,"reason":"\\udc80"}', b'{"online":false,"x":NaN}', b'{"online":false,"ts":-1e30}',
    b'{"ts":1790000000000,"value":1,"value":"x","unit":"t"}', b'{"ts":1790000000000,"value":"x","value":1,"unit":"t"}',
    b'{"readings":[],"readings":5}', b'\xef\xbb\xbf{"ts":1790000000000,"value":1,"unit":"t"}', b"null", b"[]",
    b'{"ts":1790000000000,"value":1e400,"unit":"t"}', b'{"ts":1790000000000,"value":-0,"unit":"t"}',
]


class Gen:
    """Builds one message (or one junk ``sw.raw`` record) from a seed."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    def text(self, n: int = 12) -> str:
        return "".join(self.r.choice(_CHARS) for _ in range(self.r.randint(0, n)))

    def json(self, depth: int = 0):
        r = self.r
        k = r.randint(0, 9 if depth < 3 else 5)
        if k == 0:
            return None
        if k == 1:
            return r.random() < 0.5
        if k == 2:
            return r.choice([r.randint(-(2**70), 2**70), r.randint(-5, 5), 10**400, 2**63, -(2**63) - 1])
        if k == 3:
            return r.choice([r.uniform(-1e9, 1e9), 1e308, -1e308, 5e-324, math.nan, math.inf, -0.0])
        if k in (4, 5):
            return self.text()
        if k in (6, 7):
            return [self.json(depth + 1) for _ in range(r.randint(0, 4))]
        return {self.text(6): self.json(depth + 1) for _ in range(r.randint(0, 4))}

    def level(self) -> str:
        return self.r.choice([self.r.choice(GOOD_IDS), self.r.choice(BAD_IDS), self.text(),
                              self.r.choice([*FAMILIES, GATEWAY, *METRICS, "status", "readings"])])

    # ------------------------------------------------------------------------------------------ topics
    def topic(self) -> str:
        """Mostly a topic of the grammar (so that payloads get judged), often with one thing broken."""
        r = self.r
        k = r.randint(0, 19)
        if k == 0:
            return self.text(40)
        if k == 1:  # up to the MQTT maximum
            return "sw/" + r.choice("a/+é") * r.randint(1000, MQTT_TOPIC_MAX - 3)
        topic = r.choice(_GOOD_TOPICS).format(site=r.choice(GOOD_IDS[:3]), dev=r.choice(GOOD_IDS[1:6]))
        if k >= 10:
            return topic
        parts = topic.split("/")
        if k == 2:
            parts = parts[: r.randint(0, 4)]  # missing levels
        elif k == 3:
            parts += [self.level() for _ in range(r.randint(1, 3))]  # extra levels
        elif k == 4:
            parts[r.randint(0, 4)] = r.choice(["+", "#", "$", "", "$SYS", "SW", "$share"])
        elif k in (5, 6):
            parts[r.choice([1, 3, 3])] = r.choice(BAD_IDS)  # confusables in ids
        elif k == 7:
            parts[r.randint(0, 4)] = self.level()
        topic = "/".join(parts)
        if k == 8:
            topic = "/" + topic
        elif k == 9:
            topic += "/"
        return topic

    # ------------------------------------------------------------------------------------------ payload parts
    def ts(self):
        r = self.r
        k = r.randint(0, 19)
        if k <= 13:
            return NOW - r.randint(0, 72 * 3600 * 1000)  # in the window
        if k == 14:
            return r.randint(NOW - 80 * 3600 * 1000, NOW + 10 * 60 * 1000)  # around its edges
        if k == 15:
            return r.uniform(NOW - 3600e3, NOW)
        if k == 16:
            return r.choice(["2026-09-21T10:00:00Z", "2026-09-21T10:00:00+08:00", "2026-09-21T10:00:00", "yesterday",
                             "", "2026-02-30T00:00:00Z", "9999-12-31T23:59:59Z", "2026-09-21T10:00:00.123456789Z"])
        return r.choice([0, -1, 12345, 10**30, -(10**30), 2**63, 1.79e12, math.nan, math.inf, True, None, [], {},
                         self.json()])

    def value(self, family=None, metric=None):
        r = self.r
        k = r.randint(0, 19)
        if k <= 11:
            return round(r.uniform(-100, 1000), r.randint(0, 6))
        if k <= 13:
            return r.randint(-(10**12), 10**12)
        if k <= 15:  # beyond the physical range, still numbers
            return r.choice([-5, 1e9, 10_000, -1e6, 1.7e308, -1.7e308, 1e-300])
        if k == 16:
            return r.choice([math.nan, math.inf, -math.inf, 10**400, -(10**400), 1e308])
        return r.choice([True, False, None, "1.5", "heavy", "", [1], {"v": 1}, self.json()])

    def unit(self, family=None, metric=None):
        want = FAMILIES.get(family, {}).get(metric) if isinstance(family, str) and isinstance(metric, str) else None
        if want and self.chance(0.7):
            return want
        return self.r.choice([self.r.choice(ALL_UNITS), self.r.choice(["lb", "", "T", None, 5, ["t"]]), self.text(4)])

    def extra(self) -> dict:
        return {self.r.choice(EXTRA_KEYS): self.json() for _ in range(self.r.choice([0, 0, 0, 1, 2, 3]))}

    def maybe_drop(self, body: dict) -> dict:
        if self.chance(0.15):
            body = {k: v for k, v in body.items() if self.chance(0.7)}
        return body

    def reading_body(self, family=None, metric=None) -> dict:
        body = {"ts": self.ts(), "value": self.value(family, metric), "unit": self.unit(family, metric),
                **self.extra()}
        return self.maybe_drop(body)

    def frame_item(self):
        r = self.r
        if self.chance(0.1):
            return self.json()
        family = r.choice(sorted(FAMILIES)) if self.chance(0.85) else r.choice([self.level(), self.json()])
        metrics = sorted(FAMILIES.get(family, {"x": ""})) if isinstance(family, str) else ["x"]
        metric = r.choice(metrics) if self.chance(0.85) else r.choice([self.level(), self.json()])
        device = r.choice(GOOD_IDS[1:6]) if self.chance(0.85) else r.choice([r.choice(BAD_IDS), self.json()])
        item = {"family": family, "device": device, "metric": metric, **self.reading_body(family, metric)}
        return self.maybe_drop(item)

    # ------------------------------------------------------------------------------------------ payloads
    def payload(self, topic: str) -> bytes:
        """A payload aimed at what ``topic`` claims to be, or junk."""
        r = self.r
        parts = topic.split("/")
        k = r.randint(0, 29)
        if k <= 19 and len(parts) >= 5:
            family, metric = parts[2], parts[4]
            if family == GATEWAY and metric == "readings" or k == 0:
                frame = {"readings": [self.frame_item() for _ in range(r.choice([0, 1, 2, 3, 5, 8, 20]))],
                         **self.extra()}
                if self.chance(0.05):
                    frame["readings"] = self.json()
                return _dumps(frame)
            if metric == "status":
                body = {"ts": self.ts() if self.chance(0.5) else NOW - 1000,
                        "online": r.choice([True, False]) if self.chance(0.9) else self.json(),
                        "reason": r.choice(["power_off", ""]) if self.chance(0.8) else self.json(), **self.extra()}
                return _dumps(self.maybe_drop(body))
            return _dumps(self.reading_body(family, metric))
        if k <= 21:
            return _dumps(self.json())
        if k == 22:
            return r.randbytes(r.randint(0, 200))
        if k == 23:  # nested past any parser's recursion limit, or just under it; also inside a known field
            n = r.choice([40, 900, 1000, 5000, 30000])
            open_, close = r.choice([(b"[", b"]"), (b'{"a":', b"}"), (b'{"readings":[', b"]}"),
                                     (b'{"ts":1790000000000,"value":1,"unit":"t","x":[', b"]}")])
            return open_ * n + (close * n if self.chance(0.7) else b"")
        if k == 24:  # around and beyond the size limit, filled with the bytes costliest to escape in JSON
            n = r.choice([1, MAX_PAYLOAD_BYTES - 1, MAX_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES + 1, 200_000,
                          MQTT_MESSAGE_LIMIT])
            return r.choice([b"\x00", b"\x1f", b"\xff", b'"', b"\\", b"a", "é".encode()]) * n
        if k == 25:  # a real frame just over the limit
            item = {"family": "crane", "device": "tc-01", "metric": "load", "ts": NOW, "value": 1.5, "unit": "t"}
            return _dumps({"readings": [item] * (MAX_PAYLOAD_BYTES // 80)})
        if k == 26:
            return b""
        if k == 27:
            return r.choice(_ODD_PAYLOADS)
        return _dumps(self.reading_body())

    def message(self) -> tuple[str, bytes]:
        topic = self.topic()
        return topic, self.payload(topic)

    def junk_envelope(self) -> bytes:
        """Bytes on ``sw.raw`` that no bridge wrote: the stage must keep them (``bad_envelope``), not die on them."""
        r = self.r
        good = {"t": "sw/s1/crane/tc-01/load", "p": '{"ts":1790000000000,"value":1,"unit":"t"}'}
        msg = r.choice([
            {"t": 5, "p": "x"}, {"t": None, "p": "x"}, {"t": "sw/\ud800", "p": "x"}, {"t": "sw/a", "p": 5},
            {"t": "sw/a", "p": "\ud800"}, {"t": "sw/a", "b64": "!!"}, {"t": "sw/a", "b64": 5}, {"t": "sw/a"},
            {"p": "x"}, "p", ["t", "p"], good, {**good, "z": [[[[[]]]]]}, {"t": "sw/a", "p": None, "b64": "AA=="},
        ])
        k = r.randint(0, 5)
        if k == 0:
            return r.randbytes(r.randint(0, 100))
        if k == 1:
            n = r.choice([900, 5000, 100_000])
            return r.choice([b'{"msgs":' + b"[" * n + b"]}", b'{"msgs":[{"t":"a","p":"b","z":' + b"[" * n + b"]}]}"])
        if k == 2:
            return _dumps(self.json())
        if k == 3:
            return pack_raw([self.message()], 7)[:-r.randint(1, 5)]  # cut short
        env = r.choice([
            {"v": 2, "rx": 1, "msgs": [msg]}, {"v": 2, "rx": math.inf, "msgs": [good]}, {"v": 2, "rx": math.nan,
                                                                                       "msgs": []},
            {"v": 2, "rx": "x", "msgs": []}, {"v": 2, "rx": 10**400, "msgs": []}, {"rx": 1, "msgs": 5},
            {"rx": 1, "msgs": "ab"}, {"rx": 1}, [1, 2], "msgs", None, {"rx": 1, "msgs": [good, msg, good]},
        ])
        return _dumps(env)


def _dumps(body) -> bytes:
    # NaN / Infinity as Python writes them (a sensor may too); lone surrogates escaped, as a JSON writer may
    return json.dumps(body, allow_nan=True).encode()


SEED = st.integers(0, 2**32 - 1)
MESSAGES = st.lists(SEED, min_size=1, max_size=5).map(lambda seeds: [Gen(s).message() for s in seeds])
ENVELOPE = st.one_of(MESSAGES.map(lambda ms: pack_raw(ms, 7)), MESSAGES.map(lambda ms: pack_raw(ms, 7)),
                     MESSAGES.map(lambda ms: pack_raw(ms, 7)), SEED.map(lambda s: Gen(s).junk_envelope()))
BATCHES = st.lists(ENVELOPE, min_size=1, max_size=3)


# ---------------------------------------------------------------------------------------------- accounting
def units(topic: str, payload: bytes) -> int:
    """How many outcomes one MQTT message must produce: the unit of ``received == readings + DLQ``.

    A gateway frame the contract can open (topic ``sw/{site}/gateway/{gw}/readings`` with valid ids, payload within
    the size limit, a JSON object with a ``readings`` list) counts one unit per item — each item becomes a reading
    or a rejection with its index, so an empty frame counts 0. Every other message is one unit: one reading, one
    status, or one rejection (a frame that cannot be opened is rejected whole).
    """
    parts = topic.split("/")
    if (len(parts) != 5 or parts[0] != MQTT_ROOT or parts[2] != GATEWAY or parts[4] != "readings"
            or not _ID_RE.fullmatch(parts[1]) or not _ID_RE.fullmatch(parts[3]) or len(payload) > MAX_PAYLOAD_BYTES):
        return 1
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):
        return 1
    if isinstance(body, dict) and isinstance(body.get("readings"), list):
        return len(body["readings"])
    return 1


def outcomes(v: Validated) -> int:
    return len(v.readings) + len(v.statuses) + len(v.device_statuses) + len(v.rejected)


def check_message(topic: str, payload: bytes) -> Validated:
    """The reference judge on one message: it never raises and accounts for every unit exactly once."""
    v = validate_message(topic, payload, NOW)
    k = units(topic, payload)
    assert outcomes(v) == k, (topic[:200], payload[:200], v)
    idx = [r.index for r in v.rejected]
    if v.readings or any(i is not None for i in idx):  # a frame's items: each index at most once, in range
        assert not v.statuses and not v.device_statuses
        frame = [i for i in idx if i is not None]
        assert len(set(frame)) == len(frame) and all(0 <= i < k for i in frame)
    for r in v.rejected:
        assert r.reason in REJECT_REASONS, r
        assert r.topic == topic and r.payload == payload
    for r in v.readings:
        assert math.isfinite(r.value) and isinstance(r.value, float)
    return v


_STRICT = msgspec.json.Decoder()  # no NaN, no lone surrogates: what any consumer of ours can read


def check_dlq_record(key: bytes, value: bytes, payload: bytes | None = None, topic: str | None = None) -> dict:
    rec = _STRICT.decode(value)
    assert json.loads(value) == rec
    assert rec["reason"] in REJECT_REASONS
    assert isinstance(rec["detail"], str) and isinstance(rec["topic"], str)
    assert isinstance(key, bytes) and key == rec["topic"].encode()
    if payload is not None:
        assert base64.b64decode(rec["payload_b64"], validate=True) == payload
    if topic is not None:
        assert rec["topic"] == topic
    return rec


def expected_units(envelopes: list[bytes]) -> tuple[int, list[tuple[str, bytes]]]:
    """Units a batch of ``sw.raw`` records must account for, and the MQTT messages inside them. A record that
    is not a bridge envelope is one unit (its ``bad_envelope`` rejection)."""
    total, msgs = 0, []
    for data in envelopes:
        try:
            _, raw = unpack_raw(data)
        except Exception:
            total += 1
            continue
        msgs += raw
        total += sum(units(t, p) for t, p in raw)
    return total, msgs


def check_stage(envelopes: list[bytes], partitions: int = 4) -> int:
    """The validate stage on a batch: no exception, every unit is a reading, a status or a DLQ record, the
    batch path agrees with the reference, and what it sends is read back by the detect stage's decoder and
    is valid DLQ JSON. Returns the number of readings that got through."""
    from sitewatch.contracts import validate_envelopes
    from streams.validate import outgoing

    total, msgs = expected_units(envelopes)
    ref = Validated()
    for t, p in msgs:
        v = check_message(t, p)
        ref.readings += v.readings
        ref.statuses += v.statuses
        ref.device_statuses += v.device_statuses
        ref.rejected += v.rejected
    out = validate_envelopes(envelopes, NOW)
    n_bad_env = sum(r.reason == "bad_envelope" for r in out.rejected)
    assert len(out) + len(out.statuses) + len(out.device_statuses) + len(out.rejected) == total
    assert len(out) == len(ref.readings) and n_bad_env + len(ref.rejected) == len(out.rejected)
    key = lambda r: (r.reason, -1 if r.index is None else r.index, r.topic, r.payload)  # noqa: E731
    assert sorted(key(r) for r in out.rejected if r.reason != "bad_envelope") == sorted(map(key, ref.rejected))
    readings, dlq = outgoing(out, partitions)
    back = decode_readings_records([kw["value"] for kw in readings])
    assert len(back.ts) == len(out) and len(back.statuses) == len(out.statuses)
    assert len(back.device_statuses) == len(out.device_statuses)
    assert sorted(back.value.tolist()) == sorted(r.value for r in ref.readings)
    assert len(dlq) == len(out.rejected)
    for kw, rej in zip(dlq, out.rejected):
        check_dlq_record(kw["key"], kw["value"], rej.payload, rej.topic)
    assert len(back.ts) + len(back.statuses) + len(back.device_statuses) + len(dlq) == total
    return len(out)
