"""Real site streams through the real pipeline (mosquitto → bridge → Tansu → Faust worker → SQLite → webhook):
a gateway that loses its 4G link buffers through an overload and flushes it back newest-first, shuffled, one frame
twice; another gateway with dozens of devices goes dark and returns. Event time is wall time (speed 1), so the
deadman clock and the data agree; the outages are shortened to a minute and the deadman floors with them."""

from __future__ import annotations

import time

import pytest

from backlog.models import InhibitedFinding
from backlog.store import Backlog
from ingest.fieldstreams import generate, publish_scenario
from sitewatch.contracts import TOPIC_DLQ, now_ms
from tests.conftest import read_topic, wait_until

pytestmark = pytest.mark.integration

S = 1000
# The stream's devices report every 1-2 s: with the families' real floors (60 s to 5 min) a one-minute outage
# would never become a silence, and inhibition would go untested. Lower floors and a short gateway grace make the
# silences real within the minute, so they must be inhibited by the gateway faults; "late" starts at 10 s.
RULES = """
lateness:
  late_after: 10s
faults:
  gateway_grace: 10s
families:
  crane: {silent_floor: 5s}
  formwork: {silent_floor: 5s}
  electrical: {silent_floor: 5s}
  battery: {silent_floor: 5s}
"""


@pytest.mark.rules(RULES)
def test_buffered_overload_is_one_late_major_ticket_and_a_dark_gateway_is_one_fault(pipeline):
    fs = generate("field-mix", start_ms=now_ms() + 2 * S, duration_ms=160 * S, seed=11, site="fd-0042",
                  components=("gateway-outage", "buffered-flush"), crane_interval_s=1.0, gw_crane_interval_s=1.0,
                  fast_interval_s=2.0, pit_interval_s=20.0, frame_s=2.0, gateway_devices=12,
                  gw_outage_at_s=70.0, gw_outage_s=50.0, will_delay_s=5.0,
                  bf_frame_s=2.0, bf_fast_interval_s=2.0, bf_outage_at_s=15.0, bf_outage_s=45.0,
                  overload_after_s=12.0, overload_s=12.0, pit_rate=False, bf_will_delay_s=5.0, bf_max_items=40)
    m = fs.manifest
    (overload,) = [h for h in m.hazards if h.kind == "crane.overload"]
    assert overload.buffered and m.outages[1].flush_order == "reverse" and m.outages[1].duplicated_frames
    time.sleep(max(0.0, (fs.events[0].arrival_ms - now_ms()) / 1000))
    sent = publish_scenario("127.0.0.1", pipeline.stack.mqtt_port, fs.events, speed=1.0)
    assert sent == len(fs.events)

    backlog = Backlog(pipeline.db_url, create=False)

    def settled():
        ts = backlog.tickets()
        overloads = [t for t in ts if t.kind == "crane.overload"]
        gw = [t for t in ts if t.kind == "fault.gateway_offline" and not t.active]
        return (overloads, ts) if overloads and overloads[0].cleared_ms and len(gw) == 2 else None

    overloads, tickets = wait_until(settled, 90, "the late overload ticket and both gateway faults to clear")
    time.sleep(5)  # a duplicate would have arrived by now
    tickets = backlog.tickets()

    # the overload inside the buffered outage: one ticket, back-dated to when it happened, with its peak, major
    (t,) = [t for t in tickets if t.kind == "crane.overload"]
    assert (t.device, t.late, t.peak_level, t.major) == (overload.device, True, 3, True)
    assert t.opened_ms == overload.start_ms and t.first_breach_ms == overload.start_ms
    assert t.peak_value == pytest.approx(overload.peak_value, abs=1e-3) and t.peak_ts_ms == overload.peak_ts
    assert t.arrival_delay_s > 10 and t.outage_from_ms < overload.start_ms < t.outage_to_ms

    # two gateways went dark: two gateway faults; the silences of the devices behind them are not tickets
    faults = sorted((t.device, t.kind) for t in tickets if t.category == "fault")
    assert faults == [("gateway:gw-01", "fault.gateway_offline"), ("gateway:gw-02", "fault.gateway_offline")]
    with backlog.session() as s:
        inhibited = s.query(InhibitedFinding).all()
    behind = {d.split("/", 1)[1] for gw in m.topology.values() for d in gw}
    assert inhibited, "the silences behind the dark gateways are recorded as inhibited"
    assert {i.device for i in inhibited} <= behind and all(i.resolved_ms for i in inhibited)
    assert {t.kind for t in tickets if t.category == "hazard"} <= {"crane.overload", "crane.moment"}

    # alerted exactly once, and the alert says it is late
    alerts = [a for a in pipeline.receiver.received if a.body["ticket"]["id"] == t.id]
    assert len(alerts) == 1, [a.body["alert_id"] for a in alerts]
    assert alerts[0].body["ticket"]["late"] is True and alerts[0].body["finding"]["evidence"]["late"] is True
    assert not [a for a in pipeline.receiver.received if a.body["ticket"]["kind"] == "fault.silent"]
    dlq = read_topic(pipeline.stack.bootstrap, TOPIC_DLQ, timeout=3)
    assert not [r for r in dlq if b"too_late" in r.value]
