"""Signed acknowledgement links: ``{ack_url}`` with ``{token}`` = a signed claim (``sitewatch.signed``).

claims = ``{"t": ticket_id, "u": backlog user, "r": receiver, "e": expiry (epoch s)}``. The backlog API
(``backlog/api/ack_links.py``) verifies the token with the same secret (``$SW_ALERTS_ACK_SECRET``) and
acknowledges the ticket as that user; a test signs here and verifies there.
"""

from __future__ import annotations

import os

from sitewatch.signed import ACK_SECRET_ENV, sign, unsign

ENV_SECRET = ACK_SECRET_ENV


def make_token(secret: str, ticket_id: int, user: str, receiver: str, expires_s: int) -> str:
    return sign(secret, {"t": ticket_id, "u": user, "r": receiver, "e": int(expires_s)})


def verify_token(secret: str, token: str, now_s: float) -> dict | None:
    """The claims of a valid, unexpired token, else None."""
    return unsign(secret, token, now_s)


def ack_secret() -> str | None:
    return os.environ.get(ENV_SECRET) or None
