"""With the real backlog: a red pit alarm's own outbox payload is routed by company (from the org tree), reaches
the site officer with a signed acknowledgement link, escalates to the company manager when nobody acknowledges;
acknowledging by the link (real uvicorn + the backlog API) acknowledges the ticket as the officer and stops the
escalation. Ticket state and company come from ``Backlog.ticket_state`` / ``Backlog.company_of`` — what the worker wires in."""

from __future__ import annotations

import re

import httpx
import pytest

from alerts import links
from backlog import orgs
from backlog.store import Backlog
from sitewatch.findings import Level
from tests.alerts.conftest import MIN, config, hook, make_notifier, run, to
from tests.backlog.conftest import DEMO_ORG, ApiServer, finding

CFG = """
defaults:
  group_wait: 0
  retry_backoff: 0.01s
  remind_red_every: 0
  ack_link_ttl: 3650d   # the test clock is fixed in 2026-10; the API checks expiry against the wall clock
  ticket_url: "{api}/tickets/{{id}}"
  ack_url: "{api}/ack/{{token}}"
receivers:
  wang: {{user: wang.officer, channels: [{wang}]}}
  zhao: {{user: zhao.manager, channels: [{zhao}]}}
routes:
  - name: jianan
    match: {{company: jianan}}
    group_by: []
    tiers:
      - {{receivers: [wang]}}
      - {{after: 15min, receivers: [zhao]}}
"""


@pytest.fixture
def world(tmp_path, http, secrets_env, clock):
    url = f"sqlite:///{tmp_path / 'backlog.db'}"
    b = Backlog(url, clock=lambda: int(clock() * 1000))
    orgs.import_org(b, DEMO_ORG)
    api = ApiServer(b, tmp_path / "evidence").start()
    cfg = config(CFG, api=api.url, wang=hook(http, "wang"), zhao=hook(http, "zhao"))
    readers = Backlog(url, create=False)
    n = make_notifier(cfg, url, clock, company_of=readers.company_of)
    n.ticket_state = readers.ticket_state
    yield b, api, n
    api.stop()


def open_red_pit(b: Backlog, clock, device: str) -> dict:
    ts = int(clock() * 1000)
    b.apply_findings([finding(site="cz-0001", device=device, level=Level.RED, ts=ts, value=31.0, threshold=30.0)])
    pending = b.pending_alerts()
    b.mark_published([i for i, _ in pending])
    (alert,) = [a for _, a in pending]
    return alert


def ack_link(http, who: str, tid: int) -> str:
    (req,) = [r for r in http.got("/hook") if to(r) == who and r.json["ticket"]["id"] == tid]
    m = re.search(r"(http://\S+/ack/\S+)", req.json["text"])
    assert m, req.json["text"]
    return m.group(1)


def test_red_pit_alarm_escalates_unless_acknowledged_by_the_link(world, http, clock):
    b, api, n = world
    a1 = open_red_pit(b, clock, "pit-01")
    a2 = open_red_pit(b, clock, "pit-02")
    run(n.deliver(a1))
    run(n.deliver(a2))
    assert sorted((to(r), r.json["ticket"]["id"]) for r in http.got("/hook")) == [("wang", a1["ticket"]["id"]),
                                                                                   ("wang", a2["ticket"]["id"])]
    t2 = a2["ticket"]["id"]
    link = ack_link(http, "wang", t2)
    with httpx.Client(timeout=10) as c:
        page = c.get(link)  # what a chat-app link preview does: must NOT acknowledge
        assert page.status_code == 200 and "<form method=post>" in page.text
        assert b.ticket(t2).status == "open"
        done = c.post(link)
        assert done.status_code == 200 and "Acknowledged" in done.text
        again = c.post(link)
        assert "already acknowledged" in again.text
        bad = c.post(link[:-3] + ("aaa" if not link.endswith("aaa") else "bbb"))
        assert bad.status_code == 403
    t = b.ticket(t2)
    assert t.status == "acknowledged" and t.acknowledged_ms is not None
    ev = [e for e in b.events(t2) if e.action == "acknowledged"]
    assert len(ev) == 1 and ev[0].actor == "wang.officer"

    clock.advance(15 * MIN)
    run(n.tick())
    esc = [(to(r), r.json["ticket"]["id"], r.json["kind"]) for r in http.got("/hook") if to(r) == "zhao"]
    assert esc == [("zhao", a1["ticket"]["id"], "escalation")], "only the unacknowledged ticket escalates"


def test_expired_or_foreign_tokens_are_refused(world, clock):
    b, api, n = world
    a = open_red_pit(b, clock, "pit-03")
    tid = a["ticket"]["id"]
    with httpx.Client(timeout=10) as c:
        expired = links.make_token("ack-secret", tid, "wang.officer", "wang", 1)
        assert c.post(f"{api.url}/ack/{expired}").status_code == 403
        forged = links.make_token("not-the-secret", tid, "wang.officer", "wang", 4_000_000_000)
        assert c.post(f"{api.url}/ack/{forged}").status_code == 403
        # a valid token for a user who may not acknowledge this site's tickets
        other = links.make_token("ack-secret", tid, "li.officer", "li", 4_000_000_000)
        r = c.post(f"{api.url}/ack/{other}")
        assert r.status_code == 404 and b.ticket(tid).status == "open"
        ok = links.make_token("ack-secret", tid, "wang.officer", "wang", 4_000_000_000)
        assert c.post(f"{api.url}/ack/{ok}").status_code == 200 and b.ticket(tid).status == "acknowledged"
