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
        ("sw/s1/crane/tc-01/load", {"ts": 10 ** 40, "value": 1, "unit": "t"}, "bad_timestamp"),  # past int64
        ("sw/s1/crane/tc-01/load", {"ts": 1e300, "value": 1, "unit": "t"}, "bad_timestamp"),
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


# ---------------------------------------------------------------------------------------------- batch path
# The worker validates whole batches (``validate_envelopes``: schema decoding straight into columns). It must
# accept exactly what ``validate_message`` accepts, with the same values, and send everything else to the DLQ
# with the reason and bytes the reference gives.
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sitewatch.contracts import (  # noqa: E402
    decode_readings_records,
    device_key,
    pack_device_status,
    pack_status,
    partition_of,
    validate_envelopes,
)

_GOOD_ITEM = {"family": "pit", "device": "jc-07", "metric": "wall_top_horizontal", "ts": NOW - 1000, "value": 12.5,
              "unit": "mm"}
# (field, bad value) -> what the reference says; None deletes the field
_CORRUPTIONS = [("value", None), ("value", "x"), ("value", True), ("ts", "2026-09-21T10:00:00Z"),
                ("ts", NOW + 3_600_000), ("ts", 12345), ("ts", NOW - 100 * 3600 * 1000), ("ts", 1.79e12),
                ("ts", 10**30), ("unit", "lb"), ("unit", None), ("unit", 5), ("unit", "cm"), ("unit", "°C"),
                ("family", "rocket"), ("metric", "speed"), ("device", "Bad Id"), ("device", 7), ("value", 10**400)]


def _item(i: int, corrupt: int | None) -> dict:
    fam = list(FAMILIES)[i % len(FAMILIES)]
    metric, unit = list(FAMILIES[fam].items())[i % len(FAMILIES[fam])]
    item = {"family": fam, "device": f"d-{i % 7}", "metric": metric, "ts": NOW - 1000 * (i % 50), "value": 0.5 + i,
            "unit": unit}
    if corrupt is not None:
        k, v = _CORRUPTIONS[corrupt % len(_CORRUPTIONS)]
        if v is None:
            item.pop(k)
        else:
            item[k] = v
    return item


def _message(kind: int, i: int, corrupt: int | None) -> tuple[str, bytes]:
    site = f"s-{i % 3}"
    if kind == 0:  # gateway frame of a few items
        items = [_item(i + j, corrupt if j == 1 else None) for j in range(3)]
        return gateway_topic(site, f"gw-{i % 2}"), json.dumps({"readings": items}).encode()
    if kind == 1:  # one reading
        it = _item(i, corrupt)
        body = {k: v for k, v in it.items() if k in ("ts", "value", "unit")}
        return reading_topic(site, it.get("family", "x"), str(it.get("device", "x")), it.get("metric", "x")), \
            json.dumps(body).encode()
    if kind == 2:
        return gateway_topic(site, "gw-01", "status"), json.dumps({"online": i % 2 == 0, "ts": NOW}).encode()
    if kind == 3:
        return f"sw/{site}/crane/tc-01/status", json.dumps({"online": False, "ts": NOW, "reason": "power_off"}).encode()
    if kind == 4:
        return f"sw/{site}/crane/tc-01/load", [b"{not json", b"\xff\xfe", b"[1,2]", b'{"ts":1,"value":NaN}'][i % 4]
    return f"sw/{site}/crane", b'{"ts":1}'  # bad topic


def _reference(envelopes: list[bytes]) -> Validated:
    out = Validated()
    for data in envelopes:
        for topic, payload in unpack_raw(data)[1]:
            validate_message(topic, payload, NOW, out)
    return out


def _rows(cols) -> list[tuple]:
    """(site, device, family, gateway or "", metric, ts, value) of every row of a columnar batch, sorted."""
    return sorted((*cols.devs[d][:3], cols.devs[d][3] or "", m, t, v) for d, m, t, v in
                  zip(cols.d.tolist(), cols.metric.tolist(), cols.ts.tolist(), cols.value.tolist()))


def _rows_of(readings) -> list[tuple]:
    return sorted((r.site, r.device, r.family, r.gateway or "", r.metric, r.ts, r.value) for r in readings)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 200),
                                   st.one_of(st.none(), st.integers(0, 100))), min_size=1, max_size=6),
                min_size=1, max_size=5))
def test_batch_path_accepts_and_rejects_exactly_like_the_reference(envelopes):
    raw = [pack_raw([_message(k, i, c) for k, i, c in env], 7) for env in envelopes]
    ref = _reference(raw)
    got = validate_envelopes(raw, NOW)
    assert _rows(got) == _rows_of(ref.readings)
    key = lambda r: (r.reason, r.topic, r.index, r.payload, r.detail)  # noqa: E731
    assert sorted(map(key, got.rejected)) == sorted(map(key, ref.rejected))
    assert sorted(map(repr, got.statuses)) == sorted(map(repr, ref.statuses))
    assert sorted(map(repr, got.device_statuses)) == sorted(map(repr, ref.device_statuses))
    assert got.rx == 7


def test_batch_path_rejects_a_non_envelope_and_keeps_its_bytes():
    got = validate_envelopes([b"not an envelope", pack_raw([("sw/s1/crane/tc-01/load", b'{"ts":1}')], 1)], NOW)
    assert sorted((r.reason, r.payload) for r in got.rejected) == [("bad_envelope", b"not an envelope"),
                                                                   ("missing_field", b'{"ts":1}')]
    assert len(got) == 0


def test_batch_path_binary_payload_goes_to_the_reference():
    got = validate_envelopes([pack_raw([("sw/s1/crane/tc-01/load", b"\xff\x00binary")], 1)], NOW)
    (rej,) = got.rejected
    assert (rej.reason, rej.payload) == ("bad_json", b"\xff\x00binary")


def test_a_large_batch_is_split_into_bounded_records_that_lose_nothing():
    msgs = [_message(k, i, None) for i in range(60) for k in (0, 1)]
    got = validate_envelopes([pack_raw(msgs, 9)], NOW)
    records = got.by_partition(1, max_readings=25)
    assert len(records) == -(-len(got) // 25) and {p for p, _ in records} == {0}
    assert all(len(unpack_readings(json.loads(data))) <= 25 for _, data in records)
    assert _rows(decode_readings_records(data for _, data in records)) == _rows(got)


def test_batch_records_per_partition_round_trip_through_every_reader():
    msgs = [_message(k, i, None) for i in range(40) for k in (0, 1)]
    got = validate_envelopes([pack_raw(msgs, 9)], NOW)
    records = got.by_partition(4)
    back = []
    for p, data in records:
        rec = json.loads(data)
        assert rec["v"] == 2 and rec["type"] == "readings" and rec["rx"] == 9
        rs = unpack_readings(rec)  # the reader of the sinks, the backtest and the tests
        assert {partition_of(device_key(r.site, r.device).encode(), 4) for r in rs} == {p}
        back += rs
    assert _rows_of(back) == _rows(got)
    # the detect stage's decoder reads the same records (plus status records) into the same columns
    status = Validated()
    validate_message(gateway_topic("s-1", "gw-01", "status"), b'{"online": false}', NOW, status)
    validate_message("sw/s-1/crane/tc-01/status", b'{"online": false, "reason": "power_off"}', NOW, status)
    rb = decode_readings_records([*(data for _, data in records), pack_status(status.statuses[0]),
                                  pack_device_status(status.device_statuses[0])])
    assert _rows(rb) == _rows(got)
    assert rb.statuses == status.statuses and rb.device_statuses == status.device_statuses


def test_detect_decoder_reads_v1_and_single_device_v2_records():
    out = one("sw/s1/crane/tc-01/load", {"ts": NOW, "value": 3.0, "unit": "t"})
    v1 = json.dumps({"v": 1, "type": "readings", "site": "s1", "device": "tc-01", "family": "crane",
                     "m": ["load"], "ts": [NOW], "val": [3.0]}).encode()
    rb = decode_readings_records([pack_readings(out.readings, NOW), v1])
    assert _rows(rb) == [("s1", "tc-01", "crane", "", "load", NOW, 3.0)] * 2
