"""WeCom group robot: ``POST {endpoint}?key=KEY`` with ``{"msgtype": "markdown", "markdown": {"content": …}}``;
the answer is ``{"errcode": 0, "errmsg": "ok"}``. Markdown content is capped at 4096 bytes by WeCom."""

from __future__ import annotations

import httpx

from alerts.channels.base import ChannelError, Rendered, check_json_ok, pooled_client, redact
from alerts.config import Outbound

MAX_BYTES = 4096


def _cap(text: str, limit: int = MAX_BYTES) -> str:
    b = text.encode()
    return text if len(b) <= limit else b[: limit - 3].decode(errors="ignore") + "…"


class WecomSender:
    type = "wecom"

    def __init__(self, *, endpoint: str, key: str, mentioned_mobiles: list[str] | None = None,
                 timeout_s: float = 5.0, label: str = "wecom", policy: Outbound | None = None):
        self.policy = policy  # where it may send (alerts.config.Outbound); None: the default
        self.endpoint, self.key, self.timeout_s, self.label = endpoint, key, timeout_s, label
        self.mentioned_mobiles = mentioned_mobiles or []

    async def send(self, msg: Rendered) -> None:
        content = msg.markdown
        if self.mentioned_mobiles and msg.urgent:
            content += "\n" + " ".join(f"<@{m}>" for m in self.mentioned_mobiles)
        body = {"msgtype": "markdown", "markdown": {"content": _cap(content)}}
        try:
            client = pooled_client(self.endpoint, receiver=msg.receiver, label=self.label, timeout=self.timeout_s,
                                   policy=self.policy)
            resp = await client.post(self.endpoint, params={"key": self.key}, json=body)
            check_json_ok(resp)
        except httpx.HTTPError as e:
            raise ChannelError(redact(f"{type(e).__name__}: {e}", [self.key])) from None
        except ChannelError as e:
            raise ChannelError(redact(str(e), [self.key])) from None
