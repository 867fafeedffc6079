"""What every channel shares: the rendered message it sends, the error it raises, secret redaction, and the one
way an HTTP channel reaches the network (``pooled_client``: the SSRF policy of ``alerts.config.Outbound``, connections
kept open between messages)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import anyio
import httpcore
import httpx

from alerts.config import Outbound, address_problem, safe_url, url_problem


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


# ------------------------------------------------------------------------------------------------ outbound HTTP
class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, refuses the connection when any address is not allowed, and connects to the
    address it checked: no second lookup in which a rebinding DNS server could answer differently."""

    def __init__(self, policy: Outbound, where: str):
        self.policy, self.where = policy, where
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options=None) -> httpcore.AsyncNetworkStream:
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as e:
            raise httpcore.ConnectError(f"{self.where}: cannot resolve {host} ({e})") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos))
        if not addresses:
            raise httpcore.ConnectError(f"{self.where}: {host} resolves to no address")
        for ip in addresses:
            problem = address_problem(ip, self.policy)
            if problem:
                raise httpcore.ConnectError(f"{self.where}: {host} resolves to {problem}")
        last: Exception | None = None
        for ip in addresses:
            try:
                return await self.inner.connect_tcp(str(ip), port, timeout=timeout, local_address=local_address,
                                                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                last = e
        raise last  # type: ignore[misc]

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


_SSL_CONTEXT: list = []


def _ssl_context():
    """One verifying SSL context for every client: building one loads the CA bundle, ~18 ms of CPU on the worker's
    event loop, in front of the next alarm (docs/performance.md)."""
    if not _SSL_CONTEXT:
        _SSL_CONTEXT.append(httpx.create_ssl_context())
    return _SSL_CONTEXT[0]


class _GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, policy: Outbound, where: str):
        super().__init__(verify=_ssl_context())
        # httpx has no public knob for the network backend; its pool is httpcore's, which takes one
        self._pool = httpcore.AsyncConnectionPool(ssl_context=_ssl_context(),
                                                  network_backend=_GuardedBackend(policy, where))


# event loop id -> (the loop, {(where, timeout, policy): client}); the loop is kept to tell a reused id apart
_POOLS: dict[int, tuple[asyncio.AbstractEventLoop, dict[tuple, httpx.AsyncClient]]] = {}


def pooled_client(url: str, *, receiver: str, label: str, timeout: float,
                  policy: Outbound | None = None) -> httpx.AsyncClient:
    """The HTTP client of one receiver and channel on this event loop, allowed to reach ``url``'s host only if
    ``policy`` (default: https, public addresses, loosened by ``$SW_ALERTS_ALLOW_*``) admits the URL and every
    address its host resolves to. Raises ChannelError naming the receiver and the URL (without its query)
    otherwise. The URL is checked for every message, every new connection against the addresses its host resolves
    to; redirects are not followed (a 3xx could point anywhere) and proxy variables of the environment are ignored
    (the check must see the real peer).

    The client is kept for the next message (do not close it): its connections stay open (HTTP keep-alive), so a
    message no longer pays a client, a TCP connect and, on https, a TLS handshake — several round trips to a
    provider, and CPU on the worker's event loop in front of the next alarm (docs/performance.md). A connection
    the receiver closed while idle is dropped by the pool, and an idle one is closed after 5 s."""
    policy = (policy or Outbound()).effective()
    where = f"receiver {receiver}: {label} URL {safe_url(url)}"
    problem = url_problem(url, policy)
    if problem:
        raise ChannelError(f"{where} refused: {problem}")
    loop = asyncio.get_running_loop()
    entry = _POOLS.get(id(loop))
    if entry is None or entry[0] is not loop:
        for k, (other, _) in list(_POOLS.items()):
            if other.is_closed():  # asyncio.run() per call (CLI, tests): the old loop's clients are dead
                del _POOLS[k]
        entry = _POOLS[id(loop)] = (loop, {})
    key = (where, timeout, policy.model_dump_json())
    client = entry[1].get(key)
    if client is None or client.is_closed:
        client = entry[1][key] = httpx.AsyncClient(timeout=timeout, transport=_GuardedTransport(policy, where),
                                                   trust_env=False, follow_redirects=False)
    return client


async def close_pooled_clients() -> None:
    """Close this event loop's kept clients (a worker shutting down, a test ending)."""
    entry = _POOLS.pop(id(asyncio.get_running_loop()), None)
    if entry is not None:
        for client in entry[1].values():
            await client.aclose()
