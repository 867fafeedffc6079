"""Send a message by SMTP. The Message-ID is derived from the idempotency key, so a resent copy after a restart
is recognisably the same mail (mail clients thread/deduplicate on it)."""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

from alerts.channels.base import ChannelError, Rendered, redact


class EmailSender:
    type = "email"

    def __init__(self, *, host: str, port: int, security: str, username: str | None, password: str | None,
                 sender: str, to: list[str], timeout_s: float = 10.0, label: str = "email"):
        self.host, self.port, self.security = host, port, security
        self.username, self.password, self.sender, self.to = username, password, sender, to
        self.timeout_s, self.label = timeout_s, label

    def build(self, msg: Rendered) -> EmailMessage:
        m = EmailMessage()
        m["Subject"] = msg.subject
        m["From"] = self.sender
        m["To"] = ", ".join(self.to)
        m["Date"] = formatdate(localtime=False)
        domain = self.sender.rpartition("@")[2] or "sitewatch.local"
        m["Message-ID"] = f"<{hashlib.sha256(f'{msg.receiver}/{msg.key}'.encode()).hexdigest()[:32]}@{domain}>"
        m["X-SiteWatch-Key"] = msg.key
        if msg.urgent:
            m["X-Priority"] = "1"
        m.set_content(msg.text)
        return m

    def _send_blocking(self, m: EmailMessage) -> None:
        if self.security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s,
                                                  context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        with smtp:
            smtp.ehlo()
            if self.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self.password or "")
            refused = smtp.send_message(m)
            if refused:
                raise ChannelError(f"recipients refused: {sorted(refused)}")

    async def send(self, msg: Rendered) -> None:
        m = self.build(msg)
        try:
            await asyncio.to_thread(self._send_blocking, m)
        except ChannelError:
            raise
        except (smtplib.SMTPException, OSError) as e:
            raise ChannelError(redact(f"{type(e).__name__}: {e}", [self.password])) from None
