"""The command service: the only holder of the command-signing key and the only MQTT account allowed to publish
commands (``sitewatch-command``; deploy/mosquitto/sitewatch.acl).

Each tick it applies the acknowledgements that arrived, turns matching hazard tickets into proposals, expires
what is stale, signs and publishes what was approved, resends what is unanswered (the same message: same id,
nonce and signature) and escalates what stays unanswered after ``max_retries`` resends. The ledger decides and
records every step; this class only moves bytes. Run one instance (``sitewatch command serve``); a second one
would not send twice — each step is a conditional update — but would double the resends.

Why the proposals come from the backlog's tickets and not from a consumer group on ``sw.hazards``: a ticket is
already one per hazard episode (re-asserted findings fold into it), survives restarts and is what a person sees
and approves next to the proposal; reading ``sw.hazards`` again would re-do that folding and add a Kafka consumer
to a process that otherwise needs only the database and MQTT. The price is the polling interval (``tick_s``).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from commands.ledger import Ledger
from sitewatch import commands as wire
from sitewatch.commands import Ack, Command

log = logging.getLogger("sitewatch.commands")

KEY_FILE_ENV = "SW_COMMAND_KEY_FILE"  # PEM (PKCS#8) Ed25519 private key; never in the repository
KEY_ENV = "SW_COMMAND_KEY"  # or the PEM itself (a secret injected by the orchestrator)
ACK_FILTER = f"{wire.MQTT_ROOT}/+/{wire.ACK}/#"


def load_key(path: str | Path | None = None) -> Ed25519PrivateKey:
    path = path or os.environ.get(KEY_FILE_ENV)
    if path:
        return wire.load_private_key(Path(path))
    pem = os.environ.get(KEY_ENV)
    if pem:
        return wire.load_private_key(pem.encode())
    raise RuntimeError(f"no command-signing key: set ${KEY_FILE_ENV} (a PEM file, mode 0600) or ${KEY_ENV}; "
                       "make one with `sitewatch command keygen`")


class CommandService:
    def __init__(self, ledger: Ledger, key: Ed25519PrivateKey, client: mqtt.Client, tick_s: float = 0.5):
        """``client``: connected (or connecting) as ``sitewatch-command``, loop running."""
        self.ledger = ledger
        self.key = key
        self.client = client
        self.tick_s = tick_s
        self._acks: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._wake = threading.Event()  # an ack arrived: record it now, not at the next tick
        self.sent: list[tuple[str, int]] = []  # (command id, attempt) in publish order, for tests and logs
        previous = client.on_connect

        def on_connect(c, userdata, flags, reason, props=None):
            if previous is not None:
                previous(c, userdata, flags, reason, props)
            c.subscribe(ACK_FILTER, qos=1)

        client.on_connect = on_connect
        client.message_callback_add(ACK_FILTER, self._on_ack)
        if client.is_connected():
            client.subscribe(ACK_FILTER, qos=1)

    def _on_ack(self, _client, _userdata, msg) -> None:
        self._acks.put((msg.topic, msg.payload))
        self._wake.set()

    def publish(self, cmd: Command) -> None:
        info = self.client.publish(wire.command_topic(cmd.site, cmd.gateway, cmd.device), wire.sign(cmd, self.key),
                                   qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:  # not connected: paho queued nothing; the retry timer resends
            log.warning("command %s not handed to MQTT (rc %s); will be resent", cmd.id, info.rc)

    def apply_acks(self) -> int:
        n = 0
        while True:
            try:
                topic, payload = self._acks.get_nowait()
            except queue.Empty:
                return n
            where = wire.parse_ack_topic(topic)
            if where is None:
                continue
            try:
                ack = Ack.from_json(payload)
            except ValueError as e:
                log.warning("unreadable ack on %s: %s", topic, e)
                continue
            self.ledger.on_ack(ack, *where)
            n += 1

    def tick(self) -> None:
        self.apply_acks()
        for cid in self.ledger.propose_from_tickets():
            log.info("proposed command %s", cid)
        self.ledger.expire_stale()
        for cmd in self.ledger.to_send():
            self.publish(cmd)
            self.sent.append((cmd.id, 1))
        resend, escalate = self.ledger.to_retry()
        for cmd in resend:
            self.publish(cmd)
            self.sent.append((cmd.id, 0))
        for cid in escalate:
            tid = self.ledger.escalate(cid)
            if tid is not None:
                log.warning("command %s unanswered: escalated as ticket #%d", cid, tid)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a database hiccup must not stop the service; next tick retries
                log.exception("command service tick failed")
            self._wake.wait(max(0.0, self.tick_s - (time.monotonic() - t0)))
            self._wake.clear()
