"""Credentials that travel in URLs are kept out of the logs.

Two of the API's links carry a credential in the URL itself: ``/ack/<signed token>`` (acknowledges a ticket as
the user named in it) and ``/wall/login?k=<signed claim>`` (opens a wall session). uvicorn's access log writes
every request line, so without this filter whoever reads the logs could act with them until they expire.
"""

from __future__ import annotations

import logging
import re

_IN_URL = re.compile(r"(/ack/)[^/?#\s\"']+|([?&](?:k|token|access_token|key)=)[^&#\s\"']+")


def scrub(text: str) -> str:
    return _IN_URL.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)


class RedactUrlCredentials(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(scrub(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str) and not record.args:
            record.msg = scrub(record.msg)
        return True


def install(names: tuple[str, ...] = ("uvicorn.access", "uvicorn.error", "uvicorn")) -> None:
    """Idempotent; logging.config.dictConfig (uvicorn's) keeps the filters of loggers that already exist."""
    for name in names:
        lg = logging.getLogger(name)
        if not any(isinstance(f, RedactUrlCredentials) for f in lg.filters):
            lg.addFilter(RedactUrlCredentials())
