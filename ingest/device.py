"""The device end of the command path, as a gateway runs it (the simulator uses it; firmware would do the same).

A gateway subscribes to its own commands, ``sw/<site>/cmd/<gateway>/+`` (the broker lets it read nothing else),
and for each message: verifies the signature against the command service's public key, the target, the
freshness (expiry, clock skew) and the replay guard, acts, and answers on ``sw/<site>/ack/<gateway>/<device>``:
``accepted`` then ``done``, or ``rejected`` with the reason. A repeated message (the service retried because our
ack was lost) gets the stored ack again and is not acted on twice; another message reusing a nonce is a replay.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Callable

import paho.mqtt.client as mqtt

from sitewatch import commands as wire
from sitewatch.commands import Ack, Command, CommandRejected, ReplayGuard
from sitewatch.contracts import now_ms

log = logging.getLogger("sitewatch.device")

# What each action does to the simulated device's state.
EFFECTS: dict[str, tuple[str, bool]] = {
    "cut_power": ("power", False), "restore_power": ("power", True),
    "lock_lifting": ("lifting_locked", True), "unlock_lifting": ("lifting_locked", False),
    "siren": ("siren", True), "siren_off": ("siren", False),
}


@dataclass
class DeviceState:
    power: bool = True
    lifting_locked: bool = False
    siren: bool = False


@dataclass
class CommandEndpoint:
    """One gateway's command handling. ``devices``: the devices behind it (None: any id on its topics)."""

    site: str
    gateway: str
    public_keys: dict[str, object] | object
    devices: set[str] | None = None
    skew_ms: int = wire.DEFAULT_SKEW_MS
    clock: Callable[[], int] = now_ms
    state: dict[str, DeviceState] = field(default_factory=dict)
    applied: list[tuple[str, str, str]] = field(default_factory=list)  # (command id, device, action) acted on
    acks: list[Ack] = field(default_factory=list)  # every ack sent, in order
    guard: ReplayGuard = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _client: mqtt.Client | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.guard = ReplayGuard(self.skew_ms)

    @property
    def topic_filter(self) -> str:
        return f"sw/{self.site}/{wire.CMD}/{self.gateway}/+"

    def device(self, device: str) -> DeviceState:
        return self.state.setdefault(device, DeviceState())

    def handle(self, topic: str, payload: bytes) -> list[Ack]:
        """The acks to send for one message (pure apart from the device state; the MQTT side publishes them)."""
        device = topic.rsplit("/", 1)[-1]
        now = self.clock()
        with self._lock:
            try:
                cmd = wire.verify(payload, self.public_keys, now, site=self.site, gateway=self.gateway,
                                  skew_ms=self.skew_ms)
                if cmd.device != device:
                    raise CommandRejected("wrong_target", f"for {cmd.device}, sent on {device}'s topic", cmd)
                if self.devices is not None and cmd.device not in self.devices:
                    raise CommandRejected("unknown_device", f"no device {cmd.device} behind {self.gateway}", cmd)
                if cmd.action not in EFFECTS:
                    raise CommandRejected("unknown_action", cmd.action, cmd)
                stored = self.guard.check(cmd, now)
                if stored is not None:
                    log.info("command %s repeated: resending its ack, not acting again", cmd.id)
                    return [stored]
            except CommandRejected as e:
                c = e.command
                log.warning("command on %s rejected: %s", topic, e)
                return [Ack(c.id if c else "", self.site, self.gateway, device, "rejected", e.reason,
                            c.nonce if c else "", now)]
            accepted = Ack(cmd.id, self.site, self.gateway, cmd.device, "accepted", "", cmd.nonce, now)
            self._act(cmd)
            done = Ack(cmd.id, self.site, self.gateway, cmd.device, "done", "", cmd.nonce, self.clock())
            self.guard.remember(cmd, done)
            return [accepted, done]

    def _act(self, cmd: Command) -> None:
        attr, value = EFFECTS[cmd.action]
        setattr(self.device(cmd.device), attr, value)
        self.applied.append((cmd.id, cmd.device, cmd.action))
        log.info("device %s/%s: %s (command %s)", self.site, cmd.device, cmd.action, cmd.id)

    # -------------------------------------------------------------------------------------------- MQTT
    def attach(self, client: mqtt.Client) -> None:
        """Subscribe on ``client`` (the gateway's own connection) now and after every reconnect."""
        self._client = client
        previous = client.on_connect

        def on_connect(c, userdata, flags, reason, props=None):
            if previous is not None:
                previous(c, userdata, flags, reason, props)
            c.subscribe(self.topic_filter, qos=1)

        client.on_connect = on_connect
        client.message_callback_add(self.topic_filter, self._on_message)
        if client.is_connected():
            client.subscribe(self.topic_filter, qos=1)

    def _on_message(self, client, _userdata, msg) -> None:
        try:
            acks = self.handle(msg.topic, msg.payload)
        except Exception:  # noqa: BLE001 - a bad message must not kill the network thread
            log.exception("command handling failed on %s", msg.topic)
            return
        for ack in acks:
            client.publish(wire.ack_topic(self.site, self.gateway, ack.device), ack.to_json(), qos=1)
            self.acks.append(ack)


def connect(host: str, port: int, client_id: str, username: str | None = None, password: str | None = None,
            ca_file: str | None = None) -> mqtt.Client:
    """An MQTT v5 client with its loop running (TLS when ``ca_file`` is given), connected before it returns."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if username:
        client.username_pw_set(username, password)
    if ca_file:
        client.tls_set(ca_certs=ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    connected = threading.Event()

    def on_connect(c, userdata, flags, reason, props=None):
        sock = c.socket()
        if sock is not None:  # a command and its ack are single small packets: no Nagle wait for the last ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not reason.is_failure:
            connected.set()

    client.on_connect = on_connect
    client.connect(host, port, keepalive=30)
    client.loop_start()
    if not connected.wait(10):
        client.loop_stop()
        raise ConnectionError(f"MQTT {host}:{port} did not accept {username or 'anonymous'}")
    return client
