"""Rate limits of the API (OWASP API4, unrestricted resource consumption), on the ``limits`` library.

What is limited and why:

- ``login`` — ``POST /wall/session`` and ``GET /wall/login``, per client address: the two ways to turn a secret
  (a token, a signed link) into a session; a guessing client is slowed to a trickle.
- ``ack`` — ``POST /ack/{token}`` per client address (the link carries its own credential) and
  ``POST /tickets/{id}/acknowledge`` per user: acknowledging stops an alert's escalation, so a runaway script or a
  leaked link must not be able to silence a whole site at machine speed.

No API endpoint sends an SMS today (alerts come only from sensor findings through the notifier); the one
operator action that does, ``sitewatch alerts test --receiver NAME``, is limited per receiver by the alerts room
(``$SW_RATE_ALERTS_TEST``). An endpoint added later that can cause an SMS takes the ``sms`` limit here.

Over the limit: ``429 Too Many Requests`` with ``Retry-After`` (whole seconds until the moving window frees a slot).
Settings come from the environment (``SW_RATE_LOGIN=10/minute``, ``SW_RATE_ACK``, ``SW_RATE_SMS``,
``SW_RATE_STORAGE``, ``SW_RATE_ENABLED``) in the ``limits`` notation (``N/second|minute|hour|day``, ``N per 5
minutes``). The default storage is this process's memory: right for one API process; several processes or hosts
behind a load balancer share one counter through ``SW_RATE_STORAGE=redis://host:6379`` (``pip install redis``), or
else each process grants the limit on its own. Client addresses are the ASGI peer: behind a reverse proxy, run
uvicorn with ``--proxy-headers --forwarded-allow-ips=<the proxy>`` so the peer is the real client and not the proxy.
"""

from __future__ import annotations

import math
import time

from fastapi import Request
from fastapi.responses import JSONResponse
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

NAMES = ("login", "ack", "sms")


class RateLimitSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SW_RATE_", extra="ignore")

    enabled: bool = True
    storage: str = "memory://"
    login: str = "10/minute"
    ack: str = "30/minute"
    sms: str = "5/hour"

    @field_validator("login", "ack", "sms")
    @classmethod
    def _notation(cls, v: str) -> str:
        try:
            parse(v)
        except ValueError:
            raise ValueError(f"{v!r} is not a rate like '10/minute' or '5 per 10 minutes'") from None
        return v


class RateLimited(Exception):
    def __init__(self, name: str, limit: str, retry_after_s: int):
        super().__init__(f"too many {name} requests (limit {limit}); retry in {retry_after_s} s")
        self.name, self.limit, self.retry_after_s = name, limit, retry_after_s


class Limiter:
    """One moving-window counter per (limit, key); ``hit`` counts a request or raises ``RateLimited``."""

    def __init__(self, settings: RateLimitSettings | None = None):
        self.settings = settings or RateLimitSettings()
        self.items: dict[str, RateLimitItem] = {n: parse(getattr(self.settings, n)) for n in NAMES}
        self._strategy = (MovingWindowRateLimiter(storage_from_string(self.settings.storage))
                          if self.settings.enabled else None)

    def hit(self, name: str, key: str) -> None:
        if self._strategy is None:
            return
        item = self.items[name]
        if self._strategy.hit(item, name, key):
            return
        reset_s, _remaining = self._strategy.get_window_stats(item, name, key)
        raise RateLimited(name, getattr(self.settings, name), max(1, math.ceil(reset_s - time.time())))

    def reset(self) -> None:
        if self._strategy is not None:
            self._strategy.storage.reset()


def client_key(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def too_many(exc: RateLimited) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after_s)})


RESPONSES = {429: {"description": "Too many requests: wait for the `Retry-After` seconds"}}
