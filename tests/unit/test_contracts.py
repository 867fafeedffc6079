"""The message contract: what is accepted, what is rejected and with which reason."""

import base64
import json

import pytest

from sitewatch.contracts import (
    FAMILIES,
    MAX_PAYLOAD_BYTES,
    Validated,
    gateway_topic,
    kafka_key_for_mqtt_topic,
    pack_raw,
    pack_readings,
    reading_topic,
    unpack_raw,
    unpack_readings,
    validate_message,
)

NOW = 1_790_000_000_000  # 2026-09-21


def one(topic, body, now=NOW) -> Validated:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return validate_message(topic, payload, now)


def test_single_reading_accepted():
    out = one("sw/cz-0412/crane/tc-01/load", {"ts": NOW, "value": 9.5, "unit": "t"})
    assert not out.rejected
    (r,) = out.readings
    assert (r.site, r.family, r.device, r.metric, r.ts, r.value) == ("cz-0412", "crane", "tc-01", "load", NOW, 9.5)
    assert r.key == "cz-0412/tc-01"


def test_rfc3339_timestamp_and_unit_conversion():
    out = one("sw/cz-0412/crane/tc-01/load", {"ts": "2026-09-21T10:00:00Z", "value": 9500, "unit": "kg"})
    (r,) = out.readings
    assert r.value == pytest.approx(9.5)
    assert r.ts == 1_789_984_800_000


def test_degree_sign_alias():
    (r,) = one("sw/s1/battery/bc-01/pack_temp", {"ts": NOW, "value": 41, "unit": "°C"}).readings
    assert r.value == 41.0


@pytest.mark.parametrize(
    "topic,body,reason",
    [
        ("sw/s1/crane/tc-01/load", b"{not json", "bad_json"),
        ("sw/s1/crane/tc-01/load", b"\xff\xfe", "bad_json"),
        ("sw/s1/crane/tc-01/load", [1, 2], "bad_schema"),
        ("sw/s1/rocket/r-01/thrust", {"ts": NOW, "value": 1, "unit": "N"}, "unknown_family"),
        ("sw/s1/crane/tc-01/speed", {"ts": NOW, "value": 1, "unit": "m/s"}, "unknown_metric"),
        ("sw/s1/crane/tc-01/load", {"ts": NOW, "value": 1, "unit": "lb"}, "wrong_unit"),
        ("sw/s1/crane/tc-01/load", {"ts": NOW, "value": 1}, "missing_unit"),
        ("sw/s1/crane/tc-01/load", {"ts": NOW, "value": "heavy", "unit": "t"}, "non_numeric_value"),
        ("sw/s1/crane/tc-01/load", {"ts": NOW, "value": True, "unit": "t"}, "non_numeric_value"),
        ("sw/s1/crane/tc-01/load", b'{"ts": 1790000000000, "value": NaN, "unit": "t"}', "non_finite_value"),
        ("sw/s1/crane/tc-01/load", b'{"ts": 1790000000000, "value": Infinity, "unit": "t"}', "non_finite_value"),
        ("sw/s1/crane/tc-01/load", {"ts": NOW + 3_600_000, "value": 1, "unit": "t"}, "future_timestamp"),
        ("sw/s1/crane/tc-01/load", {"ts": 12345, "value": 1, "unit": "t"}, "bad_timestamp"),
        ("sw/s1/crane/tc-01/load", {"ts": "yesterday", "value": 1, "unit": "t"}, "bad_timestamp"),
        ("sw/s1/crane/tc-01/load", {"value": 1, "unit": "t"}, "missing_field"),
        ("sw/s1/crane/tc-01", {"ts": NOW, "value": 1, "unit": "t"}, "bad_topic"),
        ("sw/S 1/crane/tc-01/load", {"ts": NOW, "value": 1, "unit": "t"}, "bad_identifier"),
    ],
)
def test_rejections_carry_reason_and_original_bytes(topic, body, reason):
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    out = validate_message(topic, payload, NOW)
    assert not out.readings
    (rej,) = out.rejected
    assert rej.reason == reason, rej.detail
    dlq = json.loads(rej.to_dlq(NOW))
    assert dlq["reason"] == reason and dlq["topic"] == topic
    assert base64.b64decode(dlq["payload_b64"]) == payload


def test_oversized_message_rejected():
    payload = json.dumps({"ts": NOW, "value": 1, "unit": "t", "pad": "x" * MAX_PAYLOAD_BYTES}).encode()
    (rej,) = validate_message("sw/s1/crane/tc-01/load", payload, NOW).rejected
    assert rej.reason == "oversized"


def test_gateway_frame_keeps_good_items_and_rejects_bad_ones():
    frame = {"readings": [
        {"family": "pit", "device": "jc-07", "metric": "wall_top_horizontal", "ts": NOW, "value": 12.5, "unit": "mm"},
        {"family": "pit", "device": "jc-07", "metric": "wall_top_horizontal", "ts": NOW, "value": None, "unit": "mm"},
        {"family": "pit", "device": "jc-08", "metric": "groundwater_level", "ts": NOW, "value": -350, "unit": "cm"},
    ]}
    out = one(gateway_topic("s1", "gw-01"), frame)
    assert [(r.device, r.value) for r in out.readings] == [("jc-07", 12.5), ("jc-08", -3.5)]
    (rej,) = out.rejected
    assert (rej.reason, rej.index) == ("non_numeric_value", 1)


def test_gateway_status_and_last_will():
    out = one(gateway_topic("s1", "gw-01", "status"), {"online": False, "ts": NOW})
    (st,) = out.statuses
    assert (st.site, st.gateway, st.online, st.ts) == ("s1", "gw-01", False, NOW)


def test_every_family_metric_has_a_unit_and_a_valid_topic():
    for fam, metrics in FAMILIES.items():
        for metric, unit in metrics.items():
            out = one(reading_topic("s1", fam, "d-01", metric), {"ts": NOW, "value": 1.0, "unit": unit})
            assert out.readings and not out.rejected, (fam, metric)


def test_raw_envelope_round_trip_keeps_bytes():
    msgs = [("sw/s1/crane/tc-01/load", b'{"ts":1}'), ("sw/s1/crane/tc-01/load", b"\xff\x00binary")]
    rx, back = unpack_raw(pack_raw(msgs, 42))
    assert rx == 42 and back == msgs


def test_bridge_key_is_site_device():
    assert kafka_key_for_mqtt_topic("sw/cz-0412/crane/tc-01/load") == "cz-0412/tc-01"
    assert kafka_key_for_mqtt_topic(gateway_topic("cz-0412", "gw-01")) == "cz-0412/gw-01"


def test_readings_pack_round_trip():
    out = one("sw/s1/crane/tc-01/load", {"ts": NOW, "value": 3.0, "unit": "t"})
    rec = json.loads(pack_readings(out.readings, NOW))
    assert unpack_readings(rec) == out.readings
