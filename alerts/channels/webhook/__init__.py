"""Generic webhook channel: JSON body, HMAC-SHA256 signature, idempotency key, timeouts."""

from alerts.channels.webhook.sender import WebhookSender, sign

__all__ = ["WebhookSender", "sign"]
