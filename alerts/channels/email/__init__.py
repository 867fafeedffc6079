"""E-mail over SMTP (stdlib smtplib, run in a thread): STARTTLS, implicit TLS or plain, optional login."""

from alerts.channels.email.sender import EmailSender

__all__ = ["EmailSender"]
