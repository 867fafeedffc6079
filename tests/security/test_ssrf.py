"""Outbound URLs of the alert channels (OWASP API7, server-side request forgery).

At load: https only, and IP-literal hosts must be public unless the config allows private addresses deliberately
(checked without the network). At send: the host name is resolved and every address checked on the connection
itself, which then goes to the checked address (a DNS answer that changes between check and connect is not
followed). Errors name the receiver and the URL, never the URL's query (keys and tokens travel there).
"""

from __future__ import annotations

import asyncio
import socket

import pytest

import alerts.channels.base as base
from alerts.channels import build_sender
from alerts.channels.base import ChannelError, Rendered, close_pooled_clients, pooled_client
from alerts.channels.webhook import WebhookSender
from alerts.config import AlertsConfigError, Outbound, parse_config, url_problem, webhook_only
from tests.alerts.servers import HttpReceiver


@pytest.fixture(autouse=True)
def default_policy(monkeypatch):
    """The shipped default: the alerts tests' conftest loosens it for their local receivers, these tests do not."""
    monkeypatch.delenv("SW_ALERTS_ALLOW_HTTP", raising=False)
    monkeypatch.delenv("SW_ALERTS_ALLOW_PRIVATE", raising=False)


@pytest.fixture
def http():
    r = HttpReceiver()
    yield r
    r.stop()


def msg(receiver: str = "ops") -> Rendered:
    return Rendered(key="k1", receiver=receiver, language="en", subject="s", text="t", markdown="m", sms="s",
                    body={"alert_id": "k1"})


def load(channel: str, outbound: str = "", providers: str = "") -> object:
    return parse_config(f"{providers}{outbound}receivers:\n  ops:\n    channels:\n      - {channel}\n", "alerts.yaml")


@pytest.mark.parametrize("url, why", [
    ("https://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("https://10.20.30.40/hook", "10.20.30.40 is a private address"),
    ("https://192.168.1.5/hook", "192.168.1.5 is a private address"),
    ("https://127.0.0.1:8443/hook", "127.0.0.1 is a loopback address"),
    ("https://[::1]/hook", "::1 is a loopback address"),
    ("https://[::ffff:10.0.0.1]/hook", "10.0.0.1 is a private address"),
    ("https://[fe80::1]/hook", "fe80::1 is a link-local address"),
    ("https://224.0.0.1/hook", "224.0.0.1 is a multicast address"),
    ("https://0.0.0.0/hook", "0.0.0.0 is an unspecified address"),
    ("https://240.0.0.1/hook", "240.0.0.1 is a reserved address"),
    ("https://localhost/hook", "127.0.0.1 is a loopback address"),
    ("http://hooks.example.cn/hook", "plain http is refused"),
])
def test_refused_at_load_naming_file_line_receiver_and_url(url, why):
    with pytest.raises(AlertsConfigError) as e:
        load(f"{{type: webhook, url: '{url}?token=s3cr3t-in-query'}}")
    text = str(e.value)
    assert "alerts.yaml:4: receivers.ops.channels.0.url: receiver ops: URL " in text, text
    assert why in text and url.split("?")[0].rstrip("/").split("://")[1].split("/")[0].strip("[]") in text
    assert "s3cr3t-in-query" not in text


def test_every_http_destination_is_checked_at_load():
    with pytest.raises(AlertsConfigError, match=r"channels\.0\.endpoint: receiver ops: URL https://10\.0\.0\.9"):
        load("{type: wecom, key: 'env:K', endpoint: 'https://10.0.0.9/cgi-bin/webhook/send'}")
    with pytest.raises(AlertsConfigError, match=r"channels\.0\.endpoint: receiver ops: .*169\.254\.169\.254"):
        load("{type: dingtalk, access_token: 'env:A', secret: 'env:S', endpoint: 'https://169.254.169.254/'}")
    prov = ("providers:\n  tx: {type: tencent_sms, endpoint: 'https://127.0.0.1/', secret_id: 'env:I', "
            "secret_key: 'env:K', sdk_app_id: '1', sign_name: s, template_id: '1'}\n")
    with pytest.raises(AlertsConfigError, match=r"alerts.yaml:2: providers\.tx\.endpoint: provider tx: .*loopback"):
        load("{type: sms, provider: tx, phone: '13800000000'}", providers=prov)


def test_public_hosts_pass_without_the_network():
    # IP literals are judged without DNS; names are not resolved at load (an unresolvable one fails at send)
    for url in ("https://8.8.8.8/hook", "https://hooks.example.cn/x?key=1", "https://no-such-host.invalid/x",
                "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"):
        assert url_problem(url, Outbound()) is None, url
    cfg = load("{type: webhook, url: 'https://hooks.example.cn/x'}")
    assert cfg.receivers["ops"].channels[0].url == "https://hooks.example.cn/x"


def test_private_receivers_allowed_deliberately():
    cfg = load("{type: webhook, url: 'http://127.0.0.1:8787/hook'}",
               outbound="outbound: {allow_http: true, allow_private: true}\n")
    assert cfg.outbound.allow_private
    load("{type: webhook, url: 'https://[::1]/hook'}", outbound="outbound: {allow_private: true}\n")
    load("{type: webhook, url: 'https://10.1.2.3/hook'}", outbound="outbound: {allow_private: true}\n")
    # allow_private does not open the metadata service; only listing that network does
    with pytest.raises(AlertsConfigError, match="169.254.169.254 is a link-local address"):
        load("{type: webhook, url: 'https://169.254.169.254/'}", outbound="outbound: {allow_private: true}\n")
    load("{type: webhook, url: 'https://169.254.169.254/'}",
         outbound="outbound: {allowed_networks: [169.254.169.254/32]}\n")
    # a network listed alone admits that network, not every private one
    load("{type: webhook, url: 'https://10.8.0.5/'}", outbound="outbound: {allowed_networks: [10.8.0.0/24]}\n")
    with pytest.raises(AlertsConfigError, match="10.9.0.5 is a private address"):
        load("{type: webhook, url: 'https://10.9.0.5/'}", outbound="outbound: {allowed_networks: [10.8.0.0/24]}\n")


def test_environment_loosens_for_tests_and_demos(monkeypatch):
    with pytest.raises(AlertsConfigError):
        load("{type: webhook, url: 'http://127.0.0.1:9/hook'}")
    monkeypatch.setenv("SW_ALERTS_ALLOW_HTTP", "1")
    monkeypatch.setenv("SW_ALERTS_ALLOW_PRIVATE", "true")
    load("{type: webhook, url: 'http://127.0.0.1:9/hook'}")


def test_host_allowlist():
    out = "outbound: {allowed_hosts: [qyapi.weixin.qq.com, '*.example.cn']}\n"
    load("{type: webhook, url: 'https://hooks.example.cn/x'}", outbound=out)
    load("{type: wecom, key: 'env:K'}", outbound=out)  # the default endpoint, qyapi.weixin.qq.com
    with pytest.raises(AlertsConfigError, match="host evil.example.com is not in outbound.allowed_hosts"):
        load("{type: webhook, url: 'https://evil.example.com/x'}", outbound=out)
    with pytest.raises(AlertsConfigError, match="not in outbound.allowed_hosts"):
        load("{type: webhook, url: 'https://example.cn.evil.com/x'}", outbound=out)


def test_zero_config_webhook_allows_exactly_its_own_address():
    cfg = webhook_only("http://127.0.0.1:8787/alerts", None)
    assert [str(n) for n in cfg.outbound.allowed_networks] == ["127.0.0.1/32"] and cfg.outbound.allow_http
    assert not cfg.outbound.allow_private
    assert url_problem("http://127.0.0.2/alerts", cfg.outbound) is not None
    assert webhook_only("https://hooks.example.cn/a", None).outbound.allowed_networks == []
    local = webhook_only("http://localhost:8787/alerts", None).outbound
    assert [str(n) for n in local.allowed_networks] == ["127.0.0.1/32", "::1/128"]


# ------------------------------------------------------------------------------------------------ at send time
def send(sender, receiver: str = "ops") -> None:
    asyncio.run(sender.send(msg(receiver)))


def test_send_refuses_a_name_that_resolves_to_localhost():
    """``localhost`` by the real resolver; the sender was built by hand, past the config's check."""
    with pytest.raises(ChannelError) as e:
        send(WebhookSender("https://localhost:9/hook?token=abc123", label="ops-hook"))
    assert "receiver ops: ops-hook URL https://localhost:9/hook" in str(e.value)
    assert "loopback" in str(e.value) and "abc123" not in str(e.value)


def test_send_checks_every_resolved_address(monkeypatch):
    """A public-looking name whose DNS answers a private address (or a public and a private one: rebinding)."""
    answers = {"hooks.example.cn": ["93.184.216.34", "10.0.0.7"], "meta.example.cn": ["169.254.169.254"]}

    async def fake_getaddrinfo(host, port, **_kw):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[host]]

    monkeypatch.setattr(base.anyio, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(ChannelError) as e:
        send(WebhookSender("https://hooks.example.cn/hook"), receiver="zhao")
    assert "receiver zhao" in str(e.value) and "https://hooks.example.cn/hook" in str(e.value)
    assert "hooks.example.cn resolves to 10.0.0.7 is a private address" in str(e.value)
    with pytest.raises(ChannelError, match="169.254.169.254 is a link-local"):
        send(WebhookSender("https://meta.example.cn/"))


def test_send_connects_to_the_address_it_checked(monkeypatch, http):
    """The name is resolved once, by the guard, and the connection goes to that address (the real resolver
    knows nothing of this name); the request still carries the name in its Host header."""
    async def fake_getaddrinfo(host, port, **_kw):
        assert host == "hooks.test.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(base.anyio, "getaddrinfo", fake_getaddrinfo)
    url = f"http://hooks.test.example:{http.port}/plain"
    send(WebhookSender(url, policy=Outbound(allow_http=True, allow_private=True)))
    (req,) = http.got("/plain")
    assert req.headers["Host"] == f"hooks.test.example:{http.port}"


def test_allowed_private_receiver_is_reached_by_name(http):
    send(WebhookSender(f"http://localhost:{http.port}/plain", policy=Outbound(allow_http=True, allow_private=True)))
    assert len(http.got("/plain")) == 1


def test_unresolvable_name_fails_at_send_not_at_load():
    cfg = load("{type: webhook, url: 'https://no-such-host.invalid/hook'}")  # loads
    with pytest.raises(ChannelError) as e:
        send(build_sender(cfg, cfg.receivers["ops"].channels[0]))
    assert "receiver ops: webhook URL https://no-such-host.invalid/hook" in str(e.value)
    assert "cannot resolve no-such-host.invalid" in str(e.value)


def test_build_sender_carries_the_config_policy(http):
    ok = load(f"{{type: webhook, url: 'http://127.0.0.1:{http.port}/plain'}}",
              outbound="outbound: {allow_http: true, allow_private: true}\n")
    send(build_sender(ok, ok.receivers["ops"].channels[0]))
    assert len(http.got("/plain")) == 1


def test_redirects_are_not_followed():
    async def made():
        client = pooled_client("https://hooks.example.cn/", receiver="ops", label="hook", timeout=1)
        try:
            return client.follow_redirects, client._trust_env
        finally:
            await close_pooled_clients()

    assert asyncio.run(made()) == (False, False)
