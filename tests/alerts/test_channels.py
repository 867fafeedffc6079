"""Every channel against a real local receiver that verifies the request the way the provider documents it
(webhook HMAC, Aliyun RPC HMAC-SHA1, Tencent TC3-HMAC-SHA256, WeCom key, DingTalk timestamp+sign, SMTP AUTH),
and checks the payload: site, device, value, threshold, level, ticket link."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.channels import redact
from alerts.config import AlertsConfig
from alerts.render import Renderer
from tests.alerts.conftest import alert, config, make_notifier, run

ALL = """
defaults:
  group_wait: 0
  retry_backoff: 0.01s
  retry_attempts: 1
  ticket_url: "https://sw.cz.cn/t/{{id}}"
  ack_url: "https://sw.cz.cn/ack/{{token}}"
providers:
  aliyun: {{type: aliyun_sms, endpoint: '{aliyun}', access_key_id: 'env:T_ALIYUN_ID',
           access_key_secret: 'env:T_ALIYUN_SECRET', sign_name: 常州安监, template_code: SMS_1}}
  tencent: {{type: tencent_sms, endpoint: '{tencent}', secret_id: 'env:T_TENCENT_ID', secret_key: 'env:T_TENCENT_KEY',
            sdk_app_id: '1400000001', sign_name: 常州安监, template_id: '1001'}}
  mail: {{type: smtp, host: 127.0.0.1, port: {smtp_port}, security: none, username: sitewatch@example.cn,
         password: 'env:T_SMTP_PASS', sender: 'SiteWatch <sitewatch@example.cn>'}}
receivers:
  r-webhook: {{channels: [{{type: webhook, url: '{hook}', secret: 'env:T_HOOK_SECRET'}}]}}
  r-aliyun: {{channels: [{{type: sms, provider: aliyun, phone: '+8613800000001'}}]}}
  r-tencent: {{channels: [{{type: sms, provider: tencent, phone: '13800000002'}}]}}
  r-wecom: {{user: wang.officer, channels: [{{type: wecom, endpoint: '{wecom}', key: 'env:T_WECOM_KEY'}}]}}
  r-ding: {{user: wang.officer, channels: [{{type: dingtalk, endpoint: '{ding}', access_token: 'env:T_DING_TOKEN',
                                         secret: 'env:T_DING_SECRET', at_mobiles: ['13800000009']}}]}}
  r-email: {{language: en, channels: [{{type: email, provider: mail, to: [zhao@jianan.cn, ops@jianan.cn]}}]}}
routes:
  - name: all
    group_by: []
    tiers: [{{receivers: [r-webhook, r-aliyun, r-tencent, r-wecom, r-ding, r-email]}}]
"""


@pytest.fixture
def cfg(http, smtp, secrets_env) -> AlertsConfig:
    return config(ALL, aliyun=http.url("/aliyun"), tencent=http.url("/tencent"), smtp_port=smtp.port,
                  hook=http.url("/hook"), wecom=http.url("/wecom"), ding=http.url("/dingtalk"))


def one(http, path):
    got = http.got(path)
    assert len(got) == 1, [(r.path, r.status, r.why) for r in http.requests]
    assert got[0].verified is True, got[0].why
    return got[0]


def test_every_channel_delivers_a_verified_message(cfg, http, smtp, db_url, clock):
    n = make_notifier(cfg, db_url, clock)
    a = alert(42, site="cz-0412", device="tc-01", level=3, major=True, value=11.5, threshold=10.0)
    assert run(n.deliver(a)) == 6

    w = one(http, "/hook")
    assert w.headers["Idempotency-Key"] == "t42-opened-L3"
    body = w.json
    assert body["alert_id"] == "t42-opened-L3" and body["action"] == "opened" and body["kind"] == "alert"
    assert body["ticket"]["id"] == 42 and body["ticket"]["level_label"] == "red" and body["reading_ts"] == a["reading_ts"]
    assert body["receiver"] == "r-webhook" and body["count"] == 1 and "_meta" not in body

    ali = one(http, "/aliyun").form
    assert ali["PhoneNumbers"] == "13800000001" and ali["SignName"] == "常州安监" and ali["TemplateCode"] == "SMS_1"
    assert ali["OutId"] == "t42-opened-L3" and ali["SignatureMethod"] == "HMAC-SHA1"
    params = json.loads(ali["TemplateParam"])
    assert params == {"site": "cz-0412", "device": "tc-01", "level": "红色", "value": "11.5t", "threshold": "10",
                      "link": "https://sw.cz.cn/t/42"}

    ten = one(http, "/tencent")
    tb = ten.json
    assert tb["PhoneNumberSet"] == ["+8613800000002"] and tb["SmsSdkAppId"] == "1400000001"
    assert tb["TemplateParamSet"] == ["cz-0412", "tc-01", "红色", "11.5t", "10", "https://sw.cz.cn/t/42"]
    assert tb["SessionContext"] == "t42-opened-L3" and ten.headers["X-TC-Action"] == "SendSms"

    wc = one(http, "/wecom").json
    assert wc["msgtype"] == "markdown"
    md = wc["markdown"]["content"]
    for part in ("cz-0412", "tc-01", "起重量", "11.5t", "阈值 10", "红色", "重大隐患", "https://sw.cz.cn/t/42",
                 "https://sw.cz.cn/ack/"):
        assert part in md, (part, md)

    dt = one(http, "/dingtalk").json
    assert dt["msgtype"] == "markdown" and "cz-0412" in dt["markdown"]["title"]
    assert "11.5t" in dt["markdown"]["text"] and dt["at"]["atMobiles"] == ["13800000009"], "urgent: @ the phone"

    assert len(smtp.mails) == 1
    mail = smtp.mails[0]
    assert mail.auth_user == "sitewatch@example.cn" and mail.rcpt_to == ["zhao@jianan.cn", "ops@jianan.cn"]
    m = mail.message
    assert m["Subject"].startswith("[RED ALERT] cz-0412 tc-01") and m["X-SiteWatch-Key"] == "t42-opened-L3"
    content = m.get_content()
    for part in ("cz-0412", "tc-01", "11.5t", "threshold 10t", "RED", "MAJOR HAZARD", "https://sw.cz.cn/t/42"):
        assert part in content, (part, content)

    rows = {d.receiver: d for d in n.log_db.all()}
    assert {r: d.status for r, d in rows.items()} == {r: "delivered" for r in cfg.receivers}
    assert rows["r-aliyun"].channel == "sms" and rows["r-email"].channel == "email"
    assert run(n.deliver(a)) == 0 and len(http.requests) == 5 and len(smtp.mails) == 1, "idempotent per receiver"


def test_receivers_really_check_signatures(cfg, http, smtp, db_url, clock, monkeypatch, caplog):
    """With wrong keys every provider refuses: the checks above are not rubber stamps. No secret leaks."""
    bad = {"T_ALIYUN_SECRET": "wrong-aliyun", "T_TENCENT_KEY": "wrong-tencent", "T_HOOK_SECRET": "wrong-hook",
           "T_WECOM_KEY": "wrong-wecom-key", "T_DING_SECRET": "SECwrong-ding", "T_SMTP_PASS": "wrong-smtp"}
    for k, v in bad.items():
        monkeypatch.setenv(k, v)
    caplog.set_level(logging.DEBUG)
    n = make_notifier(cfg, db_url, clock)
    assert run(n.deliver(alert(43))) == 0, "every receiver refused"
    got = {r.path: (r.verified, r.why) for r in http.requests}
    assert got["/aliyun"] == (False, "bad signature")
    assert got["/tencent"] == (False, "bad signature")
    assert got["/wecom"] == (False, "invalid key")
    assert got["/dingtalk"] == (False, "bad sign")
    assert got["/hook"] == (False, "bad hmac")
    assert smtp.auth_failures >= 1 and not smtp.mails
    errors = " ".join(a.error or "" for a in n.log_db.attempts())
    assert "SignatureDoesNotMatch" in errors and "AuthFailure" in errors and "93000" in errors
    everything = errors + caplog.text
    for secret in list(bad.values()) + [http.wecom_key, http.dingtalk[0]]:
        assert secret not in everything, secret


def test_missing_secret_fails_the_channel_without_leaking_and_falls_over(http, secrets_env, db_url, clock, monkeypatch):
    monkeypatch.delenv("T_WECOM_KEY")
    cfg = config("""
        defaults: {{group_wait: 0, retry_backoff: 0.01s, retry_attempts: 1}}
        receivers:
          officer:
            channels:
              - {{type: wecom, endpoint: '{wecom}', key: 'env:T_WECOM_KEY'}}
              - {{type: webhook, url: '{hook}', secret: 'env:T_HOOK_SECRET'}}
        routes: [{{name: all, tiers: [{{receivers: [officer]}}]}}]
        """, wecom=http.url("/wecom"), hook=http.url("/hook"))
    n = make_notifier(cfg, db_url, clock)
    assert run(n.deliver(alert(44))) == 1
    att = n.log_db.attempts()
    assert [(a.channel, a.ok) for a in att] == [("wecom", False), ("webhook", True)]
    assert "env:T_WECOM_KEY is not set" in att[0].error


def test_english_and_chinese_templates(cfg, clock):
    r = Renderer(cfg, clock)
    a = alert(7, site="cz-0412", level=2, value=9.3, threshold=9.0)
    zh = r.render("k", "r-wecom", [("t7-opened-L2", "alert", a)])
    en = r.render("k", "r-email", [("t7-opened-L2", "alert", a)])
    assert zh.subject.startswith("【橙色告警】") and "起重量" in zh.text and "阈值 9t" in zh.text
    assert en.subject.startswith("[orange ALERT]") and "load 9.3t" in en.text and "threshold 9t" in en.text
    assert "确认收到" in zh.markdown, "a receiver with a backlog user gets a signed ack link"


@settings(max_examples=150, deadline=None)
@given(site=st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,40}", fullmatch=True),
       device=st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,40}", fullmatch=True),
       value=st.floats(-1e7, 1e7, allow_nan=False), level=st.sampled_from([1, 2, 3]), major=st.booleans(),
       n_items=st.integers(1, 30), lang=st.sampled_from(["zh", "en"]), kind=st.sampled_from(
           ["alert", "escalation", "reminder", "resolved", "test"]))
def test_sms_always_fits_one_segment_and_keeps_the_link(site, device, value, level, major, n_items, lang, kind):
    cfg = AlertsConfig.model_validate({
        "defaults": {"language": lang, "ticket_url": "https://sw.cz.cn/t/{id}"},
        "receivers": {"x": {"channels": [{"type": "webhook", "url": "http://127.0.0.1:1/"}]}},
    })
    items = [(f"t{i}-opened-L{level}", kind,
              alert(i + 1000, site=site, device=f"{device}{i}", level=level, major=major, value=value))
             for i in range(n_items)]
    budget = 70 - len("常州安监") - 2
    sms = Renderer(cfg).render("k", "x", items, budget).sms
    assert len(sms) <= budget, (len(sms), sms)
    assert "https://sw.cz.cn/t/" in sms
    if n_items == 1 and len(site) + len(device) < 12:
        assert site in sms and device in sms


def test_redact_scrubs_raw_and_url_encoded_secrets():
    assert redact("GET https://x/send?key=a%2Fb%3D&sign=zz a/b=", ["a/b=", None]) == "GET https://x/send?key=***&sign=zz ***"
