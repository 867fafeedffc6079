"""Rules published on sw.config reach the running worker without a restart; an invalid config is rejected with
the line that is wrong, and the previous config keeps running."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from kafka import KafkaProducer

from backlog.store import Backlog
from sitewatch.contracts import TOPIC_CONFIG, now_ms, reading_topic
from app.localstack import sitewatch_argv
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

LOAD = reading_topic("hr-01", "crane", "tc-01", "load")


def test_published_rules_apply_live_and_a_bad_config_is_rejected(pipeline, sensor, tmp_path):
    rules = tmp_path / "rules"
    (rules / "sites").mkdir(parents=True)
    (rules / "sites" / "hr-01.yaml").write_text("site: hr-01\ndevices:\n  tc-01: {family: crane, rated_load_t: 20.0}\n")
    worker = pipeline.procs["worker"]
    out = subprocess.run(sitewatch_argv("--kafka", pipeline.stack.bootstrap, "rules", "publish", str(rules)),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    wait_until(lambda: "rules applied from sw.config" in worker.tail(200), 30, "the worker to apply the rules")

    # A broken config sent behind the CLI's back (the CLI itself refuses to publish it).
    bad = "site: hr-01\ndevices:\n  tc-01: {family: crane, rated_load_t: -5}\n"
    producer = KafkaProducer(bootstrap_servers=pipeline.stack.bootstrap)
    producer.send(TOPIC_CONFIG, key=b"rules", value=json.dumps({"v": 2, "text": bad, "fingerprint": "bad"}).encode())
    producer.flush()
    producer.close()
    wait_until(lambda: "rejected rules from sw.config" in worker.tail(200), 30, "the worker to reject the bad config")
    log = worker.tail(200)
    assert "rated_load_t" in log and ":3:" in log, "the rejection names the field and the line"

    # Still the published 20 t rating: 11.5 t is 57 %, nothing fires; 19 t is 95 %: yellow.
    t0 = now_ms()
    for i, v in enumerate([11.5, 11.5, 11.5]):
        sensor.publish(LOAD, {"ts": t0 + i * 100, "value": v, "unit": "t"})
    time.sleep(4)
    backlog = Backlog(pipeline.db_url, create=False)
    assert backlog.tickets(site="hr-01") == [], "11.5 t on a 20 t crane must not alarm"
    for i, v in enumerate([19.0, 19.0]):
        sensor.publish(LOAD, {"ts": t0 + 1000 + i * 100, "value": v, "unit": "t"})
    (t,) = wait_until(lambda: backlog.tickets(site="hr-01"), 30, "the yellow ticket under the new rating")
    assert (t.kind, t.peak_level) == ("crane.overload", 1)
    assert t.threshold == pytest.approx(18.0), "90 % of the published 20 t rating"
