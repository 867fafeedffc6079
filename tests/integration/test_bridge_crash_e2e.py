"""The bridge acknowledges MQTT only after Kafka: killed mid-stream and restarted with the same client id, it
gets the unacknowledged messages again from the broker's persistent session — none is lost."""

from __future__ import annotations

import threading
import time

import pytest

from sitewatch.contracts import now_ms, reading_topic
from tests.conftest import wait_for_readings

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

    seen = wait_for_readings(pipeline.stack.bootstrap, "br-01", "jc-01", n)
    assert seen == {start + i * 10 for i in range(n)}
