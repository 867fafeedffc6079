"""Rate limits (OWASP API4): the wall's logins, acknowledgement by signed link and by API, and the one operator
action that can send an SMS (``sitewatch alerts test``). Each limit trips with 429 + Retry-After, is per client
(address, user or receiver), and frees up again once its window has passed.

The API runs under a real uvicorn (``ApiServer``), its limits set through the environment like in production.
Windows are a few seconds so the reset is observed for real, by waiting the announced Retry-After.
"""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from alerts.links import make_token
from app.cli import main
from backlog import orgs
from backlog.api.ratelimit import Limiter, RateLimited, RateLimitSettings
from backlog.api.wall import login_link
from tests.alerts.conftest import secrets_env, smtp  # noqa: F401 - fixtures
from tests.alerts.servers import HttpReceiver
from tests.backlog.conftest import ApiServer, Clock, backlog, clock, finding, org  # noqa: F401 - fixtures

# long enough that three requests fit in it even on a loaded machine, short enough to wait out for the reset
WINDOW = "3 per 5 seconds"


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'backlog.db'}"


@pytest.fixture
def limited(monkeypatch, org, tmp_path):
    """The API with every limit at 3 per 5 s (from the environment), and the demo org's tokens."""
    for name in ("LOGIN", "ACK", "SMS"):
        monkeypatch.setenv(f"SW_RATE_{name}", WINDOW)
    monkeypatch.setenv("SW_ALERTS_ACK_SECRET", "ack-secret-for-rate-tests")
    server = ApiServer(org, tmp_path / "evidence").start()
    yield server
    server.stop()


def wait_out(r) -> None:
    """Wait the Retry-After the 429 announced (whole seconds, at least 1)."""
    assert r.status_code == 429, r.text
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= 5
    time.sleep(retry + 0.05)


def test_limiter_trips_per_key_and_resets():
    lim = Limiter(RateLimitSettings(login="2 per 1 second"))
    lim.hit("login", "a")
    lim.hit("login", "a")
    with pytest.raises(RateLimited) as e:
        lim.hit("login", "a")
    assert e.value.retry_after_s == 1 and "2 per 1 second" in str(e.value)
    lim.hit("login", "b")  # another client is not affected
    time.sleep(1.05)
    lim.hit("login", "a")
    lim.reset()


def test_settings_from_environment_and_bad_notation_refused(monkeypatch):
    monkeypatch.setenv("SW_RATE_LOGIN", "7/minute")
    monkeypatch.setenv("SW_RATE_ENABLED", "false")
    s = RateLimitSettings()
    assert s.login == "7/minute" and not s.enabled and s.ack == "30/minute" and s.sms == "5/hour"
    lim = Limiter(s)
    for _ in range(20):
        lim.hit("login", "a")  # disabled: never raises
    monkeypatch.setenv("SW_RATE_ACK", "lots")
    with pytest.raises(ValidationError, match="not a rate"):
        RateLimitSettings()


def test_wall_login_limited_per_address_and_resets(limited, org):
    token = orgs.create_token(org, "sun.supervisor")
    with limited.client(None) as c:
        assert c.post("/wall/session", json={"token": "sw_wrong"}).status_code == 401
        assert c.post("/wall/session", json={"token": token}).status_code == 200
        # the signed link shares the login limit: it turns a secret into a session too
        link = login_link(limited.url, token).removeprefix(limited.url)
        assert c.get(link, follow_redirects=False).status_code == 303
        r = c.post("/wall/session", json={"token": token})  # a right token does not get past the limit either
        assert r.status_code == 429 and "login" in r.json()["detail"]
        assert c.get(link, follow_redirects=False).status_code == 429
        wait_out(r)
        assert c.post("/wall/session", json={"token": token}).status_code == 200


def test_signed_ack_link_post_limited_per_address(limited, org):
    org.apply_findings([finding()])
    (t,) = org.tickets()
    good = "/ack/" + make_token("ack-secret-for-rate-tests", t.id, "wang.officer", "wang", int(time.time()) + 3600)
    with limited.client(None) as c:
        assert c.post("/ack/forged").status_code == 403
        assert c.post("/ack/forged-again").status_code == 403
        assert c.get(good).status_code == 200  # the confirmation page (GET) is not limited: it changes nothing
        assert c.post(good).status_code == 200  # acknowledged
        r = c.post(good)
        wait_out(r)
        r = c.post(good)
        assert r.status_code == 200 and "already" in r.text


def test_api_acknowledge_limited_per_user(limited, org):
    org.apply_findings([finding(), finding(site="cz-0412", device="tc-01")])
    ids = {t.site: t.id for t in org.tickets()}
    wang = limited.client(orgs.create_token(org, "wang.officer"))
    li = limited.client(orgs.create_token(org, "li.officer"))
    try:
        assert wang.post(f"/tickets/{ids['cz-0001']}/acknowledge", json={}).status_code == 200
        assert wang.post(f"/tickets/{ids['cz-0001']}/acknowledge", json={}).status_code == 409  # counted too
        assert wang.post(f"/tickets/{ids['cz-0412']}/acknowledge", json={}).status_code == 404  # and this
        r = wang.post(f"/tickets/{ids['cz-0001']}/acknowledge", json={})
        assert r.status_code == 429
        assert wang.get(f"/tickets/{ids['cz-0001']}").status_code == 200  # reads are not limited
        assert li.post(f"/tickets/{ids['cz-0412']}/acknowledge", json={}).status_code == 200  # per user
        wait_out(r)
        assert wang.post(f"/tickets/{ids['cz-0001']}/acknowledge", json={}).status_code == 409
    finally:
        wang.close()
        li.close()


def test_openapi_documents_429(backlog, tmp_path):
    from backlog.api import create_app

    paths = create_app(backlog, tmp_path / "ev").openapi()["paths"]
    assert "429" in paths["/tickets/{ticket_id}/acknowledge"]["post"]["responses"]
    assert "429" in paths["/wall/session"]["post"]["responses"]


# ------------------------------------------------------------------------------------------------ SMS: alerts test
CFG = """
providers:
  tencent: {{type: tencent_sms, endpoint: '{tencent}', secret_id: 'env:T_TENCENT_ID', secret_key: 'env:T_TENCENT_KEY',
            sdk_app_id: '1400000001', sign_name: 常州安监, template_id: '1001'}}
outbound: {{allow_http: true, allow_private: true}}
receivers:
  wang.officer: {{channels: [{{type: sms, provider: tencent, phone: '+8613800000001'}}]}}
  li.officer: {{channels: [{{type: sms, provider: tencent, phone: '+8613800000002'}}]}}
"""


@pytest.fixture
def http():
    r = HttpReceiver()
    yield r
    r.stop()


def test_alerts_test_sms_limited_per_receiver_across_invocations(tmp_path, http, secrets_env, monkeypatch):
    monkeypatch.setenv("SW_RATE_ALERTS_TEST", "2 per 6 seconds")
    cfg = tmp_path / "alerts.yaml"
    cfg.write_text(CFG.format(tencent=http.url("/tencent")), encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'alerts.db'}"

    def send(receiver):  # a new process each time in real life: the count lives in the delivery log
        r = CliRunner().invoke(main, ["--db", db, "alerts", "--config", str(cfg), "test", "--receiver", receiver])
        return r.exit_code, r.output

    assert send("wang.officer")[0] == 0
    assert send("wang.officer")[0] == 0
    code, out = send("wang.officer")
    assert code == 1 and "receiver wang.officer: 2 test messages within 2 per 6 seconds" in out, out
    assert "SW_RATE_ALERTS_TEST" in out
    assert len(http.got("/tencent")) == 2  # the refused one sent nothing
    assert send("li.officer")[0] == 0  # per receiver
    wait_s = int(out.rsplit("try again in ", 1)[1].split()[0])
    assert 1 <= wait_s <= 6
    time.sleep(wait_s + 0.05)
    assert send("wang.officer")[0] == 0
    assert len(http.got("/tencent")) == 4
