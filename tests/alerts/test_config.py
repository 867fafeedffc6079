"""The routing YAML: the shipped example is valid; errors name file:line; secrets are refused inline and
resolved from the environment or a secrets file; the zero-config webhook default."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts.config import AlertsConfigError, SecretError, load_config, parse_config, webhook_only

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_example_is_valid():
    cfg = load_config(ROOT / "config" / "alerts" / "example.yaml")
    assert set(cfg.receivers) >= {"wang.officer", "zhao.manager", "sun.supervisor"}
    assert [t.after for t in cfg.routes[1].tiers] == [0, 900, 0] and cfg.routes[1].tiers[2].major_only


@pytest.mark.parametrize("yaml_text, expected", [
    ("receivers:\n  a:\n    channels:\n      - {type: wecom, key: 'abc123'}\n",
     "test.yaml:4: receivers.a.channels.0.key: secrets are not written here"),
    ("receivers:\n  a:\n    channels:\n      - {type: pager, to: x}\n",
     "test.yaml:4: receivers.a.channels.0"),
    ("receivers:\n  a:\n    channels: [{type: webhook, url: 'http://x'}]\nroutes:\n  - name: r\n"
     "    match: {level: purple}\n    tiers: [{receivers: [a]}]\n",
     "test.yaml:6: routes.0.match.level: 'purple' is not a level"),
    ("receivers:\n  a:\n    channels: [{type: webhook, url: 'http://x'}]\nroutes:\n  - name: r\n"
     "    tiers:\n      - {receivers: [nobody]}\n",
     "test.yaml:7: routes.0.tiers.0.receivers: unknown receiver 'nobody'"),
    ("receivers:\n  a:\n    channels: [{type: sms, provider: ali, phone: '138'}]\n",
     "test.yaml:3: receivers.a.channels.0.phone"),
    ("receivers:\n  a:\n    channels: [{type: sms, provider: ali, phone: '13800000000'}]\n",
     "test.yaml:3: receivers.a.channels.0.provider: no aliyun_sms/tencent_sms provider named 'ali'"),
    ("receivers:\n  a:\n    channels: [{type: webhook, url: 'http://x'}]\n  a:\n    channels: []\n",
     "test.yaml:4: receivers.a: duplicate key (first at line 2)"),
    ("receivers: [\n", "test.yaml:2: YAML syntax"),
    ("receivers:\n  a:\n    channels: [{type: webhook, url: 'http://x'}]\n    quiet_hours: {start: '25:00', end: '07:00'}\n",
     "test.yaml:4: receivers.a.quiet_hours.start"),
])
def test_errors_name_file_and_line(yaml_text, expected):
    with pytest.raises(AlertsConfigError) as e:
        parse_config(yaml_text, "test.yaml")
    assert expected in str(e.value), str(e.value)


def test_secrets_from_env_and_file_never_inline(tmp_path, monkeypatch):
    sec = tmp_path / "secrets.yaml"
    sec.write_text("wecom_key: from-file-123\n")
    cfg_path = tmp_path / "alerts.yaml"
    cfg_path.write_text("secrets_file: secrets.yaml\nreceivers:\n  a:\n    channels:\n"
                        "      - {type: wecom, key: 'file:wecom_key'}\n"
                        "      - {type: webhook, url: 'http://x', secret: 'env:T_X_SECRET'}\n")
    cfg = load_config(cfg_path)
    assert cfg.secret("file:wecom_key") == "from-file-123"
    with pytest.raises(SecretError, match="env:T_X_SECRET is not set") as e:
        cfg.secret("env:T_X_SECRET")
    monkeypatch.setenv("T_X_SECRET", "from-env")
    assert cfg.secret("env:T_X_SECRET") == "from-env"
    with pytest.raises(SecretError) as e:
        cfg.secret("file:missing")
    assert "from-file-123" not in str(e.value)


def test_zero_config_webhook_default():
    cfg = webhook_only("http://127.0.0.1:9/alerts", "s3cret")
    assert list(cfg.receivers) == ["webhook"] and cfg.secret("env:SW_WEBHOOK_SECRET") == "s3cret"
    r = cfg.routes[0]
    assert r.group_by == [] and not r.resolve_notice and cfg.defaults.remind_red_every == 0
