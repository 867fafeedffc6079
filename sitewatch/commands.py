"""Commands to site devices: the wire format both ends share (the command service signs, the device verifies).

Why in the core: the command service (``commands/``) and the device side (``ingest/simulator``, a real gateway's
firmware) must agree byte for byte on what is signed; one implementation here is that agreement. Pure: no broker,
no database — only ``cryptography`` for Ed25519.

A command travels as ``{"cmd": {...}, "key_id": "...", "sig": "<base64 Ed25519 signature>"}``; the signature
covers ``b"sw-cmd-v1\\n" + canonical(cmd)`` where canonical is JSON with sorted keys, no whitespace, UTF-8 (the
same rule as the record's entries). The domain prefix keeps a command signature from ever verifying as anything
else signed with the same key. The device answers with an ``Ack`` (not signed: the broker's ACL lets only the
gateway itself publish on its ack topic).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sitewatch.contracts import MQTT_ROOT, InvalidReading, check_id

WIRE_VERSION = 1
DOMAIN = b"sw-cmd-v1\n"
CMD = "cmd"
ACK = "ack"
DEFAULT_SKEW_MS = 30_000  # device and service clocks may disagree this much (NTP on a 4G gateway drifts)
MAX_COMMAND_BYTES = 8 * 1024
ACK_STATUSES = ("accepted", "rejected", "done")
# Why a device refuses a command; the reason travels in the ack and lands in the ledger.
REJECT_REASONS = ("malformed", "unsigned", "unknown_key", "bad_signature", "wrong_target", "expired",
                  "not_yet_valid", "replay", "unknown_action", "unknown_device")

AckStatus = Literal["accepted", "rejected", "done"]


class CommandRejected(ValueError):
    """A command the device must not act on; ``reason`` is one of ``REJECT_REASONS``."""

    def __init__(self, reason: str, detail: str = "", command: "Command | None" = None):
        self.reason = reason
        self.detail = detail
        self.command = command
        super().__init__(f"{reason}: {detail}" if detail else reason)


# ------------------------------------------------------------------------------------------------ topics
def command_topic(site: str, gateway: str, device: str) -> str:
    """``sw/<site>/cmd/<gateway>/<device>``: the gateway in the path is what lets the ACL give each gateway
    its own commands only (``topic read sw/<site>/cmd/<gateway>/#``)."""
    return f"{MQTT_ROOT}/{site}/{CMD}/{gateway}/{device}"


def ack_topic(site: str, gateway: str, device: str) -> str:
    return f"{MQTT_ROOT}/{site}/{ACK}/{gateway}/{device}"


def parse_ack_topic(topic: str) -> tuple[str, str, str] | None:
    """(site, gateway, device) of an ack topic, None for anything else."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != MQTT_ROOT or parts[2] != ACK:
        return None
    return parts[1], parts[3], parts[4]


# ------------------------------------------------------------------------------------------------ messages
def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@dataclass(frozen=True)
class Command:
    id: str
    site: str
    gateway: str
    device: str
    action: str
    nonce: str
    issued_ms: int
    expires_ms: int
    args: dict[str, Any] = field(default_factory=dict)
    v: int = WIRE_VERSION

    @classmethod
    def new(cls, site: str, gateway: str, device: str, action: str, issued_ms: int, ttl_ms: int,
            args: dict[str, Any] | None = None, id: str | None = None) -> "Command":
        return cls(id=id or uuid.uuid4().hex, site=site, gateway=gateway, device=device, action=action,
                   nonce=secrets.token_hex(16), issued_ms=int(issued_ms), expires_ms=int(issued_ms + ttl_ms),
                   args=dict(args or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"v": self.v, "id": self.id, "site": self.site, "gateway": self.gateway, "device": self.device,
                "action": self.action, "args": self.args, "nonce": self.nonce, "issued_ms": self.issued_ms,
                "expires_ms": self.expires_ms}

    def canonical(self) -> bytes:
        return canonical_json(self.to_dict())

    def digest(self) -> str:
        """What the replay guard compares: the same nonce with another digest is a replay, not a retry."""
        return hashlib.sha256(self.canonical()).hexdigest()

    @classmethod
    def from_dict(cls, d: Any) -> "Command":
        if not isinstance(d, dict):
            raise CommandRejected("malformed", "cmd must be an object")
        want = {"v", "id", "site", "gateway", "device", "action", "args", "nonce", "issued_ms", "expires_ms"}
        if set(d) != want:
            raise CommandRejected("malformed", f"cmd fields must be exactly {sorted(want)}")
        if d["v"] != WIRE_VERSION:
            raise CommandRejected("malformed", f"unknown wire version {d['v']!r}")
        for k in ("id", "action", "nonce"):
            if not isinstance(d[k], str) or not 1 <= len(d[k]) <= 64:
                raise CommandRejected("malformed", f"{k} must be a short string")
        for k in ("issued_ms", "expires_ms"):
            if not isinstance(d[k], int) or isinstance(d[k], bool):
                raise CommandRejected("malformed", f"{k} must be an integer (epoch ms)")
        if not isinstance(d["args"], dict):
            raise CommandRejected("malformed", "args must be an object")
        try:
            for k in ("site", "gateway", "device"):
                check_id(k, d[k])
        except InvalidReading as e:
            raise CommandRejected("malformed", e.detail) from None
        return cls(**d)


@dataclass(frozen=True)
class Ack:
    command_id: str
    site: str
    gateway: str
    device: str
    status: AckStatus
    reason: str = ""
    nonce: str = ""
    at_ms: int = 0

    def to_json(self) -> bytes:
        return canonical_json({"command_id": self.command_id, "site": self.site, "gateway": self.gateway,
                               "device": self.device, "status": self.status, "reason": self.reason,
                               "nonce": self.nonce, "at_ms": self.at_ms})

    @classmethod
    def from_json(cls, data: bytes) -> "Ack":
        try:
            d = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"ack is not JSON: {e}") from None
        if not isinstance(d, dict) or d.get("status") not in ACK_STATUSES:
            raise ValueError("ack needs a status of accepted|rejected|done")
        try:
            return cls(command_id=str(d["command_id"]), site=str(d["site"]), gateway=str(d["gateway"]),
                       device=str(d["device"]), status=d["status"], reason=str(d.get("reason", ""))[:200],
                       nonce=str(d.get("nonce", "")), at_ms=int(d.get("at_ms", 0)))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"ack field missing or wrong: {e}") from None


# ------------------------------------------------------------------------------------------------ keys
def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(pem_or_path: bytes | str | Path) -> Ed25519PrivateKey:
    data = Path(pem_or_path).read_bytes() if isinstance(pem_or_path, (str, Path)) else pem_or_path
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the command-service key must be an Ed25519 private key")
    return key


def load_public_key(pem_or_path: bytes | str | Path) -> Ed25519PublicKey:
    data = Path(pem_or_path).read_bytes() if isinstance(pem_or_path, (str, Path)) else pem_or_path
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the command-service public key must be Ed25519")
    return key


# ------------------------------------------------------------------------------------------------ sign / verify
def sign(cmd: Command, key: Ed25519PrivateKey) -> bytes:
    """The wire bytes of ``cmd`` signed with the command-service key."""
    sig = key.sign(DOMAIN + cmd.canonical())
    return canonical_json({"cmd": cmd.to_dict(), "key_id": key_id(key.public_key()),
                           "sig": base64.b64encode(sig).decode()})


def decode(data: bytes) -> tuple[Command, str | None, str | None]:
    """(command, key_id, signature) without checking anything but shape."""
    if len(data) > MAX_COMMAND_BYTES:
        raise CommandRejected("malformed", f"{len(data)} bytes > {MAX_COMMAND_BYTES}")
    try:
        env = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CommandRejected("malformed", "not JSON") from None
    if not isinstance(env, dict) or "cmd" not in env:
        raise CommandRejected("malformed", "no cmd")
    cmd = Command.from_dict(env["cmd"])
    kid, sig = env.get("key_id"), env.get("sig")
    return cmd, kid if isinstance(kid, str) else None, sig if isinstance(sig, str) else None


def verify(data: bytes, keys: dict[str, Ed25519PublicKey] | Ed25519PublicKey, now_ms: int, *,
           site: str | None = None, gateway: str | None = None, skew_ms: int = DEFAULT_SKEW_MS) -> Command:
    """The command in ``data`` if it is signed by a trusted key, meant for this site/gateway and fresh; else
    ``CommandRejected``. Replay is the caller's ``ReplayGuard`` (it needs state)."""
    cmd, kid, sig = decode(data)
    if not sig:
        raise CommandRejected("unsigned", "no signature", cmd)
    if isinstance(keys, Ed25519PublicKey):
        keys = {key_id(keys): keys}
    pub = keys.get(kid or "")
    if pub is None:
        raise CommandRejected("unknown_key", f"key {kid!r} is not trusted", cmd)
    try:
        pub.verify(base64.b64decode(sig, validate=True), DOMAIN + cmd.canonical())
    except (InvalidSignature, binascii.Error, ValueError):
        raise CommandRejected("bad_signature", "signature does not verify", cmd) from None
    if (site is not None and cmd.site != site) or (gateway is not None and cmd.gateway != gateway):
        raise CommandRejected("wrong_target", f"for {cmd.site}/{cmd.gateway}, not this gateway", cmd)
    if cmd.expires_ms + skew_ms < now_ms:
        raise CommandRejected("expired", f"expired {now_ms - cmd.expires_ms} ms ago", cmd)
    if cmd.issued_ms - skew_ms > now_ms:
        raise CommandRejected("not_yet_valid", f"issued {cmd.issued_ms - now_ms} ms in the future", cmd)
    if cmd.expires_ms <= cmd.issued_ms:
        raise CommandRejected("malformed", "expires before it was issued", cmd)
    return cmd


# ------------------------------------------------------------------------------------------------ replay
class ReplayGuard:
    """Nonces seen, each kept until its command has expired (plus the skew): after that the command is refused
    as expired anyway, so memory stays bounded by the commands alive at once.

    ``check`` answers:
    - ``None``: a new nonce — act, then ``remember`` the ack you sent;
    - an ``Ack``: the same message again (the service retried because our ack was lost) — resend it, do NOT act;
    - raises ``CommandRejected("replay")``: the nonce of another message — a replay or a forgery around it.
    """

    def __init__(self, skew_ms: int = DEFAULT_SKEW_MS, max_entries: int = 100_000):
        self.skew_ms = skew_ms
        self.max_entries = max_entries
        self._seen: dict[str, tuple[str, int, Ack | None]] = {}  # nonce -> (digest, forget after ms, ack)
        self._ids: dict[str, str] = {}  # command id -> nonce: one id is one message, whatever its nonce
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def _purge(self, now_ms: int) -> None:
        for n in [n for n, (_d, until, _a) in self._seen.items() if until < now_ms]:
            self._seen.pop(n, None)
        live = set(self._seen)
        for cid in [c for c, n in self._ids.items() if n not in live]:
            del self._ids[cid]

    def check(self, cmd: Command, now_ms: int) -> Ack | None:
        with self._lock:
            self._purge(now_ms)
            seen = self._seen.get(cmd.nonce)
            if seen is not None:
                digest, _until, ack = seen
                if digest != cmd.digest():
                    raise CommandRejected("replay", "nonce already used by another command", cmd)
                if ack is None:  # still being handled (a duplicate delivery racing the first): not twice
                    raise CommandRejected("replay", "same command in progress", cmd)
                return ack
            other = self._ids.get(cmd.id)
            if other is not None and other != cmd.nonce:
                raise CommandRejected("replay", "command id already used with another nonce", cmd)
            if len(self._seen) >= self.max_entries:
                raise CommandRejected("replay", "replay memory full: refusing rather than forgetting", cmd)
            self._seen[cmd.nonce] = (cmd.digest(), cmd.expires_ms + self.skew_ms, None)
            self._ids[cmd.id] = cmd.nonce
            return None

    def remember(self, cmd: Command, ack: Ack) -> None:
        with self._lock:
            digest, until, _ = self._seen.get(cmd.nonce, (cmd.digest(), cmd.expires_ms + self.skew_ms, None))
            self._seen[cmd.nonce] = (digest, until, ack)
