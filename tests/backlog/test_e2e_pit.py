"""End to end: a simulated pit alarm applied through the pipeline's contract (apply_findings) becomes a ticket
that people then work to closure through the real HTTP API, with evidence, the four-eyes rule and the audit
trail — on SQLite and PostgreSQL."""

from __future__ import annotations

from sitewatch.findings import Level
from tests.backlog.conftest import HOUR, T0, finding

JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + b"\x00" * 100


def pit(level, ts, value):
    return finding(site="cz-0003", device="pit-01", family="pit", kind="pit.cumulative", level=level, ts=ts,
                   value=value, metric="wall_top_horizontal_mm", threshold=30.0)


def test_pit_alarm_worked_to_closure_through_api(api, org):
    server, c = api
    # the wall creeps: yellow (70 %), then red (100 % of the 30 mm alarm value); a redelivery changes nothing
    assert org.apply_findings([pit(Level.YELLOW, T0, 21.5)]) == 1
    assert org.apply_findings([pit(Level.RED, T0 + 6 * HOUR, 30.4), pit(Level.YELLOW, T0, 21.5)]) == 1
    (t,) = org.tickets(site="cz-0003", kind="pit.cumulative")
    assert [p["alert_id"] for _, p in org.pending_alerts()] == [f"t{t.id}-opened-L1", f"t{t.id}-upgraded-L3"]

    chen, sup = c["chen.manager"], c["sun.supervisor"]  # tianyuan's manager owns cz-0003
    listed = chen.get("/tickets", params={"family": "pit", "status": "open"}).json()
    assert [x["id"] for x in listed["items"]] == [t.id] and listed["items"][0]["peak_level"] == 3
    assert listed["items"][0]["deadline_ms"] == T0 + 6 * HOUR + 24 * HOUR

    tid = t.id
    assert chen.post(f"/tickets/{tid}/acknowledge", json={"note": "evacuating the pit edge"}).status_code == 200
    assert chen.post(f"/tickets/{tid}/start-rectification", json={"note": "adding struts"}).status_code == 200
    up = chen.post(f"/tickets/{tid}/attachments", params={"filename": "struts.jpg"}, content=JPEG,
                   headers={"Content-Type": "image/jpeg"})
    assert up.status_code == 201
    r = chen.post(f"/tickets/{tid}/rectify", json={"note": "two extra struts", "attachment_ids": [up.json()["id"]]})
    assert r.status_code == 200 and r.json()["status"] == "rectified"
    # the sensor still alarms: nobody may close it yet
    assert sup.post(f"/tickets/{tid}/verify", json={}).status_code == 409
    org.apply_findings([pit(Level.CLEAR, T0 + 30 * HOUR, 18.0)])
    # the rectifier may not verify their own work; a supervisor may
    assert chen.post(f"/tickets/{tid}/verify", json={}).status_code == 409
    r = sup.post(f"/tickets/{tid}/verify", json={"note": "struts inspected, displacement stable"})
    assert r.status_code == 200 and r.json()["status"] == "closed" and r.json()["closed_by"] == "sun.supervisor"

    events = sup.get(f"/tickets/{tid}/events").json()
    assert [(e["actor"], e["action"]) for e in events] == [
        ("pipeline", "opened"), ("pipeline", "level_upgraded"), ("chen.manager", "acknowledged"),
        ("chen.manager", "rectification_started"), ("chen.manager", "evidence_attached"),
        ("chen.manager", "rectified"), ("pipeline", "condition_cleared"), ("sun.supervisor", "closed")]
    assert events[-1]["detail"]["before"]["status"] == "rectified" and events[-1]["detail"]["after"]["status"] == "closed"

    # the wall moves again weeks later: a new ticket, linked to the closed one
    org.apply_findings([pit(Level.ORANGE, T0 + 500 * HOUR, 26.0)])
    again = chen.get("/tickets", params={"status": "open", "family": "pit"}).json()["items"]
    assert len(again) == 1 and again[0]["reopened_from"] == tid
