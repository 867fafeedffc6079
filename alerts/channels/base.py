"""What every channel shares: the rendered message it sends, the error it raises, secret redaction."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote


@dataclass
class Rendered:
    """One message to one receiver, rendered for every kind of channel (the channel picks its part)."""

    key: str  # idempotency key: the same message retried or resent after a restart carries the same key
    receiver: str
    language: str
    subject: str  # one line: e-mail subject, IM title
    text: str  # plain text (e-mail body)
    markdown: str  # WeCom / DingTalk markdown
    sms: str  # ≤ the configured SMS length
    params: dict[str, str] = field(default_factory=dict)  # SMS template parameters
    body: dict[str, Any] = field(default_factory=dict)  # generic webhook JSON (stable schema, v=1)
    urgent: bool = False


class ChannelError(Exception):
    """The channel refused or failed the message (the text never contains a secret)."""


class Sender(Protocol):
    type: str
    label: str

    async def send(self, msg: Rendered) -> None: ...


def redact(text: str, secrets: list[str | None]) -> str:
    """Replace every secret (raw and URL-encoded) in ``text`` by ***: error messages quote URLs and bodies."""
    for s in secrets:
        if s and len(s) >= 4:
            for form in {s, quote(s, safe=""), quote(s)}:
                text = text.replace(form, "***")
    return text


def check_json_ok(resp, ok: Any = 0, field: str = "errcode") -> dict[str, Any]:
    """WeCom/DingTalk answer HTTP 200 with {"errcode": N}: anything but ``ok`` is a failure."""
    if resp.status_code // 100 != 2:
        raise ChannelError(f"HTTP {resp.status_code}: {resp.text[:200]}")
    try:
        data = resp.json()
    except ValueError:
        raise ChannelError(f"non-JSON answer: {resp.text[:200]}") from None
    if data.get(field) != ok:
        raise ChannelError(f"{field}={data.get(field)!r}: {str(data)[:200]}")
    return data


_SECRET_QUERY = re.compile(r"([?&](?:key|access_token|sign|token|signature)=)[^&\s\"']+", re.I)


class RedactQuerySecrets(logging.Filter):
    """httpx logs every request URL at INFO; robot keys and tokens travel in the query string. Scrub them."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "=" in msg:
            clean = _SECRET_QUERY.sub(r"\1***", msg)
            if clean != msg:
                record.msg, record.args = clean, ()
        return True


_filter = RedactQuerySecrets()
for _name in ("httpx", "httpcore"):
    if not any(isinstance(f, RedactQuerySecrets) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(_filter)
