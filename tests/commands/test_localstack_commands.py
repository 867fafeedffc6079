"""Commands in the local stack, the way a user of ``sitewatch up`` + ``sitewatch simulate --command-key`` meets
them: the stack makes the signing key in its data dir and runs ``sitewatch command serve`` as a child process;
the simulator's gateway verifies with the public key; a dangerous command is requested and approved through the
CLI by two accounts of the demo organisation; the device acks ``done`` and its later readings — through the real
bridge and worker, in ``sw.readings`` — show the power cut."""

from __future__ import annotations

import json
import stat
import threading

import pytest
from click.testing import CliRunner

from app.cli import main
from app.localstack import LocalStack, free_port
from app.webhook_receiver import WebhookReceiver
from backlog import orgs
from backlog.store import Backlog
from blackbox.verify import verify_site
from commands.ledger import Ledger
from ingest.simulator import SimConfig, Simulator
from sitewatch.contracts import TOPIC_READINGS, unpack_readings
from tests.backlog.conftest import DEMO_ORG
from tests.conftest import Pipeline, read_topic, wait_until

pytestmark = pytest.mark.integration

SITE, DEVICE, METRIC = "cz-0001", "bc-01", "charge_current"


def charge_readings(bootstrap: str) -> dict[int, float]:
    """ts -> value of the charger's charge current as the worker validated it (``sw.readings``)."""
    out: dict[int, float] = {}
    for rec in read_topic(bootstrap, TOPIC_READINGS, min_records=1, timeout=10):
        body = json.loads(rec.value)
        if body.get("type", "readings") != "readings":
            continue
        out.update((r.ts, r.value) for r in unpack_readings(body)
                   if (r.site, r.device, r.metric) == (SITE, DEVICE, METRIC))
    return out


def test_cut_power_requested_and_approved_on_the_cli_reaches_the_simulated_charger(tmp_path):
    data, db_url = tmp_path / "data", f"sqlite:///{tmp_path / 'backlog.db'}"
    stack = LocalStack(data, free_port(), free_port(), partitions=4, commands=True, db_url=db_url)
    receiver = WebhookReceiver(secret="test-secret").start()
    pipe = Pipeline(stack, data, receiver, db_url)
    sim_stop = threading.Event()
    sim_thread = None
    try:
        stack.start()
        service = next(p for p in stack.procs if p.name == "commands")
        assert service.running
        priv = data / "keys" / "command.pem"
        assert priv.exists() and stat.S_IMODE(priv.stat().st_mode) == 0o600  # made on first start, owner only
        assert stack.command_public_key.exists()
        orgs.import_org(Backlog(db_url), DEMO_ORG)
        pipe.start_bridge()
        pipe.start_worker()

        sim = Simulator(SimConfig(sites=1, devices_per_family=1, interval_s=0.5, scenario="none",
                                  command_key=str(stack.command_public_key)))
        sim_thread = threading.Thread(target=sim.run, args=("127.0.0.1", stack.mqtt_port, None, sim_stop),
                                      daemon=True)
        sim_thread.start()
        before = wait_until(lambda: (r := charge_readings(stack.bootstrap)) and len(r) >= 3 and r, 90,
                            "the charger's readings in sw.readings")
        assert all(v > 0 for v in before.values()), before  # the charger draws current before the command

        cli = CliRunner()
        base = ["--data-dir", str(data), "--db", db_url, "command"]
        r = cli.invoke(main, base + ["request", "--as", "zhao.manager", "--site", SITE, "--device", DEVICE,
                                     "--action", "cut_power"])
        assert r.exit_code == 0, r.output
        cid = r.output.split()[0]
        assert "requested" in r.output and "approvals 1/2" in r.output, r.output  # dangerous: one is not enough
        r = cli.invoke(main, base + ["approve", cid, "--as", "sun.supervisor"])
        assert r.exit_code == 0, r.output

        ledger = Ledger(Backlog(db_url, create=False), create=False)
        wait_until(lambda: ledger.get(cid)["state"] == "done", 30, f"command {cid} done: {service.tail(20)}")
        endpoint = sim.endpoints[SITE]
        assert endpoint.applied == [(cid, DEVICE, "cut_power")]  # acted on once
        acks = [a for a in endpoint.acks if a.command_id == cid]
        assert [a.status for a in acks] == ["accepted", "done"]
        done_ms = acks[-1].at_ms
        steps = [e["action"] for e in ledger.get(cid)["events"]]
        assert steps == ["requested", "approval", "approval", "sent", "ack_accepted", "ack_done"], steps

        def after_cut():
            later = {ts: v for ts, v in charge_readings(stack.bootstrap).items() if ts > done_ms}
            return later if len(later) >= 3 else None

        later = wait_until(after_cut, 60, "the charger's readings after the power cut in sw.readings")
        assert set(later.values()) == {0.0}, later  # the effect, as the pipeline saw it
        listed = cli.invoke(main, base + ["list", "--site", SITE])
        assert f"{cid} done" in listed.output and "ack done" in listed.output, listed.output
        assert verify_site(db_url, SITE).ok  # every step of the command is on the site's record
    finally:
        sim_stop.set()
        if sim_thread is not None:
            sim_thread.join(10)
        pipe.stop()
        receiver.stop()
        stack.stop()
