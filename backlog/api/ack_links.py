"""Signed acknowledgement links from alert messages: ``GET /ack/{token}`` → a confirmation page,
``POST /ack/{token}`` → the ticket is acknowledged as the user named in the token.

The token is made by the notifier (``alerts/links.py``) in the core's signed-claims format (``sitewatch.signed``)
with claims ``{"t": ticket, "u": user, "r": receiver, "e": expiry}``; the secret is ``$SW_ALERTS_ACK_SECRET`` on
both sides. A test signs with one room and verifies with the other.

Why GET does not acknowledge by itself: chat apps (WeCom, DingTalk) and mail scanners fetch links to build
previews, and a preview must not tell the system that a person has seen a red alert. The page has one button.
"""

from __future__ import annotations

import html
import os
import time

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from backlog import orgs
from backlog.api.ratelimit import Limiter, client_key
from backlog.errors import BacklogError
from backlog.store import Backlog
from sitewatch.signed import ACK_SECRET_ENV, unsign

ENV_SECRET = ACK_SECRET_ENV


def verify(secret: str, token: str, now_s: float) -> dict | None:
    data = unsign(secret, token, now_s)
    if data is None or not isinstance(data.get("t"), int) or not isinstance(data.get("u"), str):
        return None
    return data


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(f"""<!doctype html><html lang="zh"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{html.escape(title)}</title></head>
<body style="font-family:sans-serif;max-width:32em;margin:2em auto;padding:0 1em"><h2>{html.escape(title)}</h2>
{body}</body></html>""", status_code=status)


def router(backlog: Backlog, secret: str | None = None, clock=time.time, limiter: Limiter | None = None) -> APIRouter:
    r = APIRouter(tags=["acknowledgement links"])
    limiter = limiter or Limiter()

    def claims(token: str) -> dict | None:
        key = secret or os.environ.get(ENV_SECRET)
        return verify(key, token, clock()) if key else None

    invalid = ("链接无效或已过期 / Link invalid or expired",
               "<p>请登录系统处理工单。Please use the app.</p>", 403)

    @r.get("/ack/{token}", response_class=HTMLResponse, include_in_schema=False)
    def confirm(token: str) -> HTMLResponse:
        c = claims(token)
        if c is None:
            return _page(*invalid)
        try:
            t = backlog.ticket(c["t"])
        except BacklogError:
            return _page("工单不存在 / No such ticket", "", 404)
        state = html.escape(t.status)
        if t.status != "open":
            return _page(f"工单 {t.id} 已处理 / already {state}",
                         f"<p>{html.escape(t.site)} {html.escape(t.device)} {html.escape(t.kind)}: {state}</p>")
        return _page(f"确认收到隐患 {t.id} / Acknowledge ticket {t.id}",
                     f"<p>{html.escape(t.site)} {html.escape(t.device)} {html.escape(t.kind)} — "
                     f"{html.escape(c['u'])}</p><form method=post><button style='font-size:1.4em;padding:.5em 2em'>"
                     f"确认收到 / Acknowledge</button></form>")

    @r.post("/ack/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def acknowledge(token: str, request: Request) -> HTMLResponse:
        limiter.hit("ack", f"ip:{client_key(request)}")  # before the signature check: guessing counts too
        c = claims(token)
        if c is None:
            return _page(*invalid)

        def work():
            actor = orgs.actor_by_name(backlog, c["u"])
            t = backlog.ticket(c["t"])
            if t.status != "open":
                return t, False
            note = f"acknowledged by signed link sent to {c.get('r', c['u'])}"
            return backlog.acknowledge(c["t"], actor, note), True

        try:
            t, done = await run_in_threadpool(work)
        except BacklogError as e:
            return _page("无法确认 / Cannot acknowledge", f"<p>{html.escape(str(e))}</p>", e.status)
        if not done:
            return _page(f"工单 {t.id} 已处理 / already {html.escape(t.status)}", "")
        return _page(f"已确认 / Acknowledged: {t.id}", f"<p>{html.escape(t.site)} {html.escape(t.device)} — "
                     f"{html.escape(c['u'])}</p>")

    return r
