"""The command path end to end: the real API (uvicorn, /commands mounted), the command service signing with a key
the test generates, the production mosquitto as shipped (TLS, passwords, the deploy ACL) and the simulated device
verifying, acting and acknowledging. Timings are printed, never asserted."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from backlog import orgs
from backlog.store import Backlog
from blackbox.verify import verify_site
from commands.api import mount
from commands.ledger import ESCALATION_KIND, Ledger
from commands.policy import CommandPolicy
from commands.service import CommandService
from ingest import provision
from ingest.device import CommandEndpoint, connect
from ingest.simulator import SimConfig, Simulator
from sitewatch import commands as wire
from sitewatch.commands import Command
from sitewatch.findings import Level
from sitewatch.rules import RuleSet
from tests.backlog.conftest import DEMO_ORG, ApiServer, finding
from tests.conftest import wait_until
from tests.security.test_mqtt_deployed import Broker

pytestmark = pytest.mark.integration

SITE = "cz-0001"
GW, GW2 = "gw-01", "gw-02"


class Rig:
    """Everything of one test: database, ledger, API, service, device endpoints, an ack watcher."""

    def __init__(self, broker: Broker, tmp: Path, rules: RuleSet | None = None, **policy):
        self.broker = broker
        for gw in (GW, GW2):
            broker.add_gateway(SITE, gw)
        broker.reload(admits=f"{GW2}@{SITE}")
        self.url = f"sqlite:///{tmp / 'sw.db'}"
        self.backlog = Backlog(self.url)
        orgs.import_org(self.backlog, DEMO_ORG)
        pol = dict(retry_s=0.4, max_retries=2, command_ttl_s=30.0, skew_ms=2000)
        pol.update(policy)
        self.ledger = Ledger(self.backlog, CommandPolicy(**pol), rules=rules or RuleSet.default())
        self.key = wire.generate_key()
        self.clients = []
        self.svc_client = self.mqtt(provision.COMMAND_USER)
        self.service = CommandService(self.ledger, self.key, self.svc_client, tick_s=0.1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.service.run, args=(self.stop,), daemon=True)
        self.sim = Simulator(SimConfig(sites=1, devices_per_family=2, site_prefix="cz-", scenario="none"))
        self.device = CommandEndpoint(SITE, GW, self.key.public_key(), skew_ms=2000)
        self.sim.endpoints[SITE] = self.device
        self.gw_client = self.mqtt(f"{GW}@{SITE}")
        self.device.attach(self.gw_client)
        self.acks: list[tuple[str, dict]] = []  # what the command account hears on sw/+/ack/#
        self.watch = self.mqtt(provision.COMMAND_USER)
        self.watch.on_message = lambda _c, _u, m: self.acks.append((m.topic, json.loads(m.payload)))
        self.watch.subscribe("sw/+/ack/#", qos=1)
        self.api = ApiServer(self.backlog, tmp / "evidence")
        mount(self.api.server.config.app, self.ledger)
        self.api.start()
        self.http = {u: self.api.client(orgs.create_token(self.backlog, u))
                     for u in ("wang.officer", "zhao.manager", "sun.supervisor")}
        time.sleep(0.3)  # subscriptions in place

    def mqtt(self, user: str):
        c = connect("127.0.0.1", self.broker.tls_port, f"t-{user}-{time.monotonic_ns()}", user,
                    self.broker.passwords[user], str(self.broker.pki.ca))
        self.clients.append(c)
        return c

    def start_service(self) -> "Rig":
        self.thread.start()
        return self

    def state(self, cid: str) -> str:
        return self.ledger.get(cid)["state"]

    def request_cut_power(self, device: str = "bc-01", gateway: str | None = None) -> str:
        body = {"site": SITE, "device": device, "action": "cut_power", "family": "battery"}
        if gateway:
            body["gateway"] = gateway
        r = self.http["wang.officer"].post("/commands", json=body)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def approve(self, cid: str, *users: str) -> None:
        for u in users:
            r = self.http[u].post(f"/commands/{cid}/approve", json={"note": "checked on camera"})
            assert r.status_code == 200, r.text

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(10)
        for h in self.http.values():
            h.close()
        self.api.stop()
        for c in self.clients:
            c.disconnect()
            c.loop_stop()
        self.backlog.engine.dispose()


@pytest.fixture
def rig(broker: Broker, tmp_path: Path):
    r = Rig(broker, tmp_path)
    yield r
    r.close()


def battery_current(sim: Simulator, device: str) -> float:
    values, _ = sim.values_at(10.0)
    (i,) = [k for k, row in enumerate(sim.rows) if row[1] == "battery" and sim.device_id("battery", row[2]) == device
            and row[3] == "charge_current"]
    return float(values[i])


def test_approved_command_is_acknowledged_end_to_end(rig: Rig):
    rig.start_service()
    assert battery_current(rig.sim, "bc-01") > 1.0
    t0 = time.monotonic()
    cid = rig.request_cut_power()
    r = rig.http["wang.officer"].post(f"/commands/{cid}/approve", json={})
    assert r.status_code == 403, "the requester (a site officer) may not approve a dangerous command"
    rig.approve(cid, "zhao.manager")
    r = rig.http["zhao.manager"].post(f"/commands/{cid}/approve", json={})
    assert r.status_code == 409 and "different account" in r.text
    time.sleep(0.5)
    assert rig.device.applied == [] and rig.state(cid) == "requested", "one approver sent nothing"
    t_approved = time.monotonic()
    rig.approve(cid, "sun.supervisor")
    wait_until(lambda: rig.state(cid) == "done", 10, "the device's done ack in the ledger")
    t_done = time.monotonic()
    ev = {e["action"]: e["at_ms"] for e in rig.ledger.get(cid)["events"]}
    print(f"\nrequest -> done ack {(t_done - t0) * 1000:.0f} ms (includes a deliberate 500 ms single-approver "
          f"check); second approval -> done ack {(t_done - t_approved) * 1000:.0f} ms; ledger sent -> done ack "
          f"{ev['ack_done'] - ev['sent']} ms (service tick 100 ms)")
    assert rig.device.applied == [(cid, "bc-01", "cut_power")]
    assert battery_current(rig.sim, "bc-01") == 0.0 and battery_current(rig.sim, "bc-02") > 1.0
    c = rig.http["sun.supervisor"].get(f"/commands/{cid}").json()
    assert [e["action"] for e in c["events"]] == ["requested", "approval", "approval", "sent", "ack_accepted",
                                                  "ack_done"]
    assert [t for t, _ in rig.acks] == [f"sw/{SITE}/ack/{GW}/bc-01"] * 2
    assert verify_site(rig.backlog.engine, SITE).ok
    res = CliRunner().invoke(__import__("app.cli", fromlist=["main"]).main,
                             ["--db", rig.url, "verify", "--site", SITE])
    assert res.exit_code == 0, res.output


def test_forged_unsigned_expired_and_replayed_commands_are_rejected_by_the_device(rig: Rig):
    """Sent over the real broker by the command account (as if its password leaked, but not the key)."""
    pub = rig.svc_client
    now = int(time.time() * 1000)
    topic = wire.command_topic(SITE, GW, "bc-01")

    def new(**kw) -> Command:
        return Command.new(SITE, GW, "bc-01", kw.pop("action", "cut_power"), kw.pop("issued", now),
                           kw.pop("ttl", 30_000))

    forged = new()
    pub.publish(topic, wire.sign(forged, wire.generate_key()), qos=1)  # another key
    unsigned = new()
    pub.publish(topic, json.dumps({"cmd": unsigned.to_dict()}).encode(), qos=1)
    edited = new()
    env = json.loads(wire.sign(edited, rig.key))
    env["cmd"]["action"] = "restore_power"  # signed cut_power, edited to something else
    pub.publish(topic, json.dumps(env).encode(), qos=1)
    expired = new(issued=now - 60_000, ttl=10_000)
    pub.publish(topic, wire.sign(expired, rig.key), qos=1)
    good = new(action="siren")
    pub.publish(topic, wire.sign(good, rig.key), qos=1)
    pub.publish(topic, wire.sign(good, rig.key), qos=1)  # the same message again: stored ack, no second siren
    reused = Command(**{**good.to_dict(), "action": "cut_power"})  # a new message under a used nonce
    pub.publish(topic, wire.sign(reused, rig.key), qos=1)
    wait_until(lambda: len(rig.acks) >= 8, 10, "an ack for every message")
    time.sleep(0.3)
    by_id: dict[str, list[tuple[str, str]]] = {}
    for _, a in rig.acks:
        by_id.setdefault(a["command_id"], []).append((a["status"], a["reason"]))
    assert by_id[forged.id] == [("rejected", "unknown_key")]
    assert by_id[unsigned.id] == [("rejected", "unsigned")]
    assert by_id[edited.id] == [("rejected", "bad_signature")]
    assert by_id[expired.id] == [("rejected", "expired")]
    assert by_id[good.id] == [("accepted", ""), ("done", ""), ("done", ""), ("rejected", "replay")]
    assert rig.device.applied == [(good.id, "bc-01", "siren")], "acted once, on the one valid command"
    assert rig.device.device("bc-01").power


def test_a_lost_ack_is_retried_without_acting_twice(rig: Rig):
    lost = {"n": 0}
    real = rig.device.handle

    def first_acks_lost(topic, payload):  # the device acts, but its first two acks never reach the broker
        acks = real(topic, payload)
        if lost["n"] < 1:
            lost["n"] += 1
            return []
        return acks

    rig.device.handle = first_acks_lost
    rig.start_service()
    cid = rig.request_cut_power()
    rig.approve(cid, "zhao.manager", "sun.supervisor")
    wait_until(lambda: rig.state(cid) == "done", 10, "done after a retry")
    c = rig.ledger.get(cid)
    assert c["attempts"] == 2 and [e["action"] for e in c["events"]].count("retried") == 1
    assert rig.device.applied == [(cid, "bc-01", "cut_power")], "the retry did not act a second time"
    assert [(a["status"]) for _, a in rig.acks] == ["done"], "the retry was answered with the stored ack"


def test_unanswered_command_is_retried_then_escalated_as_exactly_one_ticket(rig: Rig):
    rig.ledger.policy.command_ttl_s = 3.0
    rig.start_service()
    cid = rig.request_cut_power(gateway=GW2)  # nobody serves gw-02's commands: no answer will come
    rig.approve(cid, "zhao.manager", "sun.supervisor")
    wait_until(lambda: rig.state(cid) == "escalated", 10, "escalation")
    time.sleep(1.0)  # more ticks while escalated: no second ticket
    tickets = rig.backlog.tickets(site=SITE, kind=ESCALATION_KIND)
    assert len(tickets) == 1 and cid in tickets[0].title and tickets[0].level == 3
    assert rig.ledger.escalate(cid) is None, "escalating again does nothing"
    wait_until(lambda: rig.state(cid) == "expired", 10, "expiry")
    c = rig.ledger.get(cid)
    steps = [e["action"] for e in c["events"]]
    assert steps == ["requested", "approval", "approval", "sent", "retried", "retried", "escalated", "expired"]
    assert c["escalation_ticket_id"] == tickets[0].id
    assert len(rig.backlog.tickets(site=SITE, kind=ESCALATION_KIND)) == 1
    assert [s for s, n in rig.service.sent if s == cid] == [cid] * 3
    assert verify_site(rig.backlog.engine, SITE).ok


def test_gateway_credentials_cannot_publish_a_command(rig: Rig):
    """gw-02 of the same site captured a valid signed command for gw-01 and re-publishes it; nothing arrives.
    The same bytes from the command service do arrive (the listener is working)."""
    now = int(time.time() * 1000)
    cmd = Command.new(SITE, GW, "bc-01", "siren", now, 30_000)
    data = wire.sign(cmd, rig.key)
    thief = rig.mqtt(f"{GW2}@{SITE}")
    for t in (wire.command_topic(SITE, GW, "bc-01"), wire.command_topic(SITE, GW2, "bc-01")):
        thief.publish(t, data, qos=1).wait_for_publish(5)
    own = rig.gw_client  # gw-01 itself cannot command its own devices either
    own.publish(wire.command_topic(SITE, GW, "bc-01"), data, qos=1).wait_for_publish(5)
    time.sleep(0.5)
    assert rig.device.applied == [] and rig.acks == []
    rig.svc_client.publish(wire.command_topic(SITE, GW, "bc-01"), data, qos=1)
    wait_until(lambda: rig.device.applied, 10, "the command service's copy")
    assert rig.device.applied == [(cmd.id, "bc-01", "siren")]


def test_proposal_from_a_finding_is_sent_only_after_approval(rig: Rig):
    rig.start_service()
    rig.backlog.apply_findings([finding(site=SITE, device="bc-01", family="battery", kind="battery.temp",
                                        level=Level.RED, value=66.0, metric="pack_temp", threshold=65.0)])
    wait_until(lambda: rig.ledger.list(site=SITE), 10, "the proposal")
    (c,) = rig.ledger.list(site=SITE)
    assert c["state"] == "proposed" and c["source"] == "proposal"
    time.sleep(0.6)
    assert rig.device.applied == [] and rig.state(c["id"]) == "proposed", "nothing sent without people"
    rig.approve(c["id"], "zhao.manager", "sun.supervisor")
    wait_until(lambda: rig.state(c["id"]) == "done", 10, "the approved proposal acknowledged")
    assert rig.device.applied == [(c["id"], "bc-01", "cut_power")]
    assert battery_current(rig.sim, "bc-01") == 0.0


def test_proposal_is_sent_automatically_only_with_auto_true(broker: Broker, tmp_path: Path):
    rules = RuleSet.from_yaml_text(f"site: {SITE}\nproposals:\n  - {{name: battery-runaway-cut-power, auto: true}}\n")
    rig = Rig(broker, tmp_path, rules=rules).start_service()
    try:
        rig.backlog.apply_findings([finding(site=SITE, device="bc-01", family="battery", kind="battery.temp",
                                            level=Level.RED, value=66.0, metric="pack_temp", threshold=65.0)])
        wait_until(lambda: rig.device.applied, 10, "the automatic command at the device")
        (c,) = rig.ledger.list(site=SITE)
        wait_until(lambda: rig.state(c["id"]) == "done", 10, "done")
        steps = [e["action"] for e in rig.ledger.get(c["id"])["events"]]
        assert steps[:3] == ["proposed", "auto_approved", "sent"]
        assert verify_site(rig.backlog.engine, SITE).ok
    finally:
        rig.close()
