"""The bridge acknowledges MQTT only after Kafka: killed mid-stream and restarted with the same client id, it
gets the unacknowledged messages again from the broker's persistent session — none is lost."""

from __future__ import annotations

import json
import threading
import time

import pytest

from sitewatch.contracts import TOPIC_READINGS, now_ms, reading_topic, unpack_readings
from tests.conftest import read_topic, wait_until

pytestmark = pytest.mark.integration


def test_bridge_crash_loses_no_acknowledged_reading(pipeline, sensor):
    n = 400
    start = now_ms()
    topic = reading_topic("br-01", "pit", "jc-01", "wall_top_horizontal")

    def publish_all():
        for i in range(n):
            sensor.publish(topic, {"ts": start + i * 10, "value": 5.0 + i * 0.001, "unit": "mm"})
            time.sleep(0.005)

    pub = threading.Thread(target=publish_all)
    pub.start()
    time.sleep(0.5)
    pipeline.procs["bridge"].kill()  # SIGKILL mid-stream; the broker keeps queuing for its persistent session
    time.sleep(1.0)
    pipeline.start_bridge()
    pub.join(60)
    assert "session present=True" in pipeline.procs["bridge"].tail(50), "the restarted bridge resumed its session"

    def all_arrived():
        seen = set()
        for r in read_topic(pipeline.stack.bootstrap, TOPIC_READINGS, min_records=1, timeout=5):
            seen.update(x.ts for x in unpack_readings(json.loads(r.value)) if x.device == "jc-01")
        return seen if len(seen) >= n else None

    seen = wait_until(all_arrived, 90, "every reading published through the crash", interval=1.0)
    assert seen == {start + i * 10 for i in range(n)}
