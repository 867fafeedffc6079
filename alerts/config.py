"""Alert routing configuration: receivers, routes with on-call tiers, defaults. YAML validated by pydantic.

Errors name ``file:line: field.path: problem`` like the detector rules (the YAML-with-line-numbers helpers of
``sitewatch.rules`` are reused). Secrets are never written in the YAML: a secret field holds a *reference*,
``env:VARIABLE`` (read from the environment) or ``file:NAME`` (a key of the secrets file named by
``secrets_file:`` or ``$SW_ALERTS_SECRETS``); a literal value is refused at load time.

See ``config/alerts/example.yaml`` and ``docs/alerts.md``.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
from datetime import time as dtime
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError, field_validator,
                      model_validator)

from sitewatch.rules import Duration, PositiveDuration, RulesError, _fmt_problem, _line_of, _parse_stream

LEVELS = {"yellow": 1, "orange": 2, "red": 3}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,119}$")


class AlertsConfigError(ValueError):
    """Invalid alerts configuration; each line reads ``file:line: field.path: problem``."""

    def __init__(self, problems: list[tuple[str, int | None, str, str]]):
        self.problems = problems
        super().__init__("\n".join(_fmt_problem(*p) for p in problems))


class SecretError(RuntimeError):
    """A secret reference that cannot be resolved (the message names the reference, never a value)."""


# ------------------------------------------------------------------------------------------------ value types
def _secret_ref(v: Any) -> Any:
    if v is None:
        return v
    if not isinstance(v, str) or not re.match(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:[A-Za-z0-9_.-]+)$", v):
        raise ValueError("secrets are not written here: use 'env:VARIABLE' or 'file:NAME' "
                         "(a key of the secrets file)")
    return v


SecretRef = Annotated[str, BeforeValidator(_secret_ref)]


def _str_list(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, (str, int, bool)):
        return [v]
    return v


def _level_list(v: Any) -> Any:
    v = _str_list(v)
    if v is None:
        return None
    out = []
    for x in v:
        if isinstance(x, str) and x in LEVELS:
            out.append(LEVELS[x])
        elif isinstance(x, int) and not isinstance(x, bool) and x in (1, 2, 3):
            out.append(x)
        else:
            raise ValueError(f"{x!r} is not a level (yellow, orange, red or 1-3)")
    return out


StrList = Annotated[list[str], BeforeValidator(_str_list)]
LevelList = Annotated[list[int], BeforeValidator(_level_list)]


def _hhmm(v: Any) -> Any:
    if isinstance(v, int):  # YAML 1.1 reads 22:00 as a sexagesimal int
        return dtime(v // 60 % 24, v % 60)
    if isinstance(v, str):
        m = re.match(r"^(\d{1,2}):(\d{2})$", v.strip())
        if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
            raise ValueError(f"{v!r} is not a time of day like '22:00'")
        return dtime(int(m.group(1)), int(m.group(2)))
    return v


TimeOfDay = Annotated[dtime, BeforeValidator(_hhmm)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------------------ outbound URLs
IpAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
_TRUE = ("1", "true", "yes", "on")
ENV_ALLOW_HTTP = "SW_ALERTS_ALLOW_HTTP"
ENV_ALLOW_PRIVATE = "SW_ALERTS_ALLOW_PRIVATE"


def _networks(v: Any) -> Any:
    v = _str_list(v)
    return [ipaddress.ip_network(str(x), strict=False) for x in v] if v is not None else v


class Outbound(_Model):
    """Where the HTTP channels may send (server-side request forgery, OWASP API7).

    By default: ``https://`` only, to public addresses only. Loopback and private addresses (RFC 1918, ULA) are
    refused unless ``allow_private`` (or ``$SW_ALERTS_ALLOW_PRIVATE=1``); link-local (169.254.0.0/16, the cloud
    metadata service), multicast, unspecified and reserved addresses are refused even then, unless a network is
    listed in ``allowed_networks`` (which also admits a private network without opening all of them).
    ``allowed_hosts``, when given, is the only set of host names (``qyapi.weixin.qq.com``, ``*.example.cn``)
    the channels may reach. Names are resolved when a message is sent, and every address they resolve to is
    checked on the connection itself (a name that re-resolves to a private address is caught).
    """

    allow_http: bool = False
    allow_private: bool = False
    allowed_hosts: StrList = []
    allowed_networks: Annotated[list[ipaddress.IPv4Network | ipaddress.IPv6Network], BeforeValidator(_networks)] = []

    def effective(self) -> "Outbound":
        """This policy loosened by the environment (``$SW_ALERTS_ALLOW_HTTP``, ``$SW_ALERTS_ALLOW_PRIVATE``: tests
        and demos with receivers on this machine)."""
        http = self.allow_http or os.environ.get(ENV_ALLOW_HTTP, "").lower() in _TRUE
        private = self.allow_private or os.environ.get(ENV_ALLOW_PRIVATE, "").lower() in _TRUE
        if (http, private) == (self.allow_http, self.allow_private):
            return self
        return self.model_copy(update={"allow_http": http, "allow_private": private})

    def host_allowed(self, host: str) -> bool:
        if not self.allowed_hosts:
            return True
        host = host.lower().rstrip(".")
        return any(host == h.lower() or (h.startswith("*.") and host.endswith(h[1:].lower()))
                   for h in self.allowed_hosts)


def address_problem(ip: IpAddress, policy: Outbound) -> str | None:
    """Why ``ip`` may not be a destination under ``policy``, or None."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(ip in n for n in policy.allowed_networks if n.version == ip.version):
        return None
    if ip.is_loopback:
        kind, privately = "loopback", True
    elif ip.is_link_local:
        kind, privately = "link-local", False  # 169.254.169.254: the cloud metadata service
    elif ip.is_multicast:
        kind, privately = "multicast", False
    elif ip.is_unspecified:
        kind, privately = "unspecified", False
    elif ip.is_reserved:
        kind, privately = "reserved", False
    elif ip.is_global:
        return None
    elif ip.is_private:
        kind, privately = "private", True
    else:
        kind, privately = "reserved", False
    if privately and policy.allow_private:
        return None
    how = ("outbound.allow_private: true or list it in outbound.allowed_networks" if privately
           else "list it in outbound.allowed_networks")
    return f"{ip} is {'an' if kind[0] in 'aeiou' else 'a'} {kind} address (refused by default: {how})"


def safe_url(url: str) -> str:
    """The URL without its query and user info (robot keys and tokens travel there), for error messages."""
    try:
        u = urlsplit(url)
        host = u.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        return f"{u.scheme}://{host}{f':{u.port}' if u.port else ''}{u.path}"
    except ValueError:
        return "(unparsable URL)"


def url_problem(url: str, policy: Outbound) -> str | None:
    """What is wrong with ``url`` as a destination, checked without the network: scheme, host allowlist, and the
    address when the host is an IP literal (names are resolved and checked when sending)."""
    try:
        u = urlsplit(url)
        _ = u.port  # a port that is not a number raises here
    except ValueError as e:
        return f"not a valid URL ({e})"
    if u.scheme not in ("http", "https"):
        return "must be an https:// URL"
    if u.scheme == "http" and not policy.allow_http:
        return f"plain http is refused (use https, or set outbound.allow_http: true / ${ENV_ALLOW_HTTP}=1)"
    host = u.hostname
    if not host:
        return "has no host"
    if not policy.host_allowed(host):
        return f"host {host} is not in outbound.allowed_hosts"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host.rstrip(".").lower() == "localhost" or host.rstrip(".").lower().endswith(".localhost"):
            return address_problem(ipaddress.ip_address("127.0.0.1"), policy)
        return None
    return address_problem(ip, policy)


def outbound_urls(cfg: "AlertsConfig") -> list[tuple[str, str, str]]:
    """(config path, receiver or provider name, URL) of every HTTP destination of ``cfg``."""
    out = []
    for name, r in cfg.receivers.items():
        for i, ch in enumerate(r.channels):
            for field in ("url", "endpoint"):
                if isinstance(getattr(ch, field, None), str):
                    out.append((f"receivers.{name}.channels.{i}.{field}", f"receiver {name}", getattr(ch, field)))
    for name, p in cfg.providers.items():
        if p.type in ("aliyun_sms", "tencent_sms"):
            out.append((f"providers.{name}.endpoint", f"provider {name}", p.endpoint))
    return out


# ------------------------------------------------------------------------------------------------ matching
class Matcher(_Model):
    """Every given field must match (AND); a list means any of its values (OR). ``kind``/``device`` take globs."""

    site: StrList | None = None
    company: StrList | None = None
    family: StrList | None = None
    device: StrList | None = None
    kind: StrList | None = None
    category: StrList | None = None
    level: LevelList | None = None
    major: bool | None = None

    def matches(self, facts: dict[str, Any]) -> bool:
        for field in ("site", "company", "family", "category"):
            want = getattr(self, field)
            if want is not None and facts.get(field) not in want:
                return False
        for field in ("device", "kind"):
            want = getattr(self, field)
            if want is not None and not any(fnmatch.fnmatchcase(str(facts.get(field) or ""), p) for p in want):
                return False
        if self.level is not None and facts.get("level") not in self.level:
            return False
        if self.major is not None and bool(facts.get("major")) != self.major:
            return False
        return True

    def describe(self) -> str:
        parts = []
        for k, v in self.model_dump(exclude_none=True).items():
            if k == "level":
                v = [LEVEL_NAMES[x] for x in v]
            parts.append(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}")
        return " ".join(parts) or "(everything)"


# ------------------------------------------------------------------------------------------------ channels
class _Channel(_Model):
    name: str | None = None  # shown in logs and `alerts test`; defaults to the type
    timeout: Duration = 5.0

    @property
    def label(self) -> str:
        return self.name or self.type  # type: ignore[attr-defined]


class WebhookChannel(_Channel):
    type: Literal["webhook"]
    url: str
    secret: SecretRef | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v):
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s):// URL")
        return v


class SmsChannel(_Channel):
    type: Literal["sms"]
    provider: str  # a key of ``providers``
    phone: str

    @field_validator("phone")
    @classmethod
    def _phone(cls, v):
        if not re.match(r"^\+?[0-9]{6,20}$", v):
            raise ValueError("a phone number is digits with an optional leading +")
        return v


class WecomChannel(_Channel):
    type: Literal["wecom"]
    key: SecretRef  # the group robot's webhook key
    endpoint: str = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"
    mentioned_mobiles: list[str] = []


class DingtalkChannel(_Channel):
    type: Literal["dingtalk"]
    access_token: SecretRef
    secret: SecretRef  # the robot's 加签 secret (SEC...)
    endpoint: str = "https://oapi.dingtalk.com/robot/send"
    at_mobiles: list[str] = []


class EmailChannel(_Channel):
    type: Literal["email"]
    provider: str  # a key of ``providers`` (type smtp)
    to: StrList


Channel = Annotated[Union[WebhookChannel, SmsChannel, WecomChannel, DingtalkChannel, EmailChannel],
                    Field(discriminator="type")]


class AliyunSms(_Model):
    type: Literal["aliyun_sms"]
    endpoint: str = "https://dysmsapi.aliyuncs.com/"
    region: str = "cn-hangzhou"
    access_key_id: SecretRef
    access_key_secret: SecretRef
    sign_name: str
    template_code: str
    params: list[str] = ["site", "device", "level", "value", "threshold", "link"]
    timeout: Duration = 5.0


class TencentSms(_Model):
    type: Literal["tencent_sms"]
    endpoint: str = "https://sms.tencentcloudapi.com/"
    region: str = "ap-guangzhou"
    secret_id: SecretRef
    secret_key: SecretRef
    sdk_app_id: str
    sign_name: str
    template_id: str
    params: list[str] = ["site", "device", "level", "value", "threshold", "link"]
    timeout: Duration = 5.0


class Smtp(_Model):
    type: Literal["smtp"]
    host: str
    port: int = 25
    security: Literal["none", "starttls", "ssl"] = "starttls"
    username: str | None = None
    password: SecretRef | None = None
    sender: str  # From:
    timeout: Duration = 10.0


Provider = Annotated[Union[AliyunSms, TencentSms, Smtp], Field(discriminator="type")]


# ------------------------------------------------------------------------------------------------ people, routes
class QuietHours(_Model):
    """Non-urgent messages inside [start, end) wait until ``end``; red alerts and major hazards never wait."""

    start: TimeOfDay
    end: TimeOfDay
    tz: str = "Asia/Shanghai"

    @field_validator("tz")
    @classmethod
    def _tz(cls, v):
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(v)
        except Exception:
            raise ValueError(f"unknown time zone {v!r}") from None
        return v


class RateLimit(_Model):
    """At most ``max`` messages per ``per``; the rest wait and go out merged. Red/major are never held."""

    max: Annotated[int, Field(ge=1)]
    per: PositiveDuration


class Receiver(_Model):
    display_name: str | None = None
    user: str | None = None  # backlog user name: signed acknowledgement links act as this user
    language: Literal["zh", "en"] | None = None
    channels: Annotated[list[Channel], Field(min_length=1)]
    quiet_hours: QuietHours | None = None
    rate_limit: RateLimit | None = None


class Tier(_Model):
    """Notify ``receivers`` once the alert has gone ``after`` unacknowledged (0 = at once)."""

    receivers: Annotated[StrList, Field(min_length=1)]
    after: Duration = 0.0
    major_only: bool = False  # e.g. the bureau supervisor: only for 重大事故隐患
    name: str | None = None


class Route(_Model):
    name: str
    match: Matcher = Matcher()
    tiers: Annotated[list[Tier], Field(min_length=1)]
    group_by: list[Literal["site", "company", "family", "kind", "device"]] = ["site"]
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    remind_red_every: Duration | None = None  # 0 switches reminders off for this route
    resolve_notice: bool = True
    continue_: bool = Field(False, alias="continue")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _tiers_ordered(self):
        afters = [t.after for t in self.tiers if not t.major_only]
        if any(b < a for a, b in zip(afters, afters[1:])):
            raise ValueError("tiers must be listed in escalation order (after: not decreasing)")
        return self


class Defaults(_Model):
    language: Literal["zh", "en"] = "zh"
    ticket_url: str = "http://127.0.0.1:8700/tickets/{id}"
    site_url: str | None = None  # link of a grouped message, e.g. https://sw.example.cn/s/{site}
    ack_url: str | None = None  # e.g. https://sitewatch.example.cn/ack/{token}; signed with ack_secret
    ack_secret: SecretRef | None = None  # default: $SW_ALERTS_ACK_SECRET (the backlog API checks with the same)
    templates_dir: Path | None = None  # files {part}.{lang}.j2 here override the built-in templates
    ack_link_ttl: Duration = 7 * 86400.0
    group_wait: Duration = 10.0
    group_interval: Duration = 120.0
    remind_red_every: Duration = 1800.0
    sms_max_chars: Annotated[int, Field(ge=20)] = 70
    retry_attempts: Annotated[int, Field(ge=1, le=10)] = 3  # per channel per delivery round, before failover
    retry_backoff: Duration = 0.5  # base of the exponential backoff (with jitter) between attempts
    max_backoff: Duration = 600.0  # rounds that failed on every channel are retried durably up to this far apart


class AlertsConfig(_Model):
    version: Literal[1] = 1
    secrets_file: Path | None = None
    defaults: Defaults = Defaults()
    sites: dict[str, dict[str, str]] = {}  # site -> {company: code}; else the backlog's projects are asked
    providers: dict[str, Provider] = {}
    receivers: dict[str, Receiver]
    routes: list[Route] = []
    default_receivers: StrList = []  # when no route matches (else the alert is logged as unrouted)
    outbound: Outbound = Outbound()  # where HTTP channels may send: https, public addresses (see Outbound)
    _secret_overrides: dict[str, str] = PrivateAttr(default_factory=dict)  # set in code, never from YAML

    @model_validator(mode="after")
    def _references(self):
        problems = []
        for name in self.receivers:
            if not _NAME_RE.match(name):
                problems.append(f"receiver name {name!r} must be letters, digits, '_.@-'")
        for name, r in self.receivers.items():
            for i, ch in enumerate(r.channels):
                prov = getattr(ch, "provider", None)
                if prov is not None:
                    p = self.providers.get(prov)
                    want = ("aliyun_sms", "tencent_sms") if ch.type == "sms" else ("smtp",)
                    if p is None or p.type not in want:
                        problems.append(f"receivers.{name}.channels.{i}.provider: no {'/'.join(want)} provider "
                                        f"named {prov!r}")
        for i, route in enumerate(self.routes):
            for j, tier in enumerate(route.tiers):
                for rname in tier.receivers:
                    if rname not in self.receivers:
                        problems.append(f"routes.{i}.tiers.{j}.receivers: unknown receiver {rname!r}")
        for rname in self.default_receivers:
            if rname not in self.receivers:
                problems.append(f"default_receivers: unknown receiver {rname!r}")
        policy = self.outbound.effective()
        for path, who, url in outbound_urls(self):
            problem = url_problem(url, policy)
            if problem:
                problems.append(f"{path}: {who}: URL {safe_url(url)} refused: {problem}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -------------------------------------------------------------------------------------------- secrets
    def secret(self, ref: str | None) -> str | None:
        """Resolve ``env:VAR`` / ``file:NAME``. Raises SecretError naming the reference (never a value)."""
        if ref is None:
            return None
        if ref in self._secret_overrides:
            return self._secret_overrides[ref]
        kind, _, name = ref.partition(":")
        if kind == "env":
            v = os.environ.get(name)
            if not v:
                raise SecretError(f"secret {ref} is not set in the environment")
            return v
        path = self.secrets_file or (Path(os.environ["SW_ALERTS_SECRETS"]) if os.environ.get("SW_ALERTS_SECRETS")
                                     else None)
        if path is None:
            raise SecretError(f"secret {ref}: no secrets file (secrets_file: or $SW_ALERTS_SECRETS)")
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise SecretError(f"secret {ref}: cannot read the secrets file ({e.strerror})") from None
        v = data.get(name) if isinstance(data, dict) else None
        if not v:
            raise SecretError(f"secret {ref} is not in the secrets file")
        return str(v)


# ------------------------------------------------------------------------------------------------ loading
def _to_problems(e: RulesError) -> AlertsConfigError:
    return AlertsConfigError(list(e.problems))


_TAGS = {"webhook", "sms", "wecom", "dingtalk", "email", "aliyun_sms", "tencent_sms", "smtp"}


def _problems_for_model_errors(exc: ValidationError, filename: str, node: Any) -> list:
    out = []
    for err in exc.errors():
        loc = [x for x in err["loc"] if not (isinstance(x, str) and x.startswith(("function-", "list[")))]
        # drop the discriminator tag pydantic puts in the location of a union member (channels.0.wecom.key)
        loc = [x for i, x in enumerate(loc)
               if not (x in _TAGS and i > 0 and (isinstance(loc[i - 1], int) or (i > 1 and loc[i - 2] == "providers")))]
        msg = err["msg"].removeprefix("Value error, ")
        path = ".".join(map(str, loc))
        if not loc:  # cross-reference errors: "a.b.c: problem; d.e: problem", each at its own line
            for part in msg.split("; "):
                sub, sep, rest = part.partition(": ")
                if sep and re.match(r"^[\w.@-]+$", sub):
                    keys = [int(x) if x.isdigit() else x for x in sub.split(".")]
                    out.append((filename, _line_of(node, keys), sub, rest))
                else:
                    out.append((filename, _line_of(node, []), "", part))
        else:
            out.append((filename, _line_of(node, loc), path, msg))
    return out


def parse_config(text: str, filename: str = "<text>") -> AlertsConfig:
    try:
        docs = _parse_stream(text, filename)
    except RulesError as e:
        raise _to_problems(e) from None
    if len(docs) != 1:
        raise AlertsConfigError([(filename, None, "", "expected exactly one YAML document")])
    node, data = docs[0]
    if not isinstance(data, dict):
        raise AlertsConfigError([(filename, _line_of(node, []), "", "the alerts config must be a mapping")])
    try:
        cfg = AlertsConfig.model_validate(data)
    except ValidationError as e:
        raise AlertsConfigError(_problems_for_model_errors(e, filename, node)) from None
    if cfg.secrets_file is not None and not cfg.secrets_file.is_absolute() and filename not in ("<text>",):
        cfg = cfg.model_copy(update={"secrets_file": Path(filename).parent / cfg.secrets_file})
    return cfg


def load_config(path: str | Path) -> AlertsConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise AlertsConfigError([(str(p), None, "", f"cannot read: {e.strerror}")]) from None
    return parse_config(text, str(p))


def webhook_only(url: str, secret: str | None) -> AlertsConfig:
    """The zero-config default ($SW_WEBHOOK_URL alone): one receiver ``webhook`` that gets every alert at once,
    one message per alert, no escalation, reminders or resolution notices.

    The operator's own environment names this one URL, so it is its own allowlist: its scheme and, when its host
    is an IP literal (``http://127.0.0.1:8787/alerts`` in demos and tests), exactly that address are allowed. A
    host *name* is still checked when sending: it must resolve to public addresses."""
    ch: dict[str, Any] = {"type": "webhook", "url": url}
    if secret:
        ch["secret"] = "env:SW_WEBHOOK_SECRET"
    cfg = AlertsConfig.model_validate({
        "outbound": _exactly(url),
        "defaults": {"group_wait": 0, "group_interval": 0, "remind_red_every": 0},
        "receivers": {"webhook": {"channels": [ch]}},
        "routes": [{"name": "everything", "tiers": [{"receivers": ["webhook"]}], "group_by": [],
                    "resolve_notice": False}],
    })
    if secret:
        cfg._secret_overrides["env:SW_WEBHOOK_SECRET"] = secret
    return cfg


def _exactly(url: str) -> dict[str, Any]:
    """The policy admitting just ``url``: its scheme, and its own address when that is written in it."""
    try:
        u = urlsplit(url)
        host = (u.hostname or "").rstrip(".").lower()
        ips = ([ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")] if host == "localhost"
               else [ipaddress.ip_address(host)])
    except ValueError:
        return {"allow_http": url.startswith("http://")}
    return {"allow_http": u.scheme == "http", "allowed_networks": [f"{ip}/{ip.max_prefixlen}" for ip in ips]}
