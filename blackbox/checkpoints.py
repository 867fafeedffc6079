"""Signed checkpoints: a site's head (seq, hash) signed with the site's Ed25519 key and handed to a third party.

The chain alone shows edits, deletions, insertions and reorderings, but not a chain recomputed from the first
entry on by someone who can write the database. A checkpoint held outside the database (a folder another party
syncs, a webhook of theirs) pins the hash at a seq: a rewritten chain disagrees with it, and a forged checkpoint
does not verify with the site's public key.

Keys are files, never in the repository: ``<key dir>/<site>.pem`` (private, PKCS#8, mode 0600) and
``<site>.pub.pem`` (public, the one a third party and the verifier need). Before signing, the entries since the
previous checkpoint are verified (``blackbox.signer``): a checkpoint never vouches for a broken chain.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.engine import Engine

from blackbox.schema import checkpoints

log = logging.getLogger("sitewatch.blackbox")


# ------------------------------------------------------------------------------------------------ keys
def _key_file(key_dir: Path, site: str, public: bool) -> Path:
    if not site or "/" in site or "\\" in site or site.startswith("."):
        raise ValueError(f"not a site name: {site!r}")
    return Path(key_dir) / (f"{site}.pub.pem" if public else f"{site}.pem")


def keygen(key_dir: Path, site: str, overwrite: bool = False) -> Path:
    """A new key pair for ``site``; returns the public key file (the one to hand to the third party)."""
    priv_path, pub_path = _key_file(key_dir, site, False), _key_file(key_dir, site, True)
    if priv_path.exists() and not overwrite:
        raise FileExistsError(f"{priv_path} exists (a new key would orphan the checkpoints signed with it)")
    Path(key_dir).mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = priv_path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.replace(tmp, priv_path)
    pub_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    return pub_path


def load_private(key_dir: Path, site: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(_key_file(key_dir, site, False).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"the key of site {site} is not an Ed25519 key")
    return key


def load_public(key_dir: Path, site: str) -> Ed25519PublicKey | None:
    """The site's public key: ``<site>.pub.pem``, else derived from the private key; None if neither exists."""
    pub = _key_file(key_dir, site, True)
    if pub.exists():
        key = serialization.load_pem_public_key(pub.read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{pub} is not an Ed25519 public key")
        return key
    if _key_file(key_dir, site, False).exists():
        return load_private(key_dir, site).public_key()
    return None


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ checkpoints
@dataclass(frozen=True)
class Checkpoint:
    """A signed head. ``body`` is the canonical JSON that was signed; the other fields are read from it."""

    site: str
    seq: int
    hash: str
    at_ms: int  # the time of the entry at ``seq``
    signed_ms: int
    key_id: str
    body: str
    signature: str  # base64
    source: str = "database"  # where the verifier found it: "database", a file path, …
    well_formed: bool = True  # False: the body is not a checkpoint at all (reported as forged)

    @classmethod
    def from_body(cls, body: str, signature: str, source: str = "database", site: str = "",
                  seq: int = 0) -> "Checkpoint":
        try:
            b = json.loads(body)
            return cls(str(b["site"]), int(b["seq"]), str(b["hash"]), int(b["at_ms"]), int(b["signed_ms"]),
                       str(b["key_id"]), body, str(signature), source)
        except (ValueError, KeyError, TypeError):
            return cls(site, seq, "", 0, 0, "", str(body), str(signature), source, well_formed=False)

    def signed_by(self, public: Ed25519PublicKey) -> bool:
        try:
            public.verify(base64.b64decode(self.signature, validate=True), self.body.encode())
            return True
        except (InvalidSignature, ValueError):
            return False

    def export_doc(self) -> dict[str, Any]:
        return {"checkpoint": json.loads(self.body), "body": self.body, "signature": self.signature,
                "alg": "Ed25519"}


def sign(key: Ed25519PrivateKey, site: str, seq: int, hash_: str, at_ms: int, signed_ms: int) -> Checkpoint:
    body = json.dumps({"v": 1, "site": site, "seq": int(seq), "hash": hash_, "at_ms": int(at_ms),
                       "signed_ms": int(signed_ms), "key_id": key_id(key.public_key())},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return Checkpoint.from_body(body, base64.b64encode(key.sign(body.encode())).decode())


def stored(engine: Engine, site: str) -> list[Checkpoint]:
    """The checkpoints the database keeps (the third party's copies are the ones that count)."""
    with engine.connect() as conn:
        rows = conn.execute(select(checkpoints.c.seq, checkpoints.c.body, checkpoints.c.signature)
                            .where(checkpoints.c.site == site).order_by(checkpoints.c.seq, checkpoints.c.id))
        return [Checkpoint.from_body(r.body, r.signature, site=site, seq=r.seq) for r in rows]


def read_exported(export_dir: Path, site: str) -> list[Checkpoint]:
    """Checkpoints exported to ``<export_dir>/<site>/*.json`` (as held by the third party)."""
    folder = Path(export_dir) / site
    out = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(p.read_text())
            body, sig = doc["body"], doc["signature"]
        except (ValueError, KeyError, TypeError):
            body, sig = p.read_text(errors="replace"), ""
        seq = int(p.stem) if p.stem.isdigit() else 0
        out.append(Checkpoint.from_body(body, sig, source=str(p), site=site, seq=seq))
    return out


def export_file(cp: Checkpoint, export_dir: Path) -> Path:
    folder = Path(export_dir) / cp.site
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cp.seq:012d}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cp.export_doc(), indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def export_webhook(cp: Checkpoint, url: str, timeout_s: float = 10.0) -> None:
    """POST the checkpoint to the third party; receivers dedupe by (site, seq) — exports are re-sent."""
    import httpx

    r = httpx.post(url, json=cp.export_doc(), timeout=timeout_s)
    r.raise_for_status()
