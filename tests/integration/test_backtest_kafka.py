"""Backtest a time range of ``sw.readings`` and publish rules to ``sw.config`` — on a real local broker (Tansu)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from kafka import KafkaProducer

from tuning.rules_cli import rules
from sitewatch.contracts import TOPIC_CONFIG, TOPIC_READINGS, GatewayStatus, Reading, pack_readings, pack_status
from app.localstack import LocalStack, free_port
from sitewatch.rules import RuleSet, load_rules
from tuning.backtest import backtest
from tests.conftest import read_topic

pytestmark = pytest.mark.integration

REPO_RULES = Path(__file__).resolve().parents[2] / "config" / "rules"
T0 = 1_714_953_600_000  # 2024-05-06T00:00:00Z


@pytest.fixture(scope="module")
def kafka(tmp_path_factory):
    stack = LocalStack(tmp_path_factory.mktemp("stack"), free_port(), free_port()).start()
    yield stack
    stack.stop()


def produce(bootstrap: str, records: list[tuple[str, bytes, int]]) -> None:
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for key, value, ts in records:
        p.send(TOPIC_READINGS, key=key.encode(), value=value, timestamp_ms=ts)
    p.flush()
    p.close()


def crane_record(device: str, start: int, values: list[float]) -> tuple[str, bytes, int]:
    rs = [Reading("s-01", "crane", device, "load", start + i * 1000, v) for i, v in enumerate(values)]
    return f"s-01/{device}", pack_readings(rs, start + len(values) * 1000), start + len(values) * 1000


def test_backtest_reads_a_time_range_of_packed_readings(kafka, tmp_path):
    hour = 3_600_000
    produce(kafka.bootstrap, [
        crane_record("tc-01", T0 - hour, [9.6, 9.6, 4.0]),       # before the range: must not count
        crane_record("tc-01", T0 + 60_000, [4.0, 9.3, 9.3, 4.0]),  # in range: yellow at 10 t, nothing at 12 t
        crane_record("tc-02", T0 + 90_000, [4.0, 11.5, 11.5, 4.0]),  # in range: red at 10 t, yellow at 12 t (95.8 %)
        ("s-01/gateway:gw-01", pack_status(GatewayStatus("s-01", "gw-01", T0 + 120_000, False)), T0 + 120_000),
        ("s-01/tc-01", b"{not json", T0 + 130_000),
        crane_record("tc-01", T0 + 2 * hour, [11.9, 11.9, 4.0]),   # after the range: its partition stops here
    ])
    cand = tmp_path / "cand"
    (cand / "sites").mkdir(parents=True)
    (cand / "sites" / "s.yaml").write_text("site: s-01\nfamily_overrides:\n  crane: {rated_load_t: 12.0}\n")
    base = tmp_path / "base"
    base.mkdir()
    res = CliRunner().invoke(backtest, [
        "--kafka-topic", TOPIC_READINGS, "--bootstrap", kafka.bootstrap, "--from", "2024-05-06T00:00:00Z",
        "--to", "2024-05-06T01:00:00Z", "--rules", str(cand), "--baseline", str(base), "--json"],
        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["input"]["rows_valid"] == 8, "only the two in-range records"
    assert rep["input"]["gateway_statuses"] == 1
    assert rep["input"]["rejected"] == {"bad_record": 1}
    base_t = {(t["device"], t["kind"]): t["peak_level"] for t in rep["configs"]["baseline"]["tickets_list"]}
    # --to runs the deadman clock to the end of the range: both cranes stop reporting at ~00:02, so they are
    # silent long before 01:00 (crane limit: 60 s), just as the live pipeline would have said
    assert base_t == {("tc-01", "crane.overload"): "yellow", ("tc-02", "crane.overload"): "red",
                      ("gateway:gw-01", "fault.gateway_offline"): "orange",
                      ("tc-01", "fault.silent"): "orange", ("tc-02", "fault.silent"): "orange"}
    cand_t = {(t["device"], t["kind"]): t["peak_level"] for t in rep["configs"]["candidate"]["tickets_list"]}
    assert cand_t[("tc-02", "crane.overload")] == "yellow", "11.5 t is 95.8 % of 12 t"
    assert ("tc-01", "crane.overload") not in cand_t
    d = rep["diff"]
    assert [(t["device"], t["kind"]) for t in d["suppressed"]] == [("tc-01", "crane.overload")]
    assert [(t["device"], t["baseline_peak_level"], t["candidate_peak_level"]) for t in d["level_changes"]] == [
        ("tc-02", "red", "yellow")]


def test_publish_sends_one_valid_record_to_sw_config(kafka, tmp_path, monkeypatch):
    monkeypatch.setenv("USER", "ops-wang")
    res = CliRunner().invoke(rules, ["publish", str(REPO_RULES), "--bootstrap", kafka.bootstrap],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert f"to {TOPIC_CONFIG}" in res.stdout
    records = read_topic(kafka.bootstrap, TOPIC_CONFIG, min_records=1, timeout=20)
    assert len(records) == 1
    r = records[0]
    assert r.key == b"rules"
    value = json.loads(r.value)
    assert set(value) == {"v", "fingerprint", "text", "published_ms", "author"}
    assert value["v"] == 1 and value["author"] == "ops-wang"
    parsed = RuleSet.from_yaml_text(value["text"])  # what a worker does on hot reload
    assert parsed.fingerprint == value["fingerprint"] == load_rules(REPO_RULES).fingerprint

    bad = tmp_path / "bad"
    (bad / "sites").mkdir(parents=True)
    (bad / "sites" / "x.yaml").write_text("site: x-01\ndevices:\n  tc-09: {family: crane, rated_load_t: 0}\n")
    res = CliRunner().invoke(rules, ["publish", str(bad), "--bootstrap", kafka.bootstrap])
    assert res.exit_code == 1 and "x.yaml:3: devices.tc-09.rated_load_t" in res.stderr
    assert len(read_topic(kafka.bootstrap, TOPIC_CONFIG, timeout=3)) == 1, "the invalid config was not sent"
