"""The wall page's server side through the REAL HTTP API (uvicorn on a free port): the same authentication and
site scoping as /tickets, cookie sessions that die with their token, signed login links, the event stream, and
the chart library served from the project's own install (no CDN)."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from backlog import orgs
from backlog.api import wall
from sitewatch.findings import Level
from tests.backlog.conftest import finding


def _seed(b):
    b.apply_findings([finding(site="cz-0001", device="pit-01"),
                      finding(site="cz-0412", device="tc-01", family="crane", kind="crane.overload", level=Level.RED,
                              major=True),
                      finding(site="cz-0003", device="pit-01", kind="fault.silent", category="fault")])


def _login(server, token: str) -> httpx.Client:
    c = httpx.Client(base_url=server.url, timeout=10)
    r = c.post("/wall/session", json={"token": token})
    assert r.status_code == 200, r.text
    return c


def _events(c: httpx.Client, n: int, timeout: float = 10.0, until=None) -> list[dict]:
    """The stream's ``overview`` events: ``n`` of them, or up to the first for which ``until`` is true."""
    out = []
    deadline = time.monotonic() + timeout
    with c.stream("GET", "/wall/api/stream", timeout=timeout) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "overview":
                out.append(json.loads(line[6:]))
                if len(out) >= n or (until is not None and until(out[-1])):
                    break
            assert time.monotonic() < deadline
    return out


def test_anonymous_gets_the_login_page_and_no_data(server, org):
    c = httpx.Client(base_url=server.url, timeout=10)
    page = c.get("/wall")
    assert page.status_code == 200 and 'id="login"' in page.text and "sw_" in page.text
    for path in ("/wall/api/overview", "/wall/api/site/cz-0001", "/wall/api/stream"):
        assert c.get(path).status_code == 401, path
    assert c.post("/wall/session", json={"token": "sw_nope"}).status_code == 401
    assert c.post("/wall/session", data={"token": ""}).status_code == 401
    assert c.get("/wall/api/overview", cookies={wall.COOKIE: "forged.cookie"}).status_code == 401


def test_session_cookie_scoping_and_revocation(server, org):
    _seed(org)
    tok = orgs.create_token(org, "wang.officer")  # site officer of cz-0001 and cz-0002
    c = httpx.Client(base_url=server.url, timeout=10)
    r = c.post("/wall/session", data={"token": tok})
    cookie = r.headers["set-cookie"]
    assert r.status_code == 200 and "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/wall" in cookie
    assert tok not in cookie
    assert 'id="overview"' in c.get("/wall").text  # the wall itself now

    o = c.get("/wall/api/overview").json()
    assert {s["site"] for s in o["sites"]} == {"cz-0001", "cz-0002"}
    assert o["majors"] == [] and o["totals"]["open"] == 1 and o["by_level"] == {"3": 0, "2": 1, "1": 0}
    assert {e["site"] for e in o["feed"]} == {"cz-0001"}
    assert {d["site"] for d in o["devices"]} == {"cz-0001", "cz-0002"}
    assert c.get("/wall/api/site/cz-0412").status_code == 404  # not even its existence
    assert c.get("/wall/api/site/cz-0001").json()["site"]["name"] == "武进滨湖花园二期"
    assert {s["site"] for s in _events(c, 1)[0]["sites"]} == {"cz-0001", "cz-0002"}

    # the API's bearer header works too; a manager sees the company's sites
    mgr = httpx.Client(base_url=server.url, timeout=10,
                       headers={"Authorization": f"Bearer {orgs.create_token(org, 'zhao.manager')}"})
    assert {s["site"] for s in mgr.get("/wall/api/overview").json()["sites"]} == {"cz-0001", "cz-0002"}

    # revoking the token ends the cookie session at once
    orgs.revoke_token(org, tok[:10])
    assert c.get("/wall/api/overview").status_code == 401
    assert 'id="login"' in c.get("/wall").text


def test_supervisor_sees_the_city(server, org):
    _seed(org)
    c = _login(server, orgs.create_token(org, "sun.supervisor"))
    o = c.get("/wall/api/overview").json()
    by_site = {s["site"]: s for s in o["sites"]}
    assert set(by_site) == {"cz-0001", "cz-0002", "cz-0003", "cz-0412", "fd-0001"}  # org file + config/sites.yaml
    assert by_site["cz-0412"]["lat"] == pytest.approx(31.6493) and by_site["cz-0412"]["stop_work"] == 1
    assert by_site["cz-0412"]["worst"] == 3 and by_site["cz-0001"]["worst"] == 2
    assert o["by_family"]["crane"] == 1 and o["by_family"]["pit"] == 1
    (m,) = o["majors"]
    assert (m["site"], m["kind"], m["stop_work"], m["listed_supervision"]) == ("cz-0412", "crane.overload", True, True)
    assert o["device_health"]["silent"] == 1
    assert next(d for d in o["devices"] if d["state"] != "ok")["site"] == "cz-0003"
    assert o["totals"] == {"open": 2, "majors": 1, "stop_work": 1, "overdue": 0, "listed": 1, "faults": 1}


def test_stream_pushes_a_new_hazard(server, org):
    c = _login(server, orgs.create_token(org, "sun.supervisor"))

    def later():
        time.sleep(1.5)
        _seed(org)

    import threading

    th = threading.Thread(target=later)
    th.start()
    t0 = time.monotonic()
    got = _events(c, 10, timeout=15, until=lambda ev: ev["majors"])
    th.join()
    assert got[0]["majors"] == [] and got[-1]["majors"][0]["site"] == "cz-0412"
    assert time.monotonic() - t0 < 6


def test_signed_login_link(server, org):
    tok = orgs.create_token(org, "li.officer")
    c = httpx.Client(base_url=server.url, timeout=10)
    r = c.get(wall.login_link(server.url, tok).removeprefix(server.url), follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/wall"
    assert {s["site"] for s in c.get("/wall/api/overview").json()["sites"]} == {"cz-0412"}
    expired = wall.login_link(server.url, tok, ttl_s=-1).removeprefix(server.url)
    assert httpx.get(server.url + expired).status_code == 403
    other = wall.login_link(server.url, tok, secret="not-the-servers").removeprefix(server.url)
    assert httpx.get(server.url + other).status_code == 403


def test_chart_library_is_served_locally(server):
    c = httpx.Client(base_url=server.url, timeout=10)
    js = c.get("/wall/static/vendor/echarts.min.js")
    assert js.status_code == 200 and len(js.content) > 500_000, "run `make deps` (npm ci) first"
    assert c.get("/wall/static/../wall.py").status_code == 404
    for name in ("index.html", "login.html", "wall.js", "wall.css"):
        text = (wall.STATIC / name).read_text(encoding="utf-8")
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", text), f"{name} loads something from the network"


def test_sites_file(tmp_path):
    assert wall.load_sites()["cz-0412"] == {"name": "南夏墅安置房", "district": "武进区", "lat": 31.6493,
                                           "lon": 119.9885}
    bad = tmp_path / "sites.yaml"
    bad.write_text("cz-1: {lat: 95, lon: 120}\n")
    with pytest.raises(ValueError, match="out of range"):
        wall.load_sites(bad)
    assert wall.load_sites(tmp_path / "missing.yaml") == {}
