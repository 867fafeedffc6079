"""The command ledger on SQLite and PostgreSQL: two-person rule, approval expiry, proposals from tickets, every
step in the ledger and in the site's hash chain (which still verifies). No broker: the ledger decides alone."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from backlog.errors import Conflict, Forbidden, NotFound
from blackbox.schema import entries
from blackbox.verify import verify_site
from commands.ledger import Ledger
from commands.policy import CommandPolicy
from sitewatch.findings import Level
from sitewatch.rules import RuleSet
from tests.backlog.conftest import actor, finding

SITE = "cz-0001"


@pytest.fixture
def ledger(org, clock):
    return Ledger(org, CommandPolicy(approval_ttl_s=60), rules=RuleSet.default(), clock=clock)


def chain(ledger: Ledger, site: str = SITE) -> list[dict]:
    with ledger.engine.connect() as c:
        return [json.loads(r.payload) for r in c.execute(
            select(entries.c.payload).where(entries.c.site == site, entries.c.kind == "command").order_by(entries.c.seq))]


def test_dangerous_command_needs_two_different_approvers(ledger: Ledger):
    b = ledger.backlog
    c = ledger.request(actor(b, "wang.officer"), site=SITE, device="bc-01", family="battery", action="cut_power")
    assert c["state"] == "requested" and c["dangerous"] and c["approvals_needed"] == 2
    with pytest.raises(Forbidden):  # a site officer may ask, not approve a dangerous action
        ledger.approve(c["id"], actor(b, "wang.officer"))
    with pytest.raises(NotFound):  # another company's manager does not even see it
        ledger.approve(c["id"], actor(b, "chen.manager"))
    c = ledger.approve(c["id"], actor(b, "zhao.manager"))
    assert c["state"] == "requested", "one approver is not enough"
    with pytest.raises(Conflict, match="different account"):
        ledger.approve(c["id"], actor(b, "zhao.manager"))
    assert ledger.to_send() == [], "nothing goes out on a single approval"
    c = ledger.approve(c["id"], actor(b, "sun.supervisor"))
    assert c["state"] == "approved"
    assert [a["actor"] for a in c["approvals"]] == ["zhao.manager", "sun.supervisor"]
    (sent,) = ledger.to_send()
    assert sent.id == c["id"] and sent.action == "cut_power" and sent.gateway == "gw-01"
    steps = [e["action"] for e in ledger.get(c["id"])["events"]]
    assert steps == ["requested", "approval", "approval", "sent"]
    assert [e["step"] for e in chain(ledger)] == steps, "every ledger step is in the hash chain, in order"
    assert verify_site(ledger.engine, SITE).ok


def test_single_approver_then_the_window_closes(ledger: Ledger, clock):
    b = ledger.backlog
    c = ledger.request(actor(b, "zhao.manager"), site=SITE, device="tc-01", family="crane", action="lock_lifting")
    assert c["state"] == "requested" and len(c["approvals"]) == 1  # the requester counts once
    with pytest.raises(Conflict):
        ledger.approve(c["id"], actor(b, "zhao.manager"))
    clock.advance(61_000)
    assert ledger.expire_stale() == [c["id"]]
    with pytest.raises(Conflict):
        ledger.approve(c["id"], actor(b, "sun.supervisor"))
    assert ledger.get(c["id"])["state"] == "expired" and ledger.to_send() == []
    assert verify_site(ledger.engine, SITE).ok


def test_siren_needs_one_approval_and_policy_is_checked(ledger: Ledger):
    b = ledger.backlog
    c = ledger.request(actor(b, "wang.officer"), site=SITE, device="tc-01", action="siren")
    assert c["state"] == "approved" and not c["dangerous"]
    with pytest.raises(Forbidden):
        ledger.request(actor(b, "zhou.ops"), site=SITE, device="tc-01", action="siren")
    with pytest.raises(NotFound):
        ledger.request(actor(b, "li.officer"), site=SITE, device="tc-01", action="siren")
    with pytest.raises(Exception, match="does not apply"):
        ledger.request(actor(b, "wang.officer"), site=SITE, device="tc-01", family="crane", action="cut_power")
    d = ledger.request(actor(b, "zhao.manager"), site=SITE, device="bc-01", family="battery", action="cut_power")
    d = ledger.decline(d["id"], actor(b, "sun.supervisor"), "not needed")
    assert d["state"] == "declined" and ledger.to_send()[0].id == c["id"]


def runaway(level=Level.RED, device="bc-01"):
    return finding(site=SITE, device=device, family="battery", kind="battery.temp", level=level, value=66.0,
                   metric="pack_temp", threshold=65.0)


def test_proposal_from_a_finding_waits_for_people(ledger: Ledger):
    b = ledger.backlog
    b.apply_findings([runaway(), runaway(Level.ORANGE, device="bc-02")])
    (cid,) = ledger.propose_from_tickets()  # the red one only (min_level red)
    assert ledger.propose_from_tickets() == [], "one proposal per ticket and rule"
    c = ledger.get(cid)
    assert c["state"] == "proposed" and c["source"] == "proposal" and c["device"] == "bc-01"
    assert c["ticket_id"] == b.tickets(site=SITE, kind="battery.temp")[0].id
    assert ledger.to_send() == []
    ledger.approve(cid, actor(b, "zhao.manager"))
    assert ledger.to_send() == [], "a dangerous proposal needs two people too"
    ledger.approve(cid, actor(b, "sun.supervisor"))
    assert [c.id for c in ledger.to_send()] == [cid]
    assert [e["step"] for e in chain(ledger)] == ["proposed", "approval", "approval", "sent"]


def test_auto_only_when_the_sites_file_says_so(org, clock):
    rules = RuleSet.from_yaml_text(f"site: {SITE}\nproposals:\n  - {{name: battery-runaway-cut-power, auto: true}}\n")
    ledger = Ledger(org, CommandPolicy(), rules=rules, clock=clock)
    org.apply_findings([runaway(), finding(site="cz-0002", device="bc-01", family="battery", kind="battery.temp",
                                           level=Level.RED, value=66.0, metric="pack_temp", threshold=65.0)])
    made = {ledger.get(c)["site"]: ledger.get(c) for c in ledger.propose_from_tickets()}
    assert made[SITE]["state"] == "approved", "auto: true in cz-0001's file"
    assert made["cz-0002"]["state"] == "proposed", "no auto for a site that did not say so"
    assert [c.site for c in ledger.to_send()] == [SITE]
    with pytest.raises(Exception, match="site's own file"):
        RuleSet.from_yaml_text("proposals:\n  - {name: x, kinds: [battery.temp], action: cut_power, auto: true}\n")


def test_migrations_up_down_models_match_and_events_are_append_only(db_url):
    from sqlalchemy import text

    from commands.schema import METADATA, MIGRATIONS
    from sitewatch.db import make_engine
    from tests.conftest import down_and_up_again, schema_drift

    engine = make_engine(db_url)
    try:
        MIGRATIONS.upgrade(engine)
        assert MIGRATIONS.current(engine) == MIGRATIONS.head() == "0001_commands"
        assert schema_drift(engine, METADATA, "alembic_version_commands") == []
        with engine.begin() as c:
            c.execute(text("INSERT INTO command_events (command_id, at_ms, action, actor, detail) "
                           "VALUES ('x', 1, 'requested', 'a', '{}')"))
        for stmt in ("UPDATE command_events SET actor = 'b'", "DELETE FROM command_events"):
            with pytest.raises(Exception, match="append-only"):
                with engine.begin() as c:
                    c.execute(text(stmt))
        down_and_up_again(engine, MIGRATIONS, METADATA)
    finally:
        engine.dispose()
