"""Alert wording for late data and clears, on payloads made by the real backlog: a late finding's alert says so
in words with the outage window (site-local time), the PEAK and how late the data came; a red crane alert shows
the peak, not the last reading; a clear names the clearing reading's value and time."""

from __future__ import annotations

import pytest

from alerts.config import AlertsConfig
from alerts.render import Renderer
from backlog.store import Backlog
from tests.backlog.late_helpers import MIN, crane, late_overload_episode, local_ms


@pytest.fixture
def backlog(tmp_path):
    b = Backlog(f"sqlite:///{tmp_path / 'b.db'}")
    yield b
    b.engine.dispose()


def renderer(lang: str) -> Renderer:
    return Renderer(AlertsConfig.model_validate({
        "defaults": {"language": lang, "ticket_url": "https://sw.cz.cn/t/{id}"},
        "receivers": {"x": {"channels": [{"type": "webhook", "url": "http://127.0.0.1:1/"}]}},
    }))


def render(payload, lang, kind="alert"):
    return renderer(lang).render("k", "x", [(payload["alert_id"], kind, payload)])


def test_late_alert_says_so_with_outage_peak_and_delay(backlog, monkeypatch):
    monkeypatch.delenv("SW_SITE_TZ", raising=False)
    backlog.apply_findings(late_overload_episode())
    ((_, payload),) = backlog.pending_alerts()
    en = render(payload, "en")
    assert ("late: during the outage 02:10–02:14 crane tc-01 load peaked at 11.5 t (115 %), back to 4 t at 02:13; "
            "data arrived 7 min late") in en.text, en.text
    assert "load 11.5t (115 %) at 02:11" in en.text, "the peak and when it was measured, not when it arrived"
    assert en.subject.startswith("[RED ALERT LATE]")
    zh = render(payload, "zh")
    assert "补报：断网期间 02:10–02:14，塔吊 tc-01 起重量峰值 11.5t（115%），02:13 已回落至 4t，数据迟到 7分钟" in zh.text, zh.text
    assert zh.subject.startswith("【红色告警·补报】") and "补报" in zh.markdown and "补报" in zh.sms
    assert len(zh.sms) <= 70


def test_site_timezone_can_be_overridden(backlog, monkeypatch):
    monkeypatch.setenv("SW_SITE_TZ", "UTC")
    backlog.apply_findings(late_overload_episode())
    ((_, payload),) = backlog.pending_alerts()
    assert "during the outage 18:10–18:14" in render(payload, "en").text


def test_live_red_crane_alert_shows_the_peak_not_the_last_reading(backlog):
    t1 = local_ms("09:00")
    backlog.apply_findings([crane(2, t1, 10.4)])
    backlog.apply_findings([crane(3, t1 + 1000, 11.6), crane(1, t1 + 2000, 9.1)])
    payloads = [p for _, p in backlog.pending_alerts()]
    up = payloads[-1]
    assert up["action"] == "upgraded"
    # a reminder days later carries the ticket as it is now: last reading 4 t, peak 11.6 t
    backlog.apply_findings([crane(0, t1 + 3000, 4.0)])
    (t,) = backlog.tickets()
    from backlog.store import ticket_summary

    reminder = dict(up, alert_id=f"t{t.id}-remind-1", action="reminder", reminder=1, ticket=ticket_summary(t))
    for p, kind in ((up, "alert"), (reminder, "reminder")):
        en = render(p, "en", kind)
        assert "load 11.6t (116 %) at 09:00" in en.text, en.text
        assert "load 4t" not in en.text and "load 9.1t" not in en.text
    assert "LATE" not in render(up, "en").subject and "late:" not in render(up, "en").text


def test_clear_notice_names_the_clearing_reading(backlog):
    t1 = local_ms("09:00")
    backlog.apply_findings([crane(3, t1, 11.6)])
    backlog.apply_findings([crane(0, t1 + 5 * MIN, 4.2, cleared_by={"value": 4.2, "ts": t1 + 5 * MIN})])
    (t,) = backlog.tickets()
    from backlog.store import ticket_summary

    notice = {"v": 1, "alert_id": f"t{t.id}-resolved-1", "action": "resolved", "reason": "cleared",
              "ticket": ticket_summary(t), "reading_ts": t1}
    zh = render(notice, "zh", "resolved")
    en = render(notice, "en", "resolved")
    assert "监测值已恢复正常（09:05 读数 4.2t）" in zh.text, zh.text
    assert "reading back to normal (4.2 t at 09:05)" in en.text, en.text
