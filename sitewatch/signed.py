"""Signed, expiring claims in a URL-safe string: ``base64url(JSON claims) "." base64url(HMAC-SHA256(secret, body))``.

One format for every link SiteWatch hands to a person: the acknowledgement links in alert messages (signed by the
alerts room, verified by the backlog's API with the same ``$SW_ALERTS_ACK_SECRET``) and the wall page's login
links and session cookies. It lives in the core so both rooms share one implementation instead of agreeing on a
format by copy. Claims carry their expiry as ``"e"`` (epoch seconds)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

ACK_SECRET_ENV = "SW_ALERTS_ACK_SECRET"  # the acknowledgement links' secret, on the alerts and the backlog side


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _mac(secret: str, body: str) -> str:
    return _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())


def sign(secret: str, claims: dict) -> str:
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode())
    return f"{body}.{_mac(secret, body)}"


def unsign(secret: str, token: str, now_s: float) -> dict | None:
    """The claims of an authentic, unexpired token; None for anything else (forged, truncated, expired, junk)."""
    try:
        body, mac = token.split(".")
        if not hmac.compare_digest(_mac(secret, body), mac):
            return None
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if not isinstance(data, dict) or float(data.get("e", 0)) < now_s:
            return None
    except (ValueError, TypeError, AttributeError):
        return None
    return data
