"""``sitewatch alerts …`` through the real command group (lazy room mapping, settings in ctx.obj): test messages
to real local receivers, silences, route checks, the delivery log."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from alerts.delivery_log import DeliveryLog
from app.cli import main

CFG = """
defaults: {{retry_attempts: 1, retry_backoff: 0.01s}}
providers:
  tencent: {{type: tencent_sms, endpoint: '{tencent}', secret_id: 'env:T_TENCENT_ID', secret_key: 'env:T_TENCENT_KEY',
            sdk_app_id: '1400000001', sign_name: 常州安监, template_id: '1001'}}
receivers:
  wang.officer:
    channels:
      - {{type: sms, provider: tencent, phone: '+8613800000001'}}
      - {{type: dingtalk, endpoint: '{ding}', access_token: 'env:T_DING_TOKEN', secret: 'env:T_DING_SECRET'}}
      - {{name: backup-hook, type: webhook, url: '{dead}'}}
routes:
  - name: cz-0001
    match: {{site: cz-0001}}
    tiers: [{{receivers: [wang.officer]}}, {{after: 15min, receivers: [wang.officer]}}]
"""


@pytest.fixture
def env(tmp_path, http, secrets_env):
    cfg = tmp_path / "alerts.yaml"
    cfg.write_text(CFG.format(tencent=http.url("/tencent"), ding=http.url("/dingtalk"),
                              dead="http://127.0.0.1:9/nothing-listens-here"), encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'backlog.db'}"
    return str(cfg), db


def sw(*args):
    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return r.exit_code, r.output


def test_alerts_test_sends_through_every_channel_and_reports_each(env, http):
    cfg, db = env
    code, out = sw("--db", db, "alerts", "--config", cfg, "test", "--receiver", "wang.officer")
    assert code == 1, out  # the backup webhook points at a closed port
    assert re.search(r"^OK   wang.officer via sms", out, re.M), out
    assert re.search(r"^OK   wang.officer via dingtalk", out, re.M), out
    assert re.search(r"^FAIL wang.officer via backup-hook .*ConnectError", out, re.M), out
    (sms,) = http.got("/tencent")
    assert sms.verified and sms.json["TemplateParamSet"][2] == "红色"
    (ding,) = http.got("/dingtalk")
    assert ding.verified and "测试" in ding.json["markdown"]["text"]
    code, out = sw("--db", db, "alerts", "--config", cfg, "test", "--receiver", "wang.officer", "--channel", "dingtalk")
    assert code == 0 and out.count("OK") == 1 and len(http.got("/dingtalk")) == 2
    (audit, _) = DeliveryLog(db).audit_trail()
    assert audit.action == "test_sent" and audit.entity_id == "wang.officer"
    code, out = sw("--db", db, "alerts", "--config", cfg, "test", "--receiver", "nobody")
    assert code != 0 and "no receiver named 'nobody'" in out


def test_silence_add_list_expire(env):
    cfg, db = env
    code, out = sw("--db", db, "alerts", "silence", "add", "--match", "site=cz-0412", "--match", "device=tc-01,tc-02",
                   "--duration", "4h", "--author", "zhou.ops", "--reason", "annual crane inspection")
    assert code == 0 and out.startswith("silence #1 until"), out
    code, out = sw("--db", db, "alerts", "silence", "list")
    assert "#1 active" in out and "zhou.ops: annual crane inspection" in out and '"device": ["tc-01", "tc-02"]' in out
    code, out = sw("--db", db, "alerts", "silence", "expire", "1", "--author", "li.officer", "--reason", "done")
    assert code == 0
    assert sw("--db", db, "alerts", "silence", "list")[1].strip() == "no silences"
    assert "expired by li.officer" in sw("--db", db, "alerts", "silence", "list", "--all")[1]
    code, out = sw("--db", db, "alerts", "silence", "add", "--match", "level=purple", "--author", "a", "--reason", "r")
    assert code != 0 and "purple" in out
    assert [a.action for a in DeliveryLog(db).audit_trail()] == ["silence_added", "silence_expired"]


def test_routes_check_shows_tiers_and_reports_errors_with_lines(env, tmp_path):
    cfg, db = env
    code, out = sw("alerts", "routes", "check", cfg, "--site", "cz-0001", "--level", "red")
    assert code == 0, out
    assert "routes: cz-0001" in out
    assert "cz-0001#0 (tier 1) at once: wang.officer via sms → dingtalk → backup-hook" in out
    assert "cz-0001#1 (tier 2) after 15 min unacknowledged" in out
    code, out = sw("alerts", "routes", "check", cfg, "--site", "cz-0412")
    assert "nobody: the alert would be logged as unrouted" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("receivers:\n  a:\n    channels:\n      - {type: wecom, key: plain-text-key}\n")
    code, out = sw("alerts", "routes", "check", str(bad))
    assert code == 1 and f"{bad}:4: receivers.a.channels.0.key: secrets are not written here" in out


def test_log_lists_recent_deliveries(env, http):
    cfg, db = env
    sw("--db", db, "alerts", "--config", cfg, "test", "--receiver", "wang.officer", "--channel", "sms")
    lg = DeliveryLog(db)
    lg.enqueue("t5-opened-L3", "wang.officer", kind="alert", payload={}, ticket_id=5, group_key="", urgent=True,
               at_ms=1_791_000_000_000, note="cz-0001 / tier 1")
    code, out = sw("--db", db, "alerts", "log")
    assert code == 0 and "t5-opened-L3" in out and "pending" in out
    code, out = sw("--db", db, "alerts", "log", "--receiver", "nobody")
    assert "no deliveries yet" in out


def test_alerts_test_in_the_zero_config_webhook_mode(tmp_path, http, monkeypatch):
    monkeypatch.delenv("SW_ALERTS_CONFIG", raising=False)
    monkeypatch.setenv("SW_WEBHOOK_URL", http.url("/hook"))
    monkeypatch.setenv("SW_WEBHOOK_SECRET", http.webhook_secret)
    code, out = sw("--db", f"sqlite:///{tmp_path / 'b.db'}", "alerts", "test", "--receiver", "webhook")
    assert code == 0 and out.startswith("OK   webhook via webhook"), out
    (req,) = http.got("/hook")
    assert req.verified and req.json["kind"] == "test" and req.headers["Idempotency-Key"].startswith("test-webhook-")
