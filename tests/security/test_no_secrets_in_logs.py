"""Secrets come from the environment or files and are never logged: every log record (DEBUG and up, including
uvicorn's access log, httpx/httpcore and SQLAlchemy) and every answer of the API and the channels is searched for
each token and secret the test used.

The API side: bearer tokens (good, revoked, wrong), the wall's token login, its signed login link, the signed
acknowledgement link from an alert (``/ack/<token>``), the signing secrets. The alerts side: a webhook signed with
an HMAC secret, a WeCom key and DingTalk secrets that travel in query strings, SMS provider keys, the SMTP
password, failing channels whose errors end up in the log and in the delivery log.
"""

from __future__ import annotations

import logging
import os
import time

import pytest

from alerts.links import make_token
from backlog import orgs
from backlog.api.wall import login_link
from tests.alerts.conftest import alert, config, http, make_notifier, run, secrets_env, smtp  # noqa: F401 - fixtures
from tests.alerts.conftest import Clock
from tests.alerts.test_channels import ALL
from tests.backlog.conftest import ApiServer, backlog, clock, finding, org  # noqa: F401 - fixtures

LOGGERS = ["", "uvicorn", "uvicorn.access", "uvicorn.error", "httpx", "httpcore", "sqlalchemy", "sitewatch", "alerts",
           "backlog", "faust", "asyncio"]


class Grab(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # format() includes exception text and stack


class Capture:
    """DEBUG capture on the root and on the loggers that do not propagate (uvicorn's)."""

    def __init__(self):
        self.handler = Grab()
        self.saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in LOGGERS]
        self.attach()

    def attach(self) -> None:
        """(Again) after uvicorn configured its loggers: its dictConfig replaces their handlers and levels."""
        for lg, _ in self.saved:
            lg.setLevel(logging.DEBUG)
            if (lg.name == "root" or not lg.propagate) and self.handler not in lg.handlers:
                lg.addHandler(self.handler)

    def lines(self, but: tuple[str, ...] = ()) -> list[str]:
        return [x for x in self.handler.lines if not x.startswith(but)]

    def close(self) -> None:
        for lg, level in self.saved:
            lg.setLevel(level)
            lg.removeHandler(self.handler)


@pytest.fixture
def grab():
    c = Capture()
    yield c
    c.close()


def leaks(texts: list[str], secrets: dict[str, str]) -> list[str]:
    return [f"{name} in: {t[:300]}" for name, s in secrets.items() for t in texts if s and s in t]


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'backlog.db'}"


def test_api_never_logs_or_answers_a_token(org, tmp_path, monkeypatch, grab):
    ack_secret, wall_secret = "ack-secret-0123456789abcdef", "wall-secret-0123456789abcdef"
    monkeypatch.setenv("SW_ALERTS_ACK_SECRET", ack_secret)
    monkeypatch.setenv("SW_WALL_SECRET", wall_secret)
    server = ApiServer(org, tmp_path / "evidence")
    grab.attach()
    server.start()
    org.apply_findings([finding()])
    (t,) = org.tickets()
    wang_tok, sun_tok = orgs.create_token(org, "wang.officer"), orgs.create_token(org, "sun.supervisor")
    revoked = orgs.create_token(org, "zhou.ops")
    orgs.revoke_token(org, revoked[:10])
    ack = make_token(ack_secret, t.id, "wang.officer", "wang", int(time.time()) + 3600)
    link = login_link(server.url, sun_tok)
    secrets = {"wang token": wang_tok, "supervisor token": sun_tok, "revoked token": revoked,
               "wrong token": "sw_wrong-0123456789abcdefghijklmnop", "ack link token": ack,
               "wall link": link.split("k=", 1)[1], "ack secret": ack_secret, "wall secret": wall_secret}
    answers: list[str] = []
    try:
        with server.client(wang_tok) as wang, server.client(None) as anon:
            for r in (wang.get("/tickets"), wang.get(f"/tickets/{t.id}"), wang.get("/tickets/999999"),
                      wang.post(f"/tickets/{t.id}/rectify", json={"note": ""}),  # 422
                      wang.post("/tickets", json={"site": "cz-0001", "bogus": sun_tok}),  # 422 naming the field
                      anon.get("/tickets", headers={"Authorization": f"Bearer {revoked}"}),
                      anon.get("/me", headers={"Authorization": f"Bearer {secrets['wrong token']}"}),
                      anon.post("/wall/session", json={"token": secrets["wrong token"]}),
                      anon.post("/wall/session", content=f"token={sun_tok}".encode(),
                                headers={"content-type": "application/x-www-form-urlencoded"}),
                      anon.get(link.removeprefix(server.url), follow_redirects=False),
                      anon.get(f"/ack/{ack}"), anon.post(f"/ack/{ack}"), anon.post(f"/ack/{ack}x"),
                      wang.post(f"/tickets/{t.id}/acknowledge", json={})):
                assert r.status_code < 500, r.text
                answers.append(r.text)
                answers.extend(f"{k}: {v}" for k, v in r.headers.items() if k.lower() != "set-cookie")
            assert any("Acknowledged" in a for a in answers)
    finally:
        server.stop()
    # the server's logs; httpx/httpcore records are this test's own client's (the API makes no HTTP calls here)
    lines = grab.lines(but=("httpx ", "httpcore"))
    assert any(line.startswith("uvicorn.access") and "/ack/" in line for line in lines), "access log captured"
    assert any("/wall/login" in line for line in lines) and any("sqlalchemy" in line for line in lines)
    assert not leaks(lines, secrets), "\n".join(leaks(lines, secrets))
    assert not leaks(answers, secrets), "\n".join(leaks(answers, secrets))


def test_notifier_never_logs_a_channel_secret(tmp_path, http, smtp, secrets_env, grab):  # noqa: F811
    if True:
        cfg = config(ALL, aliyun=http.url("/aliyun"), tencent=http.url("/tencent"), smtp_port=smtp.port,
                     hook=http.url("/hook"), wecom=http.url("/wecom"), ding=http.url("/dingtalk"))
        n = make_notifier(cfg, f"sqlite:///{tmp_path / 'alerts.db'}", Clock())
        assert run(n.deliver(alert(42, major=True))) == 6  # every channel, signed with its secret
        # the same channels failing: wrong endpoints answer errors, a closed port refuses
        bad = config(ALL, aliyun=http.url("/nope"), tencent=http.url("/nope"), smtp_port=1,
                     hook="http://127.0.0.1:9/hook", wecom=http.url("/wecom?x=1"), ding="http://127.0.0.1:9/d")
        n2 = make_notifier(bad, f"sqlite:///{tmp_path / 'alerts2.db'}", Clock())
        run(n2.deliver(alert(43)))
        errors = [a.error or "" for a in n2.log_db.attempts()]
        assert any(errors), "the failures were recorded"

    secrets = {k: os.environ[k] for k in ("T_HOOK_SECRET", "T_ALIYUN_ID", "T_ALIYUN_SECRET", "T_TENCENT_KEY",
                                          "T_WECOM_KEY", "T_DING_TOKEN", "T_DING_SECRET", "T_SMTP_PASS",
                                          "SW_ALERTS_ACK_SECRET")}
    lines = grab.lines()
    assert any(line.startswith("httpx") and "/wecom?key=***" in line for line in lines), "httpx logs, redacted"
    assert not leaks(lines, secrets), "\n".join(leaks(lines, secrets))
    assert not leaks(errors, secrets), "\n".join(leaks(errors, secrets))
