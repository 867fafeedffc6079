"""The production MQTT broker as shipped: mosquitto started from ``deploy/mosquitto/mosquitto.conf`` and
``sitewatch.acl`` themselves (only paths and ports substituted), accounts made by ``ingest.provision`` (what
``sitewatch gateway add`` runs), TLS with a CA generated here, real paho clients.

mosquitto's ACL never refuses a SUBSCRIBE (2.0 grants it and checks ``read`` for every message it would deliver),
so "cannot subscribe" is asserted as what matters: nothing outside the account's read rules is ever delivered.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from app.localstack import free_port, wait_for_port
from ingest import provision
from tests.conftest import wait_until
from tests.security.certs import Pki, make_pki

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONF = REPO / "deploy" / "mosquitto" / "mosquitto.conf"
SHIPPED_ACL = REPO / "deploy" / "mosquitto" / "sitewatch.acl"
N = 20
SITE_A, SITE_B = "cz-0412", "cz-0413"


def deployed_config(text: str, d: Path, pki: Pki, tls_port: int, local_port: int) -> str:
    """The shipped config with its host paths and ports replaced; anything else unchanged.

    Fails if the shipped file stops having exactly the lines substituted here (a new path the test would not
    redirect, a second listener): then the test no longer proves what ships.
    """
    subs = {
        r"password_file /etc/mosquitto/sitewatch\.passwd": f"password_file {d / 'sitewatch.passwd'}",
        r"acl_file /etc/mosquitto/sitewatch\.acl": f"acl_file {d / 'sitewatch.acl'}",
        r"cafile /etc/mosquitto/certs/ca\.crt": f"cafile {pki.ca}",
        r"certfile /etc/mosquitto/certs/server\.crt": f"certfile {pki.cert}",
        r"keyfile /etc/mosquitto/certs/server\.key": f"keyfile {pki.key}",
        r"persistence_location /var/lib/mosquitto/": f"persistence_location {d / 'data'}/",
        r"listener 8883": f"listener {tls_port} 127.0.0.1",
        r"listener 1883 127\.0\.0\.1": f"listener {local_port} 127.0.0.1",
        r"log_dest syslog": f"log_dest file {d / 'mosquitto.log'}",
    }
    out = []
    hits = dict.fromkeys(subs, 0)
    for line in text.splitlines():
        for pattern, repl in subs.items():
            if re.fullmatch(pattern, line.strip()):
                line = repl
                hits[pattern] += 1
                break
        else:
            assert "/etc/" not in line.split("#")[0] and "/var/" not in line.split("#")[0], \
                f"unsubstituted host path in the shipped config: {line!r}"
        out.append(line)
    assert all(n == 1 for n in hits.values()), f"shipped config changed shape: {hits}"
    return "\n".join(out) + "\n"


def _as_mosquitto(paths: list[Path]) -> None:
    """As root, mosquitto drops to the ``mosquitto`` user: give it the files, as deploy/README.md tells operators."""
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam("mosquitto")
    for p in paths:
        for q in [p, *p.rglob("*")] if p.is_dir() else [p]:
            os.chown(q, pw.pw_uid, pw.pw_gid)


@dataclass
class Broker:
    dir: Path
    pki: Pki
    tls_port: int
    local_port: int
    proc: subprocess.Popen
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def passwd(self) -> Path:
        return self.dir / "sitewatch.passwd"

    @property
    def acl(self) -> Path:
        return self.dir / "sitewatch.acl"

    def add_gateway(self, site: str, gateway: str) -> str:
        gw, password = provision.add_gateway(site, gateway, self.passwd, self.acl)
        self.passwords[gw.username] = password
        return gw.username

    def reload(self, admits: str) -> None:
        """SIGHUP (what ``systemctl reload mosquitto`` sends), then wait until ``admits`` can log in: the shipped
        config logs no notice of a reload, and both files are re-read together."""
        self.proc.send_signal(signal.SIGHUP)

        def admitted() -> bool:
            c = Client(self, admits).start()
            try:
                return c.connected()
            finally:
                c.stop()

        wait_until(admitted, 10, f"mosquitto to reload and admit {admits}")

    def log(self) -> str:
        try:
            return (self.dir / "mosquitto.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""


@pytest.fixture
def broker():
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    assert Path(mosquitto).exists(), "Debian's mosquitto is required (make deps installs it)"
    # Not under pytest's tmp_path: that tree is private to root, and mosquitto runs as ``mosquitto`` (as in prod).
    d = Path(tempfile.mkdtemp(prefix="sitewatch-mosquitto-"))
    (d / "data").mkdir(parents=True)
    pki = make_pki(d / "certs")
    shutil.copy(SHIPPED_ACL, d / "sitewatch.acl")
    os.chmod(d / "sitewatch.acl", 0o600)
    _as_mosquitto([d])  # before provisioning: a new password file takes the ACL file's owner
    b = Broker(d, pki, free_port(), free_port(), proc=None)  # type: ignore[arg-type]
    for site, gw in ((SITE_A, "gw01"), (SITE_B, "gw01")):
        b.add_gateway(site, gw)
    for user in provision.SERVICE_USERS:
        b.passwords[user] = provision.rotate_password(user, b.passwd, b.acl, create=True)
    conf = d / "mosquitto.conf"
    conf.write_text(deployed_config(SHIPPED_CONF.read_text(), d, pki, b.tls_port, b.local_port))
    with open(d / "mosquitto.out", "wb") as out:
        b.proc = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", b.tls_port, 10, b.proc, "mosquitto")
        wait_for_port("127.0.0.1", b.local_port, 10, b.proc, "mosquitto")
    except Exception:
        b.proc.kill()
        raise AssertionError("mosquitto did not start from the shipped config:\n"
                             f"{(d / 'mosquitto.out').read_text()}{b.log()[-3000:]}") from None
    yield b
    b.proc.terminate()
    b.proc.wait(10)
    shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- clients
class Client:
    """A paho client that records its CONNACK, deliveries and v5 PUBACK reason codes."""

    def __init__(self, broker: Broker, user: str | None, password: str | None = None, *, tls: bool = True,
                 v5: bool = True, client_id: str | None = None, port: int | None = None):
        self.connack = threading.Event()
        self.reason = None
        self.disconnected = threading.Event()
        self.messages: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, str] = {}
        self.suback = threading.Event()
        self._lock = threading.Lock()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{user}-{time.monotonic_ns()}",
                        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        if user is not None:
            c.username_pw_set(user, password if password is not None else broker.passwords[user])
        if tls:
            c.tls_set(ca_certs=str(broker.pki.ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *_a: self.disconnected.set()
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = lambda *_a: self.suback.set()
        self.c = c
        self.port = port or broker.tls_port

    def _on_connect(self, _c, _u, _flags, reason, _props):
        self.reason = reason
        self.connack.set()

    def _on_message(self, _c, _u, msg):
        with self._lock:
            self.messages.append((msg.topic, msg.payload))

    def _on_publish(self, _c, _u, mid, reason, _props):
        self.pubacks[mid] = str(reason)

    def start(self) -> "Client":
        try:
            self.c.connect("127.0.0.1", self.port, keepalive=30)
        except (OSError, ssl.SSLError) as e:
            self.reason = e
            self.disconnected.set()
            return self
        self.c.loop_start()
        return self

    def connected(self, timeout: float = 5.0) -> bool:
        """True once the broker accepted the CONNECT; False if it refused it or the connection died first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connack.is_set():
                return not self.reason.is_failure
            if self.disconnected.is_set():
                return False
            time.sleep(0.05)
        return False

    def subscribe(self, *filters: str) -> None:
        self.suback.clear()
        self.c.subscribe([(f, 1) for f in filters])
        assert self.suback.wait(5), "no SUBACK"

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> int:
        info = self.c.publish(topic, payload, qos=qos)
        info.wait_for_publish(5)
        return info.mid

    def topics(self) -> list[str]:
        with self._lock:
            return [t for t, _ in self.messages]

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def clients():
    made: list[Client] = []

    def make(*args, **kw) -> Client:
        c = Client(*args, **kw).start()
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


def connected(clients, broker: Broker, user: str, **kw) -> Client:
    c = clients(broker, user, **kw)
    assert c.connected(), f"{user} could not connect: {c.reason}\n{broker.log()[-2000:]}"
    return c


def bridge(clients, broker: Broker) -> Client:
    """Subscribed exactly as ingest/bridge.py does: MQTT v5 shared subscription $share/<group>/sw/#."""
    c = connected(clients, broker, provision.BRIDGE_USER, client_id="sitewatch-bridge-test-1")
    c.subscribe("$share/sitewatch-bridges/sw/#")
    return c


def reading_topic(site: str, n: int) -> str:
    return f"sw/{site}/crane/crane-{n:02d}/load"


# ---------------------------------------------------------------------------------------------- tests
def test_shipped_files_start_as_a_new_user_would_use_them(broker: Broker):
    """The password_file line is exactly a path (no trailing comment eaten as part of the name), and mosquitto
    loaded both files: a provisioned gateway logs in over TLS."""
    text = SHIPPED_CONF.read_text()
    for key in ("password_file", "acl_file", "cafile", "certfile", "keyfile", "persistence_location"):
        (line,) = [ln for ln in text.splitlines() if ln.startswith(key + " ")]
        assert len(line.split()) == 2, f"{key} line must hold only the path: {line!r}"
    assert "Error" not in broker.log(), broker.log()
    assert oct(broker.passwd.stat().st_mode & 0o777) == "0o600"


def test_anonymous_and_wrong_password_are_refused(broker: Broker, clients):
    gw = f"gw01@{SITE_A}"
    anonymous = clients(broker, None)
    wrong = clients(broker, gw, "not-the-password")
    unknown = clients(broker, "gw09@cz-9999", "whatever")
    local_anonymous = clients(broker, None, tls=False, port=broker.local_port)
    for c in (anonymous, wrong, unknown, local_anonymous):
        assert not c.connected(), f"broker accepted {c.c._username!r}"
        assert c.reason is not None and c.reason.is_failure, c.reason
    assert connected(clients, broker, gw)  # the right password over TLS does connect


def test_plain_tcp_is_not_accepted_on_the_tls_listener(broker: Broker, clients):
    gw = f"gw01@{SITE_A}"
    plain = clients(broker, gw, tls=False)
    assert not plain.connected(), "a plain-TCP MQTT CONNECT was accepted on the TLS port"
    assert not plain.connack.is_set(), "the TLS listener answered a plain-TCP CONNECT with a CONNACK"
    # At the byte level too: a CONNECT in the clear gets no MQTT answer, only a TLS alert or a closed socket.
    with socket.create_connection(("127.0.0.1", broker.tls_port), timeout=5) as s:
        s.sendall(bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 0]))
        try:
            answer = s.recv(16)
        except (ConnectionResetError, socket.timeout):
            answer = b""
    assert not answer.startswith(b"\x20"), f"got a CONNACK in the clear: {answer!r}"


@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
def test_gateway_publishing_under_another_site_delivers_0_of_n(broker: Broker, clients, v5: bool):
    br = bridge(clients, broker)
    gw_a = connected(clients, broker, f"gw01@{SITE_A}", v5=v5)
    foreign = [gw_a.publish(reading_topic(SITE_B, i), b'{"ts":1,"value":1}') for i in range(N)]
    foreign += [gw_a.publish(f"sw/{SITE_B}/gateway/gw01/status", b'{"online":false}')]
    # Its own site's readings afterwards: mosquitto keeps one connection's order, so when these N have arrived
    # any foreign message would have arrived before them.
    for i in range(N):
        gw_a.publish(reading_topic(SITE_A, i), b'{"ts":1,"value":1}')
    wait_until(lambda: len(br.topics()) >= N, 10, f"{N} readings of site A at the bridge")
    time.sleep(0.3)
    got = br.topics()
    assert sorted(got) == sorted(reading_topic(SITE_A, i) for i in range(N)), "bridge got foreign or lost readings"
    assert not [t for t in got if t.startswith(f"sw/{SITE_B}/")], "0 of N foreign-site messages delivered"
    if v5:  # MQTT v5 gateways are told: PUBACK "Not authorized" for every foreign message
        assert all(gw_a.pubacks[mid] == "Not authorized" for mid in foreign), gw_a.pubacks


def test_gateway_cannot_impersonate_another_gateway_or_publish_commands(broker: Broker, clients):
    broker.reload(admits=broker.add_gateway(SITE_A, "gw02"))
    br = bridge(clients, broker)
    # Commands and acks never reach the bridge (deny lines); their own readers watch them here: the target
    # gateway gw02 reads its commands, the command service reads the acks.
    gw2 = connected(clients, broker, f"gw02@{SITE_A}")
    gw2.subscribe(f"sw/{SITE_A}/cmd/gw02/#")
    cmd = connected(clients, broker, provision.COMMAND_USER)
    cmd.subscribe("sw/+/ack/#")
    gw = connected(clients, broker, f"gw01@{SITE_A}")
    forbidden = [
        f"sw/{SITE_A}/gateway/gw02/status",  # another gateway's status / last will, same site
        f"sw/{SITE_A}/gateway/gw02/readings",
        f"sw/{SITE_A}/cmd/gw02/crane-01",  # commands: only the command service, to any gateway, own site too
        f"sw/{SITE_A}/cmd/gw01/crane-01",
        f"sw/{SITE_B}/cmd/gw01/crane-01",
        f"sw/{SITE_B}/ack/gw01/crane-01",  # acks: only for itself
        f"sw/{SITE_A}/ack/gw02/crane-01",
        f"sw/{SITE_A}/nofamily/dev-1/load",  # outside the topic contract
        "sw/other",
        "elsewhere/x",
    ]
    for t in forbidden:
        gw.publish(t, b"x")
    allowed = [f"sw/{SITE_A}/gateway/gw01/readings", f"sw/{SITE_A}/gateway/gw01/status",
               f"sw/{SITE_A}/pit/pit-01/status"]
    for t in allowed:
        gw.publish(t, b"x")
    gw.publish(f"sw/{SITE_A}/ack/gw01/crane-01", b"own ack")
    cmd.publish(f"sw/{SITE_A}/cmd/gw02/crane-01", b"by the command service")
    wait_until(lambda: len(br.topics()) >= len(allowed) and gw2.topics() and cmd.topics(), 10,
               "the allowed messages at their readers")
    time.sleep(0.3)
    assert sorted(br.topics()) == sorted(allowed), "the bridge got a forbidden message, a command or an ack"
    assert gw2.messages == [(f"sw/{SITE_A}/cmd/gw02/crane-01", b"by the command service")]
    assert cmd.messages == [(f"sw/{SITE_A}/ack/gw01/crane-01", b"own ack")]


def test_gateway_reads_only_its_own_commands(broker: Broker, clients):
    broker.reload(admits=broker.add_gateway(SITE_A, "gw02"))
    gw_a = connected(clients, broker, f"gw01@{SITE_A}")
    # Everything it might try: another site, every site's commands, the whole tree.
    gw_a.subscribe(f"sw/{SITE_B}/#", "sw/+/cmd/#", f"sw/{SITE_B}/cmd/#", f"sw/{SITE_A}/cmd/#", "sw/#", "#")
    gw_b = connected(clients, broker, f"gw01@{SITE_B}")
    cmd = connected(clients, broker, provision.COMMAND_USER)
    for i in range(N):
        gw_b.publish(reading_topic(SITE_B, i), b'{"ts":1,"value":1}')
        cmd.publish(f"sw/{SITE_B}/cmd/gw01/crane-01", b"for B")  # another site's gateway of the same name
        cmd.publish(f"sw/{SITE_A}/cmd/gw02/crane-01", b"for A's other gateway")  # same site, other gateway
    gw_b.publish(f"sw/{SITE_B}/ack/gw01/crane-01", b"ack from B")
    cmd.publish(f"sw/{SITE_A}/cmd/gw01/crane-01", b"for A")  # last: once it is in, the others would be too
    wait_until(lambda: gw_a.topics(), 10, "gateway A's own command")
    time.sleep(0.3)
    assert set(gw_a.topics()) == {f"sw/{SITE_A}/cmd/gw01/crane-01"}, gw_a.topics()
    assert {p for _, p in gw_a.messages} == {b"for A"}


def test_revoked_gateway_is_locked_out_and_a_new_one_admitted_after_reload(broker: Broker, clients):
    revoked = f"gw01@{SITE_B}"
    old = connected(clients, broker, revoked)
    br = bridge(clients, broker)
    provision.remove_gateway(SITE_B, "gw01", broker.passwd, broker.acl)
    new_user = broker.add_gateway(SITE_B, "gw07")
    broker.reload(admits=new_user)
    # mosquitto re-checks connected clients at the reload: the revoked session is dropped, not left running.
    assert old.disconnected.wait(5), "a session opened before the revocation survived the reload"
    wait_until(lambda: not old.c.is_connected(), 5, "the revoked gateway to stay out (paho retries by itself)")
    again = clients(broker, revoked, broker.passwords[revoked])
    assert not again.connected(), "a revoked gateway logged in after the reload"
    new = connected(clients, broker, new_user)
    new.publish(reading_topic(SITE_B, 2), b"from the new gateway")
    wait_until(lambda: br.topics(), 10, "the new gateway's reading")
    time.sleep(0.3)
    assert [p for _, p in br.messages] == [b"from the new gateway"]
    assert f"user {revoked}" not in broker.acl.read_text()
