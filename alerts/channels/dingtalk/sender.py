"""DingTalk custom robot, "加签" security: ``sign = base64(HMAC-SHA256(secret, f"{timestamp}\\n{secret}"))``,
sent URL-encoded as ``&timestamp=…&sign=…`` next to ``access_token``; the timestamp is in milliseconds and
DingTalk refuses it when more than an hour off. Answer ``{"errcode": 0, "errmsg": "ok"}``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import httpx

from alerts.channels.base import ChannelError, Rendered, check_json_ok, pooled_client, redact
from alerts.config import Outbound


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


class DingtalkSender:
    type = "dingtalk"

    def __init__(self, *, endpoint: str, access_token: str, secret: str, at_mobiles: list[str] | None = None,
                 timeout_s: float = 5.0, label: str = "dingtalk", policy: Outbound | None = None):
        self.policy = policy  # where it may send (alerts.config.Outbound); None: the default
        self.endpoint, self.access_token, self.secret = endpoint, access_token, secret
        self.at_mobiles, self.timeout_s, self.label = at_mobiles or [], timeout_s, label

    async def send(self, msg: Rendered) -> None:
        ts = int(time.time() * 1000)
        params = {"access_token": self.access_token, "timestamp": str(ts), "sign": dingtalk_sign(self.secret, ts)}
        text = msg.markdown
        at = {"atMobiles": self.at_mobiles if msg.urgent else [], "isAtAll": False}
        if at["atMobiles"]:
            text += "\n\n" + " ".join(f"@{m}" for m in at["atMobiles"])
        body = {"msgtype": "markdown", "markdown": {"title": msg.subject, "text": text}, "at": at}
        secrets = [self.access_token, self.secret, params["sign"]]
        try:
            client = pooled_client(self.endpoint, receiver=msg.receiver, label=self.label, timeout=self.timeout_s,
                                   policy=self.policy)
            resp = await client.post(self.endpoint, params=params, json=body)
            check_json_ok(resp)
        except httpx.HTTPError as e:
            raise ChannelError(redact(f"{type(e).__name__}: {e}", secrets)) from None
        except ChannelError as e:
            raise ChannelError(redact(str(e), secrets)) from None
