"""Fixtures for the alerts tests: a controllable clock, real local HTTP/SMTP receivers, a SQLite delivery log,
alert payloads shaped like ``backlog.store._queue_alert`` makes them."""

from __future__ import annotations

import asyncio
import os
import textwrap
from pathlib import Path

import pytest

from alerts.config import parse_config
from alerts.delivery_log import DeliveryLog
from alerts.notifier import Notifier
from sitewatch.tickets import TicketState
from tests.alerts.servers import HttpReceiver, SmtpServer

# The receivers here are plain-http servers on 127.0.0.1, which the outbound policy refuses by default
# (tests/security/test_ssrf.py tests that default); these tests allow them deliberately, before any config loads.
os.environ.setdefault("SW_ALERTS_ALLOW_HTTP", "1")
os.environ.setdefault("SW_ALERTS_ALLOW_PRIVATE", "1")

T0 = 1_791_000_000.0  # 2026-10-03 ~ 08:00 Asia/Shanghai (seconds)
MIN = 60.0


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def http():
    r = HttpReceiver()
    yield r
    r.stop()


@pytest.fixture
def smtp():
    s = SmtpServer()
    yield s
    s.stop()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'alerts.db'}"


@pytest.fixture
def secrets_env(monkeypatch, http: HttpReceiver, smtp: SmtpServer):
    monkeypatch.setenv("T_HOOK_SECRET", http.webhook_secret)
    monkeypatch.setenv("T_ALIYUN_ID", http.aliyun[0])
    monkeypatch.setenv("T_ALIYUN_SECRET", http.aliyun[1])
    monkeypatch.setenv("T_TENCENT_ID", http.tencent[0])
    monkeypatch.setenv("T_TENCENT_KEY", http.tencent[1])
    monkeypatch.setenv("T_WECOM_KEY", http.wecom_key)
    monkeypatch.setenv("T_DING_TOKEN", http.dingtalk[0])
    monkeypatch.setenv("T_DING_SECRET", http.dingtalk[1])
    monkeypatch.setenv("T_SMTP_PASS", smtp.password)
    monkeypatch.setenv("SW_ALERTS_ACK_SECRET", "ack-secret")


def hook(http: HttpReceiver, who: str) -> str:
    return f"{{type: webhook, url: '{http.url('/hook')}?to={who}', secret: 'env:T_HOOK_SECRET'}}"


def config(text: str, **fmt):
    return parse_config(textwrap.dedent(text).format(**fmt), "test.yaml")


def alert(tid: int, site: str = "cz-0001", device: str = "tc-01", level: int = 3, major: bool = False,
          action: str = "opened", family: str = "crane", kind: str = "crane.overload", category: str = "hazard",
          value: float = 11.5, threshold: float = 10.0, metric: str = "load") -> dict:
    label = {1: "yellow", 2: "orange", 3: "red"}[level]
    return {
        "v": 1, "alert_id": f"t{tid}-{action}-L{level}", "action": action,
        "ticket": {"id": tid, "dedup_key": f"{site}/{device}/{kind}", "site": site, "device": device,
                   "family": family, "kind": kind, "category": category, "status": "open", "level": level,
                   "level_label": label, "peak_level": level, "major": major, "metric": metric, "value": value,
                   "peak_value": value, "threshold": threshold, "rule": f"{kind} {label}", "source": "GB 5031",
                   "count": 1, "opened_ms": int(T0 * 1000), "last_seen_ms": int(T0 * 1000)},
        "finding": {"unit": "t"}, "reading_ts": int(T0 * 1000), "created_ms": int(T0 * 1000),
    }


class States(dict):
    """The ticket states the backlog would report, set by the test."""

    def set(self, tid: int, status: str = "open", level: int = 3, major: bool = False, active: bool = True,
            acknowledged_ms: int | None = None) -> None:
        self[tid] = TicketState(status=status, level=level, peak_level=level, major=major, active=active,
                                acknowledged_ms=acknowledged_ms)


@pytest.fixture
def states() -> States:
    return States()


def make_notifier(cfg, db_url: str, clock: Clock, states: States | None = None, **kw) -> Notifier:
    return Notifier(DeliveryLog(db_url), cfg, clock=clock, ticket_state=(states.get if states is not None else None),
                    **kw)


def run(coro):
    return asyncio.run(coro)


def to(req) -> str:
    return req.query.get("to", "")
