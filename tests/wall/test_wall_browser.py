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
from sitewatch.findings import Level
from sitewatch.contracts import now_ms, reading_topic
from app.localstack import free_port
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


def test_site_drilldown_draws_the_shared_charts_with_their_lines(server, org, filled, tmp_path, monkeypatch):
    """The drill-down in the browser, on a real InfluxDB filled like the sink fills it: every trend of the
    Grafana site wall with data and its yellow/orange/red lines, the pit's applied alarm threshold, tiles."""
    from playwright.sync_api import sync_playwright

    from backlog.api import wall

    monkeypatch.setenv("SW_INFLUX_URL", filled.url)
    org.apply_findings([finding(site="cz-0001", device="tc-01", family="crane", kind="crane.overload",
                                level=Level.RED, major=True, metric="load", value=11.3, threshold=11.0)])
    link = wall.login_link(server.url, orgs.create_token(org, "wang.officer"))  # an officer of cz-0001/0002
    errors: list[str] = []
    with sync_playwright() as p:
        ctx = _browser(p, tmp_path / "chromium-profile")
        try:
            ctx.set_default_timeout(10_000)
            page = ctx.new_page()
            page.set_viewport_size({"width": 1600, "height": 1400})
            page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.goto(link)  # → cookie → /wall
            page.wait_for_selector("#live:not(.off)")
            page.goto(f"{server.url}/wall?site=cz-0001")
            page.wait_for_selector("#site-tickets tr[data-ticket-id]")
            page.wait_for_function("document.querySelectorAll('#site-current .tile').length >= 20")
            opts = page.evaluate("""() => ['crane_load', 'crane_moment', 'pit_displacement', 'battery_temps'].map(k => {
                const o = echarts.getInstanceByDom(document.getElementById('trend-' + k)).getOption();
                return {k, series: o.series.map(s => ({name: s.name, n: s.data.length,
                        lines: ((s.markLine || {}).data || []).map(d => d.yAxis)}))};
            })""")
            by = {o["k"]: o["series"] for o in opts}
            assert all(s["n"] > 10 for k in ("crane_load", "crane_moment", "battery_temps") for s in by[k]), by
            assert by["crane_moment"][0]["lines"] == [90, 100, 110]
            assert by["battery_temps"][0]["lines"] == [45, 55, 65]
            assert by["pit_displacement"][0]["lines"] == [21, 25.5, 30]
            assert any(s["name"].startswith("报警线") and s["n"] > 0 for s in by["pit_displacement"]), by
            assert "cz-0001" in page.text_content("#site-title") and "起重量超载" in page.text_content("#site-tickets")
            time.sleep(0.5)
            page.screenshot(path=str(tmp_path / "wall-site.png"))
            shutil.copyfile(tmp_path / "wall-site.png", SCREENSHOT.with_name("wall-site.png"))
            # the officer's wall has no cz-0412: its drill-down does not exist
            assert page.request.get(f"{server.url}/wall/api/site/cz-0412").status == 404
            seen = list(errors)
        finally:
            ctx.close()
    assert not seen, seen
