"""Fuzz of the validate stage (``sw.raw`` → ``sw.readings`` + ``sw.readings.dlq``), and the two decisions the
contract takes about odd-but-well-formed input: values beyond a metric's physical range, unknown extra fields.

Accounting unit (``strategies.units``): one MQTT message is one unit — one reading, one status or one DLQ record —
except a gateway frame the contract can open, which is one unit per item (a reading, or a DLQ record carrying the
item's index; an empty frame is 0 units). A ``sw.raw`` record that is not a bridge envelope is one unit, its
``bad_envelope`` DLQ record. For every generated batch: units received == readings + statuses + DLQ records, as
sent by the stage and read back by the detect stage's decoder, and every DLQ reason is one of
``contracts.REJECT_REASONS``.
"""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from detectors import DetectorEngine, ReadingBatch, RuleSet
from sitewatch.contracts import (
    FAMILIES,
    MAX_PAYLOAD_BYTES,
    Rejected,
    gateway_topic,
    pack_raw,
    reading_topic,
    validate_envelopes,
    validate_message,
)

from . import TIMEOUT_S, fuzz_settings
from .strategies import BATCHES, NOW, check_dlq_record, check_message, check_stage

pytestmark = pytest.mark.timeout(TIMEOUT_S)


@fuzz_settings(0.55)
@given(BATCHES)
def test_validate_stage_never_raises_and_accounts_for_every_message(envelopes):
    check_stage(envelopes)


@fuzz_settings(0.05)
@given(st.text(max_size=40), st.one_of(st.text(max_size=40), st.sampled_from(["\ud800", "sw/\udcff/x"]),
                                       st.integers(1, 70_000).map(lambda n: "sw/" + "é+/#" * n)),
       st.one_of(st.binary(max_size=200), st.integers(0, MAX_PAYLOAD_BYTES * 4).map(lambda n: b"\xff\x00" * n)),
       st.one_of(st.none(), st.integers(-(2**70), 2**70)))
def test_dlq_record_is_valid_json_with_the_original_bytes_for_any_input(detail, topic, payload, index):
    """``Rejected.to_dlq`` for anything: non-UTF-8 bytes, a 280k-character topic, huge indices. (A lone
    surrogate in a topic is allowed here although the stage never lets one through: ``unpack_raw`` refuses it.)"""
    rec = json.loads(Rejected("bad_json", detail, topic, payload, index).to_dlq(NOW))
    assert base64.b64decode(rec["payload_b64"], validate=True) == payload
    assert (rec["topic"], rec["detail"], rec["index"]) == (topic, detail, index)
    if "\ud800" not in topic and "\udcff" not in topic:
        check_dlq_record(topic.encode(), Rejected("too_late", detail, topic, payload, index).to_dlq(NOW), payload)


# ---------------------------------------------------------------------------------------------- crashes found
# Each of these raised out of the validate stage (a poison pill: the worker dies on it, restarts, dies again).
SENSOR_REACHABLE = [  # (topic, payload, reason)
    ("sw/s1/crane/tc-01/load", b"[" * 5000, "bad_json"),  # RecursionError
    ("sw/s1/gateway/gw-01/readings", b'{"readings":' + b"[" * 3000 + b"]" * 3000 + b"}", "bad_json"),
    # a deep unknown field: msgspec recurses while skipping it (the batch path), json.loads while parsing it
    ("sw/s1/crane/tc-01/load", b'{"ts":1790000000000,"value":1,"unit":"t","x":' + b"[" * 3000 + b"]" * 3000 + b"}",
     "bad_json"),
    ("sw/s1/gateway/gw-01/readings", b'{"readings":[{"readings":' + b"[" * 3000 + b"]" * 3000 + b"}]}", "bad_json"),
    ("sw/s1/gateway/gw-01/readings",  # unhashable family / metric in a frame item: TypeError
     b'{"readings":[{"family":[1],"device":"d","metric":"load","ts":1790000000000,"value":1,"unit":"t"}]}',
     "unknown_family"),
    ("sw/s1/gateway/gw-01/readings",
     b'{"readings":[{"family":"crane","device":"d","metric":{},"ts":1790000000000,"value":1,"unit":"t"}]}',
     "unknown_metric"),
    # 1e308 m in mm is Infinity: was accepted and written to sw.readings as null
    ("sw/s1/pit/p-1/wall_top_horizontal", b'{"ts":1790000000000,"value":1e308,"unit":"m"}', "non_finite_value"),
    # statuses are forwarded: the detect stage's decoder must read them back (NaN, lone surrogate, -1e30 ms)
    ("sw/s1/gateway/gw-01/status", b'{"ts":1790000000000,"online":false,"x":NaN}', "bad_schema"),
    ("sw/s1/gateway/gw-01/status", b'{"online":false,"fw":"\\ud800"}', "bad_schema"),
    ("sw/s1/gateway/gw-01/status", b'{"online":false,"a":' + b"[" * 40 + b"]" * 40 + b"}", "bad_schema"),
    ("sw/s1/crane/tc-01/status", b'{"online":false,"reason":"\\udc80"}', "bad_schema"),
    ("sw/s1/gateway/gw-01/status", b'{"ts":-1e30,"online":false}', "bad_timestamp"),
    # "$" also matched before a trailing newline: "tc-01\n" was accepted as a second device
    ("sw/s1/crane/tc-01\n/load", b'{"ts":1790000000000,"value":1,"unit":"t"}', "bad_identifier"),
]
ENVELOPES = [  # sw.raw records no bridge wrote
    b'{"rx":Infinity,"msgs":[]}',  # OverflowError
    b'{"rx":1,"msgs":[{"t":5,"p":"x"}]}',  # AttributeError on a topic that is no string
    b'{"rx":1,"msgs":[{"t":"sw/a","p":5}]}',
    b'{"rx":1,"msgs":[{"t":"sw/\\ud800","p":"x"}]}',  # passed, then no Kafka key for its DLQ record
    b'{"rx":1,"msgs":' + b"[" * 5000 + b"]" * 5000 + b"}",  # RecursionError
    b'{"rx":1,"msgs":[{"t":"sw/a","p":"x","z":' + b"[" * 5000 + b"]" * 5000 + b"}]}",  # in msgspec, skipping z
]


@pytest.mark.parametrize("topic,payload,reason", SENSOR_REACHABLE)
def test_found_crashes_are_rejections_with_a_reason(topic, payload, reason):
    (rej,) = check_message(topic, payload).rejected
    assert rej.reason == reason, rej.detail
    assert check_stage([pack_raw([(topic, payload)], 1)]) == 0


@pytest.mark.parametrize("data", ENVELOPES)
def test_found_envelope_crashes_are_bad_envelopes(data):
    out = validate_envelopes([data], NOW)
    assert [(r.reason, r.payload) for r in out.rejected] == [("bad_envelope", data)]
    check_stage([data])


# ---------------------------------------------------------------------------------------------- decisions
# Beyond the physical range: accepted by validation, reported by the detectors as a broken sensor. One value per
# family beyond its default range (config/rules/defaults.yaml), and the limits of what validation does reject.
BEYOND_RANGE = [
    ("crane", "load", -5.0, "t"),
    ("crane", "load", 1e9, "t"),
    ("formwork", "settlement", 5e4, "mm"),
    ("pit", "strut_force", 1e12, "kN"),
    ("electrical", "leakage", -5.0, "mA"),
    ("electrical", "terminal_temp", 10_000.0, "degC"),
    ("battery", "pack_temp", 10_000.0, "°C"),
    ("battery", "smoke", -1.0, "ppm"),
    ("pit", "groundwater_level", 1.7e308, "m"),  # the largest float: still a number, still a broken sensor
]


@pytest.mark.parametrize("family,metric,value,unit", BEYOND_RANGE)
def test_value_beyond_physical_range_passes_validation_and_is_a_sensor_fault(family, metric, value, unit):
    topic = reading_topic("s1", family, "d-01", metric)
    payload = json.dumps({"ts": NOW - 1000, "value": value, "unit": unit}).encode()
    (r,) = check_message(topic, payload).readings
    cols = validate_envelopes([pack_raw([(topic, payload)], 1)], NOW)
    assert len(cols) == 1 and not cols.rejected and cols.value.tolist() == [r.value]
    findings = DetectorEngine(RuleSet.default()).process(
        ReadingBatch.from_columns(["s1"], ["d-01"], [family], [metric], [r.ts], [r.value]), {})
    faults = [f for f in findings if f.category == "fault"]
    assert [f.kind for f in faults] == ["fault.out_of_range"]
    assert faults[0].value == r.value


@pytest.mark.parametrize("raw,reason", [
    (b"NaN", "non_finite_value"), (b"Infinity", "non_finite_value"), (b"-Infinity", "non_finite_value"),
    (b"1" + b"0" * 400, "non_finite_value"), (b"1e400", "non_finite_value"),
    (b'"12.5"', "non_numeric_value"), (b"true", "non_numeric_value"), (b"null", "non_numeric_value"),
    (b"[1]", "non_numeric_value"),
])
def test_what_is_no_number_is_rejected(raw, reason):
    payload = b'{"ts":1790000000000,"value":' + raw + b',"unit":"t"}'
    (rej,) = check_message("sw/s1/crane/tc-01/load", payload).rejected
    assert rej.reason == reason, rej.detail
    check_stage([pack_raw([("sw/s1/crane/tc-01/load", payload)], 1)])


def test_unknown_extra_fields_are_accepted_and_ignored():
    """Gateway firmware adds fields (signal strength, sequence numbers, battery) before the contract knows them:
    the readings must keep flowing. The original bytes stay in ``sw.raw``."""
    extra = {"rssi": -71, "seq": 1234, "fw": "2.4.1", "meta": {"probe": [1, 2]}, "Value": "x", "q": None}
    one = {"ts": NOW - 1000, "value": 9.5, "unit": "t", **extra}
    item = {"family": "pit", "device": "jc-07", "metric": "strut_force", "ts": NOW - 1000, "value": 812.0,
            "unit": "kN", **extra}
    frame = {"readings": [item, item | {"device": "jc-08"}], "fw": "2.4.1", "buffered": True}
    status = {"ts": NOW - 1000, "online": True, "reason": "", **extra}
    msgs = [("sw/s1/crane/tc-01/load", json.dumps(one).encode()),
            (gateway_topic("s1", "gw-01"), json.dumps(frame).encode()),
            ("sw/s1/crane/tc-01/status", json.dumps(status).encode())]
    for topic, payload in msgs:
        assert not validate_message(topic, payload, NOW).rejected
    out = validate_envelopes([pack_raw(msgs, 1)], NOW)
    assert not out.rejected and len(out) == 3 and len(out.device_statuses) == 1
    assert sorted(out.value.tolist()) == [9.5, 812.0, 812.0]
    assert check_stage([pack_raw(msgs, 1)]) == 3


def test_every_family_has_a_value_beyond_range_in_the_decision_table():
    assert {f for f, *_ in BEYOND_RANGE} == set(FAMILIES)
