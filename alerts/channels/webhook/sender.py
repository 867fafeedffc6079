"""POST an alert as JSON to a webhook.

Receivers get ``Idempotency-Key`` (the alert id: at-least-once delivery means they may see a retry of a
request whose response was lost) and, when a secret is configured, ``X-SiteWatch-Signature:
sha256=<hex HMAC of the body>`` so they can reject forged alerts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender:
    channel = "webhook"

    def __init__(self, url: str, secret: str | None = None, timeout_s: float = 5.0):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook url must be http(s)://, got {url!r}")
        self.url = url
        self.secret = secret
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def send(self, alert: dict[str, Any]) -> None:
        """Raise on anything but a 2xx, so the caller's retry policy sees the failure."""
        body = json.dumps(alert, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": str(alert["alert_id"])}
        if self.secret:
            headers["X-SiteWatch-Signature"] = sign(self.secret, body)
        resp = await self._client.post(self.url, content=body, headers=headers)
        resp.raise_for_status()

    async def aclose(self) -> None:
        await self._client.aclose()
