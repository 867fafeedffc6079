"""Device health: ``device.health`` findings upsert one row per device (out-of-order safe); the API's
/devices/health and /findings/inhibited are site-scoped like /tickets."""

from __future__ import annotations

from tests.backlog.late_helpers import MIN, OUT_FROM, gateway, health, silent

T = OUT_FROM


def test_health_upsert_ignores_older_states(backlog):
    backlog.apply_findings([health("tc-01", "ok", T)])
    backlog.apply_findings([health("tc-01", "silent", T + 2 * MIN, reason="no reading for 120 s")])
    backlog.apply_findings([health("tc-01", "ok", T + MIN)])  # older news, arriving late: ignored
    (h,) = backlog.device_health()
    assert (h.state, h.since_ms, h.reason, h.gateway, h.family) == ("silent", T + 2 * MIN, "no reading for 120 s",
                                                                    "gw-01", "crane")
    # same "since", a later confirmation updates; the same batch in any order ends in the newest state
    backlog.apply_findings([health("tc-01", "inhibited", T + 3 * MIN), health("tc-01", "off", T + 4 * MIN),
                            health("tc-01", "faulty", T + 3 * MIN + 1)])
    (h,) = backlog.device_health()
    assert (h.state, h.since_ms) == ("off", T + 4 * MIN)
    backlog.apply_findings([health("tc-01", "banana", T + 9 * MIN)])  # unknown state: ignored
    assert backlog.device_health()[0].state == "off"


def test_distinct_states_and_filters(backlog):
    states = ["ok", "off", "silent", "faulty", "inhibited"]
    backlog.apply_findings([health(f"d-{s}", s, T) for s in states])
    assert sorted(h.state for h in backlog.device_health()) == sorted(states)
    assert [h.device for h in backlog.device_health(state="silent")] == ["d-silent"]
    assert backlog.tickets() == []


def _seed(org):
    org.apply_findings([health("tc-01", "silent", T, site="cz-0001"), health("fw-01", "ok", T, site="cz-0002",
                                                                             family="formwork", gateway=None),
                        health("tc-01", "faulty", T, site="cz-0412", gateway="gw-9"),
                        gateway(2, T, site="cz-0001"), silent(1, T + 1000, site="cz-0001"),
                        gateway(2, T, gw="gw-9", site="cz-0412"), silent(1, T + 1000, site="cz-0412", gateway="gw-9")])


def test_api_devices_and_inhibited(api, org):
    _, c = api
    _seed(org)
    # wang.officer: cz-0001 and cz-0002 only
    r = c["wang.officer"].get("/devices/health")
    assert r.status_code == 200, r.text
    assert sorted((h["site"], h["device"], h["state"]) for h in r.json()) == [("cz-0001", "tc-01", "silent"),
                                                                             ("cz-0002", "fw-01", "ok")]
    assert c["wang.officer"].get("/devices/health", params={"site": "cz-0412"}).json() == []
    assert [h["device"] for h in c["wang.officer"].get("/devices/health", params={"state": "ok"}).json()] == ["fw-01"]
    assert c["wang.officer"].get("/devices/health", params={"state": "broken"}).status_code == 422
    # li.officer: cz-0412 only
    assert [h["site"] for h in c["li.officer"].get("/devices/health").json()] == ["cz-0412"]
    # the bureau sees everything
    assert len(c["sun.supervisor"].get("/devices/health").json()) == 3
    assert len(c["zhou.ops"].get("/devices/health").json()) == 3
    assert c["anonymous"].get("/devices/health").status_code == 401

    r = c["wang.officer"].get("/findings/inhibited", params={"active": "true"})
    assert r.status_code == 200, r.text
    (row,) = r.json()
    assert (row["site"], row["device"], row["kind"], row["rule"], row["active"]) == (
        "cz-0001", "tc-01", "fault.silent", "gateway-offline-silences", True)
    assert row["evidence"]["gateway"] == "gw-01" and row["resolved_ms"] is None
    assert c["wang.officer"].get("/findings/inhibited", params={"site": "cz-0412"}).json() == []
    assert [x["site"] for x in c["li.officer"].get("/findings/inhibited").json()] == ["cz-0412"]
    assert len(c["sun.supervisor"].get("/findings/inhibited").json()) == 2
    assert c["anonymous"].get("/findings/inhibited").status_code == 401

    org.apply_findings([gateway(0, T + 3 * MIN, site="cz-0001")])  # gw-01 back online
    assert c["wang.officer"].get("/findings/inhibited", params={"active": "true"}).json() == []
    (row,) = c["wang.officer"].get("/findings/inhibited", params={"active": "false"}).json()
    assert row["resolved_ms"] == T + 3 * MIN and row["active"] is False and row["resolution"] == "source_cleared"


def test_ticket_api_exposes_the_episode(api, org):
    from tests.backlog.late_helpers import ARRIVED, OUT_TO, late_overload_episode

    _, c = api
    org.apply_findings(late_overload_episode())
    (t,) = c["wang.officer"].get("/tickets").json()["items"]
    assert t["late"] is True and (t["outage_from_ms"], t["outage_to_ms"]) == (OUT_FROM, OUT_TO)
    assert t["peak_value"] == 11.5 and t["peak_ts_ms"] == OUT_FROM + 90_000
    assert t["first_breach_ms"] == OUT_FROM + 30_000 and t["clear_value"] == 4.0
    assert t["cleared_ms"] == OUT_FROM + 210_000 and t["arrival_delay_s"] == (ARRIVED - t["opened_ms"]) / 1000
