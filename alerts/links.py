"""Signed acknowledgement links: ``{ack_url}`` with ``{token}`` = ``base64url(claims) "." base64url(HMAC-SHA256)``.

claims = ``{"t": ticket_id, "u": backlog user, "r": receiver, "e": expiry (epoch s)}``. The backlog API
(``backlog/api/ack_links.py``) verifies the token with the same secret (``$SW_ALERTS_ACK_SECRET``) and
acknowledges the ticket as that user. The format is small on purpose: the API side re-implements the check
with the standard library (rooms do not import each other), and a test signs here and verifies there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os

ENV_SECRET = "SW_ALERTS_ACK_SECRET"


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def make_token(secret: str, ticket_id: int, user: str, receiver: str, expires_s: int) -> str:
    claims = _b64(json.dumps({"t": ticket_id, "u": user, "r": receiver, "e": int(expires_s)},
                             separators=(",", ":"), ensure_ascii=False).encode())
    mac = _b64(hmac.new(secret.encode(), claims.encode(), hashlib.sha256).digest())
    return f"{claims}.{mac}"


def verify_token(secret: str, token: str, now_s: float) -> dict | None:
    """The claims of a valid, unexpired token, else None."""
    try:
        claims, mac = token.split(".")
        want = _b64(hmac.new(secret.encode(), claims.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(want, mac):
            return None
        data = json.loads(_unb64(claims))
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict) or data.get("e", 0) < now_s:
        return None
    return data


def ack_secret() -> str | None:
    return os.environ.get(ENV_SECRET) or None
