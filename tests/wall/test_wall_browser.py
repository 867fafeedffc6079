"""The wall page in a real browser (Debian's chromium, driven by Playwright — no browser download) against real
services: mosquitto → bridge → Tansu → Faust worker → backlog, and the API under uvicorn on the same backlog.

A crane overload published over MQTT must appear on the page (pushed by server-sent events, no reload) within a
few seconds, with no console error; the screenshot is the README's (docs/img/wall.png)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from backlog import orgs
from backlog.store import Backlog
from detectors.model import Level
from sitewatch.contracts import now_ms, reading_topic
from sitewatch.localstack import free_port
from tests.backlog.conftest import DEMO_ORG, ApiServer, finding
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "wall.png"
APPEAR_S = 8.0  # MQTT publish → visible on the wall


def _browser(playwright, user_dir: Path):
    assert CHROMIUM.exists(), "Debian's chromium is missing (make deps installs it)"
    return playwright.chromium.launch_persistent_context(
        str(user_dir), executable_path=str(CHROMIUM), headless=True, args=ARGS,
        viewport={"width": 1600, "height": 900}, locale="zh-CN", timezone_id="Asia/Shanghai")


def _seed(b: Backlog) -> None:
    """A lived-in city: an orange pit on one site, a silent sensor on another, an inspection finding."""
    ts = now_ms() - 3 * 3600_000
    b.apply_findings([finding(site="cz-0001", device="pit-01", ts=ts),
                      finding(site="cz-0003", device="pit-01", kind="fault.silent", category="fault",
                              level=Level.ORANGE, ts=ts + 60_000),
                      finding(site="cz-0002", device="fw-01", family="formwork", kind="formwork.control",
                              level=Level.YELLOW, metric="settlement", value=9.0, threshold=8.0, ts=ts + 120_000)])


def test_hazard_over_mqtt_appears_on_the_wall(pipeline, sensor, tmp_path, monkeypatch):
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("SW_INFLUX_URL", f"http://127.0.0.1:{free_port()}")  # no time-series DB here: said so
    b = Backlog(pipeline.db_url, create=False)
    orgs.import_org(b, DEMO_ORG)
    _seed(b)
    token = orgs.create_token(b, "sun.supervisor", "wall browser test")
    server = ApiServer(b, tmp_path / "evidence").start()
    errors: list[str] = []
    try:
        with sync_playwright() as p:
            ctx = _browser(p, tmp_path / "chromium-profile")
            try:
                page = ctx.new_page()
                page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
                page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
                page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} {r.failure}"))

                # the same authentication as the API: a bearer token, pasted once into the login form
                page.goto(f"{server.url}/wall")
                page.fill("#token", token)
                page.click("button[type=submit]")
                page.wait_for_selector("#live:not(.off)", timeout=10_000)  # the event stream is open
                page.wait_for_function("document.querySelectorAll('#feed li[data-ticket-id]').length >= 3",
                                       timeout=10_000)
                assert page.text_content("#k-red") == "0"
                assert page.text_content("#k-orange") == "1"

                # a crane lifts 11.5 t on a 10 t rating: red, a major hazard with stop-work
                t0 = time.monotonic()
                topic = reading_topic("cz-0412", "crane", "tc-01", "load")
                start = now_ms()
                for i, v in enumerate([4.0, 5.2, 6.1] + [11.5] * 8):
                    sensor.publish(topic, {"ts": start + i * 200, "value": v, "unit": "t"})
                page.wait_for_selector("#majors li[data-site='cz-0412']", timeout=APPEAR_S * 1000)
                appeared = time.monotonic() - t0
                print(f"MQTT publish → on the wall page in {appeared:.2f} s")
                assert appeared < APPEAR_S
                major = page.text_content("#majors li[data-site='cz-0412']")
                assert "南夏墅安置房" in major and "tc-01" in major and "起重量超载" in major and "停工" in major
                assert page.text_content("#k-red") == "1" and page.text_content("#k-stop") == "1"
                feed = lambda: " | ".join(page.locator("#feed li[data-site='cz-0412']").all_text_contents())  # noqa: E731
                wait_until(lambda: "新隐患" in feed() and "列为重大隐患" in feed(), 5, "the ticket feed entries")
                assert "静默" in page.text_content("#devices")  # the silent pit sensor at cz-0003

                time.sleep(1.0)  # let the map's ripple and charts settle for the picture
                shot = tmp_path / "wall.png"
                page.screenshot(path=str(shot))
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, SCREENSHOT)

                # English switch, then the site drill-down (its charts say the time-series DB is not there)
                page.click("#lang")
                assert page.text_content("header h1") == "Construction Site Safety Wall"
                assert "crane.overload" in page.text_content("#majors")
                page.click("#majors li[data-site='cz-0412']")
                page.wait_for_selector("#site-tickets tr[data-ticket-id]", timeout=5000)
                assert "cz-0412" in page.text_content("#site-title")
                assert "Time-series database unavailable" in page.text_content("#site-note")
                page.click("#back")
                assert page.is_hidden("#site")
                seen = list(errors)  # before closing the browser aborts the event stream
            finally:
                ctx.close()
    finally:
        server.stop()
    assert not seen, seen
