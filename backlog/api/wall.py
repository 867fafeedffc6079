"""The wall page (``/wall``): SiteWatch's own big screen for supervisors, served by the backlog API.

What it shows: a city map placing the sites by their coordinates (``config/sites.yaml``, drawn on a plain
longitude/latitude plane — no online map tiles), live counts of open hazards by level and family, the open major
hazards with their stop-work and listed-supervision state, device health, the ticket feed, and a per-site
drill-down with the sensor charts and their threshold lines. Updates are pushed with server-sent events.

Where the numbers come from:

- hazards, majors, stop-work, the feed: the backlog (the ledger), scoped exactly like ``GET /tickets``;
- device health: the backlog's latest device-health rows (``GET /devices/health``), else the open
  sensor-fault tickets;
- the drill-down's charts: InfluxDB (``SW_INFLUX_URL``), through the very query definitions the Grafana site
  wall uses (``dashboards/queries.py``), so the two screens cannot disagree.

Authentication is the API's: a bearer token. A browser's ``EventSource`` cannot send headers, so the page
logs in once — ``POST /wall/session`` with the token — and gets an HttpOnly, SameSite=Strict cookie holding a
signed claim on that token (its SHA-256, never the token) with an expiry. Every request re-checks the token in
the database, so a revoked token or a deactivated user loses the wall at the next request or push. A short-lived
signed link (``/wall/login?k=…``, what ``make demo`` prints) sets the same cookie without pasting a token.
The signing key is ``$SW_WALL_SECRET`` (random per process when unset: sessions end when the API restarts).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from backlog import orgs
from backlog.api.ratelimit import RESPONSES as LIMITED, Limiter, client_key
from backlog.authz import Actor
from backlog.models import ApiToken, Device, OrgUnit, Project, Ticket, TicketEvent, User
from backlog.store import WORKING_STATUSES, Backlog
from dashboards import queries
from sitewatch import signed
from sitewatch.signed import sign

log = logging.getLogger("sitewatch.wall")

ENV_SECRET = "SW_WALL_SECRET"
ENV_SITES = "SW_SITES_FILE"
COOKIE = "sw_wall"
SESSION_S = 12 * 3600
LINK_S = 3600
STATIC = Path(__file__).parent / "wall_static"
DEFAULT_SITES = Path(__file__).resolve().parents[2] / "config" / "sites.yaml"
FEED_LEN = 40
STREAM_MAX_S = 600  # a stream ends after this; EventSource reconnects by itself (and re-authenticates)


# ------------------------------------------------------------------------------------------------ signing
def unsign(secret: str, value: str, now_s: float, kind: str) -> dict | None:
    """The claims of a wall login link (``kind="link"``) or session cookie, else None."""
    data = signed.unsign(secret, value, now_s)
    if data is None or data.get("k") != kind or not isinstance(data.get("th"), str):
        return None
    return data


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def wall_secret() -> str:
    return os.environ.get(ENV_SECRET) or _PROCESS_SECRET


_PROCESS_SECRET = secrets.token_urlsafe(32)


def login_link(base_url: str, token: str, secret: str | None = None, ttl_s: int = LINK_S) -> str:
    """A link that logs a browser into the wall as the token's user; valid for ``ttl_s`` (the session it opens
    lasts 12 h and ends early if the token is revoked)."""
    claims = {"k": "link", "th": token_hash(token), "e": int(time.time()) + ttl_s}
    return f"{base_url.rstrip('/')}/wall/login?k={sign(secret or wall_secret(), claims)}"


def actor_for_hash(backlog: Backlog, th: str) -> Actor | None:
    """``orgs.authenticate`` for a token known by its hash: unknown, revoked or deactivated → None."""
    with backlog.session() as s:
        row = s.scalars(select(ApiToken).where(ApiToken.token_hash == th, ApiToken.revoked_ms.is_(None))).first()
        if row is None:
            return None
        user = s.get(User, row.user_id)
        if user is None or not user.active:
            return None
        return orgs.actor_for(s, user)


# ------------------------------------------------------------------------------------------------ sites
def load_sites(path: Path | None = None) -> dict[str, dict]:
    """``{site: {name, lat, lon, district}}`` from ``config/sites.yaml`` (or ``$SW_SITES_FILE``); missing → {}."""
    p = Path(path or os.environ.get(ENV_SITES) or DEFAULT_SITES)
    if not p.exists():
        return {}
    doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{p}: expected a mapping site → {{name, lat, lon, district}}")
    out = {}
    for site, v in doc.items():
        v = v or {}
        lat, lon = v.get("lat"), v.get("lon")
        if lat is not None and not (-90 <= float(lat) <= 90 and -180 <= float(lon) <= 180):
            raise ValueError(f"{p}: {site}: lat/lon out of range")
        out[str(site)] = {"name": str(v.get("name", site)), "district": str(v.get("district", "")),
                          "lat": None if lat is None else float(lat), "lon": None if lon is None else float(lon)}
    return out


# ------------------------------------------------------------------------------------------------ device health
FAULT_STATE = {"fault.silent": "silent", "fault.gateway_offline": "off"}


def device_health_from_tickets(s, actor: Actor, site: str | None = None) -> list[dict]:
    """Registered devices (org file) and devices with tickets; state from their open sensor-fault tickets."""
    q = select(Device)
    tq = select(Ticket).where(Ticket.status != "closed")
    if site:
        q, tq = q.where(Device.site == site), tq.where(Ticket.site == site)
    if actor.sites is not None:
        q, tq = q.where(Device.site.in_(sorted(actor.sites))), tq.where(Ticket.site.in_(sorted(actor.sites)))
    out: dict[tuple[str, str], dict] = {}
    for d in s.scalars(q):
        out[(d.site, d.code)] = {"site": d.site, "device": d.code, "family": d.family, "state": "ok",
                                 "since_ms": None, "reason": "", "gateway": None}
    rank = {"ok": 0, "faulty": 1, "silent": 2, "off": 3}
    for t in s.scalars(tq.order_by(Ticket.id)):
        cur = out.setdefault((t.site, t.device), {"site": t.site, "device": t.device, "family": t.family,
                                                  "state": "ok", "since_ms": None, "reason": "", "gateway": None})
        if t.category != "fault" or not t.active:
            continue
        state = FAULT_STATE.get(t.kind, "faulty")
        if rank[state] > rank[cur["state"]]:
            cur.update(state=state, since_ms=t.opened_ms, reason=t.kind)
    return sorted(out.values(), key=lambda d: (-rank.get(d["state"], 0), d["site"], d["device"]))


def device_health(backlog: Backlog, s, actor: Actor, site: str | None = None) -> tuple[str, list[dict]]:
    """Device states: the latest ``device.health`` rows (``Backlog.device_health``, what ``GET /devices/health``
    serves) where the backlog keeps them, over the fault-ticket view for devices without such a row."""
    base = {(d["site"], d["device"]): d for d in device_health_from_tickets(s, actor, site)}
    fn = getattr(backlog, "device_health", None)
    rows = []
    if fn is not None:
        try:
            rows = fn(actor, site=site)
        except Exception:  # noqa: BLE001 - an older schema without the table: the tickets' view, said so
            log.warning("device health rows unavailable; showing fault tickets", exc_info=True)
            rows = []
    for h in rows:
        get = h.get if isinstance(h, dict) else (lambda k, _h=h: getattr(_h, k, None))
        base[(get("site"), get("device"))] = {"site": get("site"), "device": get("device"), "family": get("family"),
                                             "state": get("state"), "since_ms": get("since_ms"),
                                             "reason": get("reason") or "", "gateway": get("gateway")}
    rank = {"off": 3, "silent": 2, "faulty": 1, "inhibited": 0, "ok": -1}
    out = sorted(base.values(), key=lambda d: (-rank.get(d["state"], 0), d["site"], d["device"]))
    return ("devices" if rows else "tickets"), out


# ------------------------------------------------------------------------------------------------ the overview
def _scoped(q, actor: Actor, col):
    return q if actor.sites is None else q.where(col.in_(sorted(actor.sites)))


def _ticket(t: Ticket, now: int, names: dict[str, str]) -> dict:
    return {"id": t.id, "site": t.site, "site_name": names.get(t.site, t.site), "device": t.device,
            "family": t.family, "kind": t.kind, "category": t.category, "title": t.title, "status": t.status,
            "level": t.level, "peak_level": t.peak_level, "active": t.active, "major": t.major,
            "stop_work": t.stop_work, "listed_supervision": t.listed_supervision, "metric": t.metric,
            "value": t.last_value, "peak_value": t.peak_value, "threshold": t.threshold, "opened_ms": t.opened_ms,
            "deadline_ms": t.deadline_ms, "reopen_count": t.reopen_count,
            "overdue": t.status in WORKING_STATUSES and t.deadline_ms is not None and t.deadline_ms < now}


def overview(backlog: Backlog, actor: Actor, sites_cfg: dict[str, dict]) -> dict[str, Any]:
    """Everything the wall's main view shows, limited to the sites ``actor`` may see."""
    now = backlog.clock()
    with backlog.session() as s:
        units = {u.id: u for u in s.scalars(select(OrgUnit))}
        projects = {p.site: p for p in s.scalars(select(Project))}
        open_t = list(s.scalars(_scoped(select(Ticket).where(Ticket.status != "closed"), actor, Ticket.site)
                                .order_by(Ticket.id)))
        feed_q = (select(TicketEvent, Ticket).join(Ticket, TicketEvent.ticket_id == Ticket.id)
                  .order_by(TicketEvent.id.desc()).limit(FEED_LEN))
        feed_rows = list(s.execute(_scoped(feed_q, actor, Ticket.site)))
        source, devices = device_health(backlog, s, actor)
    devices = [d for d in devices if actor.sees(d["site"])]

    known = set(sites_cfg) | set(projects) | {t.site for t in open_t} | {d["site"] for d in devices}
    sites: dict[str, dict] = {}
    for code in sorted(c for c in known if actor.sees(c)):
        cfg, p = sites_cfg.get(code, {}), projects.get(code)
        sites[code] = {
            "site": code, "name": p.name if p else cfg.get("name", code),
            "district": units[p.district_id].name if p else cfg.get("district", ""),
            "company": units[p.company_id].name if p else "", "lat": cfg.get("lat"), "lon": cfg.get("lon"),
            "open": 0, "worst": 0, "alarming": 0, "majors": 0, "stop_work": 0, "overdue": 0, "faults": 0,
            "devices_bad": 0}
    names = {c: v["name"] for c, v in sites.items()}
    by_level = {"3": 0, "2": 0, "1": 0}
    by_family: dict[str, int] = {f: 0 for f in queries.FAMILIES}
    majors, totals = [], {"open": 0, "majors": 0, "stop_work": 0, "overdue": 0, "listed": 0, "faults": 0}
    for t in open_t:
        row = sites[t.site]
        d = _ticket(t, now, names)
        if t.category == "fault":
            row["faults"] += 1
            totals["faults"] += 1
            continue
        row["open"] += 1
        row["worst"] = max(row["worst"], t.peak_level)
        row["alarming"] += bool(t.active and t.level > 0)
        row["overdue"] += d["overdue"]
        totals["open"] += 1
        totals["overdue"] += d["overdue"]
        by_level[str(max(1, min(3, t.peak_level)))] += 1
        by_family[t.family] = by_family.get(t.family, 0) + 1
        if t.major:
            row["majors"] += 1
            row["stop_work"] += bool(t.stop_work)
            totals["majors"] += 1
            totals["stop_work"] += bool(t.stop_work)
            totals["listed"] += bool(t.listed_supervision)
            majors.append(d)
    health = {"ok": 0, "off": 0, "silent": 0, "faulty": 0, "inhibited": 0}
    for dv in devices:
        health[dv["state"]] = health.get(dv["state"], 0) + 1
        if dv["state"] not in ("ok", "inhibited") and dv["site"] in sites:
            sites[dv["site"]]["devices_bad"] += 1
    feed = [{"event_id": e.id, "at_ms": e.at_ms, "action": e.action, "actor": e.actor, "from_level": e.from_level,
             "to_level": e.to_level, **{k: v for k, v in _ticket(t, now, names).items() if k != "value"}}
            for e, t in feed_rows]
    return {"sites": list(sites.values()), "by_level": by_level, "by_family": by_family, "totals": totals,
            "majors": sorted(majors, key=lambda m: (not m["stop_work"], -m["peak_level"], m["opened_ms"])),
            "devices": devices, "devices_source": source, "device_health": health, "feed": feed}


# ------------------------------------------------------------------------------------------------ drill-down
class Influx:
    """Read-only InfluxQL over HTTP (1.x ``/query``; 2.x/3.x through their v1-compatible endpoint)."""

    def __init__(self) -> None:
        url = os.environ.get("SW_INFLUX_URL", "http://127.0.0.1:8086")
        self.url = url.replace("influxdb2s://", "https://").replace("influxdb2://", "http://").rstrip("/")
        self.db = os.environ.get("SW_INFLUX_DB", "sitewatch")
        user, pw, token = (os.environ.get(k) for k in ("SW_INFLUX_USERNAME", "SW_INFLUX_PASSWORD", "SW_INFLUX_TOKEN"))
        self.auth = (user, pw or "") if user else None
        self.headers = {"Authorization": f"Token {token}"} if token else {}

    def query(self, statements: list[str]) -> list[dict]:
        r = httpx.post(f"{self.url}/query", data={"q": ";".join(statements), "db": self.db, "epoch": "ms"},
                       auth=self.auth, headers=self.headers, timeout=5)
        r.raise_for_status()
        return r.json().get("results", [])


def _bands_for(name: str, overrides) -> list[float] | None:
    import re

    for regex, y, o, r in overrides:
        if re.match(regex, name):
            return [y, o, r]
    return None


def charts(site: str, end_ms: int, influx: Influx | None = None) -> dict[str, Any]:
    """The drill-down's charts and tiles from the shared query definitions; ``error`` when InfluxDB is away."""
    influx = influx or Influx()
    plan: list[tuple[queries.Shared, queries.Target]] = []
    stmts = []
    for sh in (*queries.TRENDS, *queries.CURRENT, queries.GATEWAYS):
        for t in sh.targets:
            plan.append((sh, t))
            stmts.append(queries.render(t.query, site, end_ms, queries.span_of(sh)))
    try:
        results = influx.query(stmts)
    except (httpx.HTTPError, ValueError) as e:
        return {"error": f"time-series database unavailable ({type(e).__name__}: {e})", "trends": [], "current": [],
                "gateways": [], "influx": influx.url}
    trends: dict[str, dict] = {}
    current, gateways = [], []
    for (sh, t), res in zip(plan, results):
        if res.get("error"):
            log.warning("wall query %s/%s failed: %s", sh.key, t.ref_id, res["error"])
        for series in res.get("series", []) or []:
            tags = series.get("tags") or {}
            name = queries.alias(t.alias, tags)
            values = [[row[0], row[1]] for row in series.get("values", []) if row[1] is not None]
            if sh in queries.TRENDS:
                c = trends.setdefault(sh.key, {"key": sh.key, "title": sh.title, "title_zh": sh.title_zh,
                                               "unit": sh.unit, "bands": list(sh.bands) if sh.bands else None,
                                               "span_ms": queries.span_of(sh), "series": []})
                c["series"].append({"name": name, "alarm": t.ref_id != "A", "points": values})
            elif sh is queries.GATEWAYS:
                gateways.append({"gateway": tags.get("gateway", ""), "online": bool(values and values[-1][1])})
            elif values:
                family = sh.key.removeprefix("current_")
                current.append({"family": family, "device": tags.get("device", ""), "metric": tags.get("metric", ""),
                                "value": values[-1][1], "ts": values[-1][0],
                                "bands": _bands_for(name, sh.band_overrides)})
    for sh in queries.TRENDS:  # every trend panel, even without data: the wall shows it empty, like Grafana
        trends.setdefault(sh.key, {"key": sh.key, "title": sh.title, "title_zh": sh.title_zh, "unit": sh.unit,
                                   "bands": list(sh.bands) if sh.bands else None, "span_ms": queries.span_of(sh),
                                   "series": []})
    return {"error": None, "trends": [trends[sh.key] for sh in queries.TRENDS], "current": current,
            "gateways": gateways, "influx": influx.url}


def site_detail(backlog: Backlog, actor: Actor, site: str, sites_cfg: dict[str, dict]) -> dict[str, Any] | None:
    ov = overview(backlog, actor, sites_cfg)
    info = next((x for x in ov["sites"] if x["site"] == site), None)
    if info is None:
        return None
    now = backlog.clock()
    with backlog.session() as s:
        rows = list(s.scalars(select(Ticket).where(Ticket.site == site).order_by(Ticket.id.desc()).limit(50)))
    names = {site: info["name"]}
    return {"site": info, "tickets": [_ticket(t, now, names) for t in rows],
            "devices": [d for d in ov["devices"] if d["site"] == site], "devices_source": ov["devices_source"],
            "charts": charts(site, int(time.time() * 1000))}  # readings live on the wall clock, not the ledger's


# ------------------------------------------------------------------------------------------------ the router
LOGIN_PAGE = (STATIC / "login.html")
INDEX_PAGE = (STATIC / "index.html")
NO_STORE = {"Cache-Control": "no-store"}


def router(backlog: Backlog, sites_file: Path | None = None, poll_s: float = 1.0,
           limiter: Limiter | None = None) -> APIRouter:
    r = APIRouter(tags=["wall page"])
    limiter = limiter or Limiter()

    def sites_cfg() -> dict[str, dict]:
        return load_sites(sites_file)

    def actor_of(request: Request) -> Actor | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return orgs.authenticate(backlog, auth[7:].strip())
        claims = unsign(wall_secret(), request.cookies.get(COOKIE, ""), time.time(), "session")
        return actor_for_hash(backlog, claims["th"]) if claims else None

    def unauthorized() -> JSONResponse:
        return JSONResponse({"detail": "log in to the wall (POST /wall/session) or send a bearer token"},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})

    def with_session(resp: Response, request: Request, th: str) -> Response:
        value = sign(wall_secret(), {"k": "session", "th": th, "e": int(time.time()) + SESSION_S})
        resp.set_cookie(COOKIE, value, max_age=SESSION_S, path="/wall", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
        return resp

    @r.get("/wall", include_in_schema=False)
    async def page(request: Request) -> Response:
        actor = await run_in_threadpool(actor_of, request)
        return FileResponse(INDEX_PAGE if actor else LOGIN_PAGE, media_type="text/html", headers=NO_STORE)

    @r.post("/wall/session", summary="Log the wall page in with an API token (sets an HttpOnly cookie)",
            responses=LIMITED, openapi_extra={"requestBody": {"required": True, "content": {
                t: {"schema": {"type": "object", "properties": {"token": {"type": "string"}}, "required": ["token"]}}
                for t in ("application/json", "application/x-www-form-urlencoded")}}})
    async def session(request: Request) -> Response:
        limiter.hit("login", f"ip:{client_key(request)}")
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            try:  # not JSON, or JSON that is not {"token": "..."}: no token (401), never a 500
                data = await request.json()
            except ValueError:
                data = None
            token = data.get("token") if isinstance(data, dict) else None
            token = token if isinstance(token, str) else ""
        else:  # an HTML form (urlencoded); parsed here so the API needs no multipart library
            from urllib.parse import parse_qs

            token = (parse_qs((await request.body()).decode("utf-8", "replace")).get("token") or [""])[0]
        token = token.strip()
        actor = await run_in_threadpool(orgs.authenticate, backlog, token) if token else None
        if actor is None:
            return unauthorized()
        return with_session(JSONResponse({"name": actor.name, "role": actor.role}), request, token_hash(token))

    @r.get("/wall/login", include_in_schema=False)
    async def link_login(request: Request, k: str = "") -> Response:
        limiter.hit("login", f"ip:{client_key(request)}")
        claims = unsign(wall_secret(), k, time.time(), "link")
        actor = await run_in_threadpool(actor_for_hash, backlog, claims["th"]) if claims else None
        if actor is None:
            return HTMLResponse("<!doctype html><meta charset=utf-8><title>SiteWatch</title>"
                                "<p>链接无效或已过期 / Link invalid or expired. <a href='/wall'>登录 / Log in</a></p>",
                                status_code=403, headers=NO_STORE)
        return with_session(RedirectResponse("/wall", status_code=303), request, claims["th"])

    @r.post("/wall/logout", include_in_schema=False)
    def logout() -> Response:
        resp = JSONResponse({"ok": True})
        resp.delete_cookie(COOKIE, path="/wall")
        return resp

    @r.get("/wall/static/{name:path}", include_in_schema=False)
    def static(name: str) -> Response:
        try:
            path = (STATIC / name).resolve()
            found = STATIC.resolve() in path.parents and path.is_file()
        except (ValueError, OSError):  # a NUL byte (%00) or a name too long: no such file, not a 500
            found = False
        if not found:
            hint = " (run `make deps`: it installs ECharts from npm)" if name.startswith("vendor/") else ""
            return JSONResponse({"detail": f"no such file{hint}"}, status_code=404)
        return FileResponse(path, headers={"Cache-Control": "public, max-age=300"})

    @r.get("/wall/api/overview", summary="The wall's overview: sites, counts, majors, devices, ticket feed")
    async def api_overview(request: Request) -> Response:
        actor = await run_in_threadpool(actor_of, request)
        if actor is None:
            return unauthorized()
        data = await run_in_threadpool(overview, backlog, actor, sites_cfg())
        return JSONResponse({"me": {"name": actor.name, "role": actor.role}, **data}, headers=NO_STORE)

    @r.get("/wall/api/site/{site}", summary="One site: tickets, devices, sensor charts with threshold lines")
    async def api_site(site: str, request: Request) -> Response:
        actor = await run_in_threadpool(actor_of, request)
        if actor is None:
            return unauthorized()
        if not queries.SITE_CODE.match(site) or not actor.sees(site):
            return JSONResponse({"detail": f"site {site} not found"}, status_code=404)
        data = await run_in_threadpool(site_detail, backlog, actor, site, sites_cfg())
        if data is None:
            return JSONResponse({"detail": f"site {site} not found"}, status_code=404)
        return JSONResponse(data, headers=NO_STORE)

    @r.get("/wall/api/stream", summary="Server-sent events: `overview` whenever it changes")
    async def stream(request: Request) -> Response:
        actor = await run_in_threadpool(actor_of, request)
        if actor is None:
            return unauthorized()

        async def events():
            last, beat, t0 = None, time.monotonic(), time.monotonic()
            yield "retry: 2000\n\n"
            while time.monotonic() - t0 < STREAM_MAX_S:
                who = await run_in_threadpool(actor_of, request)  # revoked token: the wall goes dark
                if who is None:
                    yield "event: auth\ndata: {}\n\n"
                    return
                data = await run_in_threadpool(overview, backlog, who, sites_cfg())
                body = json.dumps({"me": {"name": who.name, "role": who.role}, **data}, ensure_ascii=False,
                                  sort_keys=True, separators=(",", ":"))
                if body != last:
                    yield f"event: overview\ndata: {body}\n\n"
                    last, beat = body, time.monotonic()
                elif time.monotonic() - beat > 15:
                    yield ": keep-alive\n\n"
                    beat = time.monotonic()
                await asyncio.sleep(poll_s)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={**NO_STORE, "X-Accel-Buffering": "no"})

    return r
