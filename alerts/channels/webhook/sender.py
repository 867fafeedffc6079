"""POST a message as JSON to a webhook.

Receivers get ``Idempotency-Key`` (the message key: for a single alert, the alert id; at-least-once delivery
means they may see a retry of a request whose response was lost) and, when a secret is configured,
``X-SiteWatch-Signature: sha256=<hex HMAC of the body>`` so they can reject forged alerts.

Body schema v1 (stable): the lead alert's own fields (``alert_id``, ``action``, ``ticket``, ``finding``,
``reading_ts`` …) at the top level, plus ``kind`` (alert | escalation | reminder | resolved | test | group),
``receiver``, ``text`` (the rendered message) and ``items`` (every alert the message carries; one unless it is a
grouped storm).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx

from alerts.channels.base import ChannelError, Rendered, pooled_client, redact
from alerts.config import Outbound


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender:
    type = "webhook"
    channel = "webhook"

    def __init__(self, url: str, secret: str | None = None, timeout_s: float = 5.0, label: str = "webhook",
                 policy: Outbound | None = None):
        self.policy = policy  # where it may send (alerts.config.Outbound); None: the default
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook url must be http(s)://, got {url!r}")
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self.label = label

    async def send(self, msg: Rendered | dict[str, Any]) -> None:
        """Raise on anything but a 2xx, so the caller's retry policy sees the failure."""
        if isinstance(msg, Rendered):
            payload, key = msg.body, msg.key
        else:  # a bare alert dict (pre-issue-6 callers)
            payload, key = msg, str(msg["alert_id"])
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        if self.secret:
            headers["X-SiteWatch-Signature"] = sign(self.secret, body)
        try:
            client = pooled_client(self.url, receiver=getattr(msg, "receiver", self.label), label=self.label,
                                   timeout=self.timeout_s, policy=self.policy)
            resp = await client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as e:
            raise ChannelError(redact(f"{type(e).__name__}: {e}", [self.secret])) from None
        if resp.status_code // 100 != 2:
            raise ChannelError(f"HTTP {resp.status_code}")

    async def aclose(self) -> None:  # kept for callers of the pre-issue-6 interface
        return None
