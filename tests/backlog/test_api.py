"""Authorisation per role and clear 4xx errors, through the REAL HTTP API (uvicorn on a free port, httpx)."""

from __future__ import annotations

import pytest

from backlog import orgs
from sitewatch.findings import Level
from tests.backlog.conftest import finding

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def _seed(b):
    """cz-0001 pit (jianan, wang.officer), cz-0412 crane (huasheng, li.officer), cz-0001 sensor fault."""
    b.apply_findings([finding(), finding(site="cz-0412", device="tc-01", family="crane", kind="crane.overload",
                                         level=Level.RED),
                      finding(kind="fault.silent", category="fault", level=Level.YELLOW, device="pit-02")])
    return {t.kind: t.id for t in b.tickets()}


def test_authentication_required(api, org):
    server, c = api
    assert c["anonymous"].get("/tickets").status_code == 401
    bad = server.client("sw_not-a-real-token")
    assert bad.get("/tickets").status_code == 401
    assert c["anonymous"].get("/health").json() == {"ok": True}
    assert "/tickets/{ticket_id}/verify" in c["anonymous"].get("/openapi.json").json()["paths"]
    # a revoked token stops working
    tok = orgs.create_token(org, "zhou.ops")
    assert server.client(tok).get("/me").json()["role"] == "ops"
    orgs.revoke_token(org, tok[:10])
    assert server.client(tok).get("/me").status_code == 401


def test_site_officer_sees_and_acts_on_own_sites_only(api, org):
    _, c = api
    ids = _seed(org)
    wang = c["wang.officer"]
    assert {t["site"] for t in wang.get("/tickets").json()["items"]} == {"cz-0001"}
    assert wang.get(f"/tickets/{ids['crane.overload']}").status_code == 404  # not even its existence
    assert wang.post(f"/tickets/{ids['crane.overload']}/acknowledge", json={}).status_code == 404
    assert wang.get(f"/tickets/{ids['crane.overload']}/events").status_code == 404
    assert wang.get("/tickets", params={"site": "cz-0412"}).json()["total"] == 0
    r = wang.post(f"/tickets/{ids['pit.cumulative']}/acknowledge", json={"note": "on my way"})
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    li = c["li.officer"]
    assert li.post(f"/tickets/{ids['crane.overload']}/acknowledge", json={}).status_code == 200
    # managers see their company's sites, supervisors and ops see everything
    assert {t["site"] for t in c["zhao.manager"].get("/tickets").json()["items"]} == {"cz-0001"}
    assert c["chen.manager"].get("/tickets").json()["total"] == 0
    assert c["sun.supervisor"].get("/tickets").json()["total"] == 3
    assert c["zhou.ops"].get("/tickets").json()["total"] == 3


def test_role_matrix(api, org):
    _, c = api
    ids = _seed(org)
    pit, fault = ids["pit.cumulative"], ids["fault.silent"]
    # supervisors do not rectify; ops only fault tickets; officers do not flag majors or reopen
    assert c["sun.supervisor"].post(f"/tickets/{pit}/acknowledge", json={}).status_code == 403
    assert c["zhou.ops"].post(f"/tickets/{pit}/acknowledge", json={}).status_code == 403
    assert c["zhou.ops"].post(f"/tickets/{fault}/acknowledge", json={}).status_code == 200
    assert c["wang.officer"].post(f"/tickets/{pit}/major", json={"reason": "x"}).status_code == 403
    assert c["zhao.manager"].post(f"/tickets/{pit}/major", json={"reason": "x"}).status_code == 403
    r = c["sun.supervisor"].post(f"/tickets/{pit}/major", json={"reason": "wall cracking", "credit_points": 5})
    assert r.status_code == 200 and r.json()["major"] and r.json()["stop_work"]
    assert c["zhao.manager"].post(f"/tickets/{pit}/lift-stop-work", json={"note": "ok"}).status_code == 403
    assert c["wang.officer"].get("/reports/monthly", params={"month": "2026-10"}).status_code == 403
    assert c["wang.officer"].get("/audit").status_code == 403
    assert c["sun.supervisor"].get("/audit").status_code == 200
    assert c["wang.officer"].post("/escalations").status_code == 403
    assert c["zhou.ops"].post("/escalations").json() == {"escalated": []}
    # work the major hazard: only a supervisor closes it, after lifting stop-work
    org.apply_findings([finding(level=Level.CLEAR, ts=finding().ts + 1000)])
    w = c["wang.officer"]
    for step, body in (("acknowledge", {}), ("start-rectification", {}), ("rectify", {"note": "anchored"})):
        assert w.post(f"/tickets/{pit}/{step}", json=body).status_code == 200
    r = c["zhao.manager"].post(f"/tickets/{pit}/verify", json={"accept": True})
    assert r.status_code == 403 and "supervisor" in r.json()["detail"]
    assert c["sun.supervisor"].post(f"/tickets/{pit}/verify", json={}).status_code == 409  # stop-work in force
    assert c["sun.supervisor"].post(f"/tickets/{pit}/lift-stop-work", json={"note": "re-inspected"}).status_code == 200
    assert c["sun.supervisor"].post(f"/tickets/{pit}/verify", json={}).json()["status"] == "closed"


def test_bad_input_is_4xx_never_500(api, org):
    _, c = api
    ids = _seed(org)
    s, pit = c["sun.supervisor"], ids["pit.cumulative"]
    cases = [
        s.get("/tickets", params={"page": 0}),
        s.get("/tickets", params={"page_size": 10_000}),
        s.get("/tickets", params={"status": "bogus"}),
        s.get("/tickets", params={"level": "high"}),
        s.get("/tickets", params={"overdue": "perhaps"}),
        s.get("/tickets/abc"),
        s.get("/tickets/999999"),
        s.post(f"/tickets/{pit}/reopen", content=b"{not json", headers={"Content-Type": "application/json"}),
        s.post(f"/tickets/{pit}/reopen", json={"reason": ""}),
        s.post(f"/tickets/{pit}/reopen", json={"reason": "x"}),  # not closed: 409
        s.post(f"/tickets/{pit}/major", json={"reason": "x", "credit_points": -3}),
        s.post(f"/tickets/{pit}/major", json={"reason": "x", "surprise": 1}),
        s.post("/tickets", json={"site": "cz-0001", "family": "pit", "kind": "k", "level": 9, "title": "t"}),
        s.post("/tickets", json={"site": "cz-0001"}),
        s.get("/reports/monthly", params={"month": "2026-13"}),
        s.get("/reports/monthly", params={"month": "October"}),
        s.get("/reports/yearly", params={"year": "20x6"}),
        s.get("/reports/monthly", params={"month": "2026-10", "format": "pdf"}),
    ]
    codes = [r.status_code for r in cases]
    assert all(400 <= x < 500 for x in codes), codes
    assert codes[6] == 404 and codes[9] == 409
    assert "level" in str(cases[12].json()["detail"])  # the field is named


def test_evidence_upload_limits(api, org):
    _, c = api
    ids = _seed(org)
    w, pit = c["wang.officer"], ids["pit.cumulative"]
    w.post(f"/tickets/{pit}/acknowledge", json={}), w.post(f"/tickets/{pit}/start-rectification", json={})
    up = lambda data, ctype, name="a.png": w.post(f"/tickets/{pit}/attachments", params={"filename": name},  # noqa: E731
                                                 content=data, headers={"Content-Type": ctype})
    assert up(b"MZ\x90\x00evil", "application/x-msdownload", "a.exe").status_code == 415
    assert up(b"MZ\x90\x00evil", "image/png").status_code == 415  # claims PNG, is not
    assert up(b"", "image/png").status_code == 422
    assert up(b"\x89PNG\r\n\x1a\n" + b"\x00" * (org.policy.evidence_max_bytes + 1), "image/png").status_code == 413
    r = up(PNG, "image/png", "../../etc/passwd.png")
    assert r.status_code == 201 and r.json()["filename"] == "passwd.png" and r.json()["size"] == len(PNG)
    got = w.get(f"/tickets/{pit}/attachments/{r.json()['id']}")
    assert got.status_code == 200 and got.content == PNG and got.headers["content-type"] == "image/png"
    assert c["li.officer"].get(f"/tickets/{pit}/attachments/{r.json()['id']}").status_code == 404
    # an attachment of another ticket cannot be cited as evidence
    assert w.post(f"/tickets/{pit}/rectify", json={"note": "done", "attachment_ids": [999]}).status_code == 422


def test_filters_and_pagination(api, org):
    _, c = api
    org.apply_findings([finding(device=f"d{i:02d}", level=Level(1 + i % 3)) for i in range(12)])
    s = c["sun.supervisor"]
    pages = [s.get("/tickets", params={"page": p, "page_size": 5}).json() for p in (1, 2, 3)]
    assert [len(p["items"]) for p in pages] == [5, 5, 2] and pages[0]["total"] == 12
    assert len({t["id"] for p in pages for t in p["items"]}) == 12
    assert s.get("/tickets", params={"level": 3}).json()["total"] == 4
    assert s.get("/tickets", params={"company": "jianan"}).json()["total"] == 12
    assert s.get("/tickets", params={"company": "huasheng"}).json()["total"] == 0
    assert s.get("/tickets", params={"district": "wujin", "family": "pit", "status": "open"}).json()["total"] == 12
    assert s.get("/tickets", params={"overdue": True}).json()["total"] == 0
    org.clock.advance(25 * 3_600_000)
    assert s.get("/tickets", params={"overdue": True}).json()["total"] == 4  # the red ones (24 h)
    r = s.get("/reports/monthly", params={"month": "2026-10", "format": "csv"})
    assert r.status_code == 200 and r.text.startswith("scope,district,company")
    assert s.get("/reports/yearly", params={"year": 2026}).json()["totals"]["found"] == 12
    assert "<table>" in s.get("/reports/monthly", params={"month": "2026-10", "format": "html"}).text


@pytest.mark.parametrize("who", ["wang.officer", "zhao.manager"])
def test_inspection_ticket_via_api(api, org, who):
    _, c = api
    r = c[who].post("/tickets", json={"site": "cz-0002", "family": "formwork", "kind": "inspection.ties",
                                      "level": 2, "title": "ties missing"})
    assert r.status_code == 201 and r.json()["origin"] == "inspection"
    again = c[who].post("/tickets", json={"site": "cz-0002", "family": "formwork", "kind": "inspection.ties",
                                          "level": 1, "title": "again"})
    assert again.status_code == 409
    assert c["li.officer"].post("/tickets", json={"site": "cz-0002", "family": "f", "kind": "k", "level": 1,
                                                  "title": "t"}).status_code == 404
