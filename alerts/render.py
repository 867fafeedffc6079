"""Render one message (one or more items for one receiver) for every kind of channel, in the receiver's language.

SMS is held to a length budget (``defaults.sms_max_chars``, 70 = one UCS-2 segment, minus the provider's
【签名】): if the full template is longer, a compact form is used, and as a last resort the text is cut before
the link so the link survives.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any, Callable, Iterable
from zoneinfo import ZoneInfo

from jinja2 import ChoiceLoader, DictLoader, Environment, FileSystemLoader, StrictUndefined

from alerts import links
from alerts.channels.base import Rendered
from alerts.config import AlertsConfig
from alerts.templates import COLORS, TEMPLATES, UNITS, WORDS
from sitewatch.contracts import FAMILIES

Item = tuple[str, str, dict[str, Any]]  # (item id, kind, payload)
DEFAULT_TZ = "Asia/Shanghai"  # site local time; SW_SITE_TZ or defaults.timezone overrides it


def site_tz(cfg: AlertsConfig | None = None) -> ZoneInfo:
    name = getattr(getattr(cfg, "defaults", None), "timezone", None) or os.environ.get("SW_SITE_TZ") or DEFAULT_TZ
    try:
        return ZoneInfo(str(name))
    except Exception:  # noqa: BLE001 - a bad zone name must not stop an alert
        return ZoneInfo(DEFAULT_TZ)


def hhmm(ms: Any, tz: ZoneInfo) -> str:
    """Site-local wall-clock time of an epoch-ms timestamp ("" when unknown)."""
    if not isinstance(ms, (int, float)) or isinstance(ms, bool):
        return ""
    return datetime.fromtimestamp(ms / 1000, tz).strftime("%H:%M")


def span(frm: Any, to: Any, tz: ZoneInfo) -> str:
    a, b = hhmm(frm, tz), hhmm(to, tz)
    return f"{a}–{b}" if a and b else a or b


def duration(seconds: Any, lang: str) -> str:
    """4 min / 4分钟; 45 s / 45秒; 2.5 h / 2.5小时."""
    if not isinstance(seconds, (int, float)) or seconds < 0:
        return ""
    w = WORDS[lang]["units_time"]
    if seconds < 60:
        return w["s"].format(n=int(round(seconds)))
    if seconds < 3600:
        return w["min"].format(n=int(round(seconds / 60)))
    return w["h"].format(n=fmt_num(round(seconds / 3600, 1)))


def fmt_num(x: Any) -> str:
    if x is None:
        return ""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    s = f"{f:.4g}"
    return s if "e" not in s else f"{f:.2f}"


def public_payload(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if not k.startswith("_")}


class Renderer:
    def __init__(self, cfg: AlertsConfig, clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.clock = clock
        loaders = [DictLoader({f"{k}.j2": v for k, v in TEMPLATES.items()})]
        if getattr(cfg.defaults, "templates_dir", None):
            loaders.insert(0, FileSystemLoader(str(cfg.defaults.templates_dir)))
        self.env = Environment(loader=ChoiceLoader(loaders), autoescape=False, undefined=StrictUndefined,
                               keep_trailing_newline=False)

    # ------------------------------------------------------------------------------------------------ helpers
    def language(self, receiver: str) -> str:
        r = self.cfg.receivers.get(receiver)
        return (r.language if r and r.language else None) or self.cfg.defaults.language

    def _ack_link(self, receiver: str, ticket_id: Any) -> str:
        r = self.cfg.receivers.get(receiver)
        d = self.cfg.defaults
        if r is None or not r.user or not d.ack_url or not isinstance(ticket_id, int):
            return ""
        try:
            secret = self.cfg.secret(d.ack_secret) if d.ack_secret else links.ack_secret()
        except Exception:
            secret = None
        if not secret:
            return ""
        token = links.make_token(secret, ticket_id, r.user, receiver, int(self.clock() + d.ack_link_ttl))
        return d.ack_url.format(token=token)

    def _item(self, lang: str, receiver: str, item_id: str, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        w = WORDS[lang]
        t = payload.get("ticket") or {}
        level = int(t.get("peak_level") or t.get("level") or 0)
        tid = t.get("id")
        note = ""
        if kind == "escalation":
            note = w["escalated"].format(minutes=int(round(payload.get("_escalation", {}).get("after_s", 0) / 60)))
        elif kind == "reminder":
            note = w["reminder"].format(k=payload.get("reminder", 1))
        elif kind == "resolved":
            note = w["resolved"].get(payload.get("reason", "closed"), "")
        elif kind == "test":
            note = w["test"]
        finding = payload.get("finding") or {}
        unit = (finding.get("unit") or t.get("unit")
                or FAMILIES.get(t.get("family", ""), {}).get(t.get("metric", "")) or "")
        unit = UNITS.get(unit, unit)
        tz = site_tz(self.cfg)
        # The figure a message leads with is the episode's worst reading (a red crane ticket is about the 11.5 t
        # lift, not the 4 t reading after it), at the time it was measured — never the time the data arrived.
        peak = t.get("peak_value") if t.get("peak_value") is not None else t.get("value")
        at = hhmm(t.get("peak_ts_ms"), tz)
        rated = t.get("rated")
        pct = fmt_num(round(abs(float(peak)) / float(rated) * 100)) if rated and peak is not None else ""
        cleared = not t.get("active", True) and t.get("clear_value") is not None and bool(t.get("cleared_ms"))
        clear = {"value": fmt_num(t.get("clear_value")), "at": hhmm(t.get("cleared_ms"), tz)} if cleared else {}
        def vu(v: str) -> str:  # value with unit: "11.5t" in Chinese text, "11.5 t" in English
            return f"{v}{unit}" if lang == "zh" else f"{v} {unit}".rstrip()

        if kind == "resolved" and payload.get("reason", "closed") == "cleared" and clear:
            note += w["cleared_at"].format(value=vu(clear["value"]), at=clear["at"])
        late = self._late(lang, t, finding, tz)
        if late and kind not in ("resolved", "test"):
            what = w["late_what"].format(family=w["family"].get(t.get("family", ""), t.get("family", "")),
                                         device=t.get("device", "?"),
                                         metric=w["metric"].get(t.get("metric", ""), t.get("metric", "")),
                                         value=vu(fmt_num(peak)), pct=(w["pct"].format(pct=pct) if pct else ""))
            sentence = w["late_in_outage" if late["outage"] else "late_at"].format(outage=late["outage"], at=at,
                                                                                   what=what)
            if clear:
                sentence += w["late_cleared"].format(value=vu(clear["value"]), at=clear["at"])
            if late["delay"]:
                sentence += w["late_delay"].format(delay=late["delay"])
            note = sentence + (w["sep"] + note if note else "")
        return {
            "id": item_id, "kind": kind, "ticket_id": tid,
            "site": t.get("site", "?"), "device": t.get("device", "?"), "family": t.get("family", ""),
            "family_name": w["family"].get(t.get("family", ""), t.get("family", "")),
            "hazard": t.get("kind", ""), "metric": t.get("metric", ""),
            "metric_name": w["metric"].get(t.get("metric", ""), t.get("metric", "")),
            "value": fmt_num(peak), "last_value": fmt_num(t.get("value")), "at": at, "pct": pct,
            "threshold": fmt_num(t.get("threshold")) if t.get("threshold") else "",
            "unit": unit, "level": level, "level_name": w["level"].get(level, str(level)),
            "major": bool(t.get("major")), "status": t.get("status", ""), "action": payload.get("action", kind),
            "link": self.cfg.defaults.ticket_url.format(id=tid, site=t.get("site", "")),
            "ack_link": self._ack_link(receiver, tid) if kind not in ("resolved", "test") else "",
            "note": note, "color": COLORS.get(level, "info"), "late": bool(late),
            "outage": late["outage"] if late else "", "clear_value": clear.get("value", ""),
            "clear_at": clear.get("at", ""),
        }

    @staticmethod
    def _late(lang: str, t: dict[str, Any], finding: dict[str, Any], tz: ZoneInfo) -> dict[str, str] | None:
        """Late data (buffered by a gateway during an outage, flushed later): the outage window and the delay,
        from the ticket (a back-dated ticket) or the finding that announced it (a late upgrade)."""
        ev = finding.get("evidence") or {}
        if not (t.get("late") or ev.get("late")):
            return None
        outage = ev.get("outage") if ev.get("late") else None
        frm, to = (outage if isinstance(outage, (list, tuple)) and len(outage) == 2
                   else (t.get("outage_from_ms"), t.get("outage_to_ms")))
        delay = ev.get("arrival_delay_s") if ev.get("late") else None
        if delay is None:
            delay = t.get("arrival_delay_s")
        return {"outage": span(frm, to, tz), "delay": duration(delay, lang)}

    def _tag(self, lang: str, kind: str, level: int) -> str:
        w = WORDS[lang]
        if kind in ("resolved", "test"):
            return w["kind"][kind]
        sep = "" if lang == "zh" else " "
        return f"{w['level'].get(level, '')}{sep}{w['kind'].get(kind, kind)}"

    # ------------------------------------------------------------------------------------------------ render
    def render(self, key: str, receiver: str, items: Iterable[Item], sms_budget: int | None = None,
               urgent: bool = False) -> Rendered:
        lang = self.language(receiver)
        raw = list(items)
        its = [self._item(lang, receiver, i, k, p) for i, k, p in raw]
        order = sorted(range(len(its)), key=lambda j: (not its[j]["major"], -its[j]["level"], j))
        its = [its[j] for j in order]
        raw = [raw[j] for j in order]
        lead = its[0]
        n = len(its)
        kinds = {it["kind"] for it in its}
        kind = kinds.pop() if len(kinds) == 1 else "alert"
        tag = self._tag(lang, kind, lead["level"])
        if lead["late"] and kind not in ("resolved", "test"):
            tag += WORDS[lang]["late_tag"]
        sites = sorted({it["site"] for it in its})
        site = sites[0] if len(sites) == 1 else ",".join(sites[:3]) + ("…" if len(sites) > 3 else "")
        devices = sorted({it["device"] for it in its})
        devs = ",".join(devices[:3]) + ("…" if len(devices) > 3 else "")
        site_url = getattr(self.cfg.defaults, "site_url", None)
        link = site_url.format(site=sites[0]) if (n > 1 and site_url) else lead["link"]
        w = WORDS[lang]
        what = (w["alarms"].format(n=n) if n > 1 else f"{lead['device']} {lead['metric_name']}")
        headline = w["headline"].format(tag=tag + (f"×{n}" if n > 1 else ""), what=f"{site} {what}")
        ctx = dict(kind=kind if n == 1 else "group", items=its, lead=lead, n=n, site=site, sites=sites,
                   devices=devs, majors=sum(1 for it in its if it["major"]), link=link, tag=tag,
                   headline=headline)
        r = lambda part: self.env.get_template(f"{part}.{lang}.j2").render(**ctx).strip()  # noqa: E731
        budget = sms_budget or self.cfg.defaults.sms_max_chars
        sms = self.fit_sms(r("sms" if n == 1 else "sms_group"), ctx, budget, lang)
        text = r("text")
        body = dict(public_payload(raw[0][2]))
        body.update({"kind": ctx["kind"], "receiver": receiver, "notification_key": key, "text": text,
                     "count": n, "items": [dict(public_payload(p), item_id=i, item_kind=k) for i, k, p in raw]})
        body.setdefault("alert_id", raw[0][0])
        body.setdefault("ticket", (raw[0][2].get("ticket") or {}))
        params = {"site": lead["site"], "device": lead["device"] if n == 1 else f"{devs}({n})",
                  "level": lead["level_name"], "value": f"{lead['value']}{lead['unit']}",
                  "threshold": lead["threshold"], "metric": lead["metric_name"], "link": link, "count": str(n),
                  "kind": tag, "text": sms}
        return Rendered(key=key, receiver=receiver, language=lang, subject=r("subject"), text=text,
                        markdown=r("markdown"), sms=sms, params=params, body=body, urgent=urgent)

    @staticmethod
    def fit_sms(text: str, ctx: dict[str, Any], budget: int, lang: str) -> str:
        text = " ".join(text.split())
        if len(text) <= budget:
            return text
        lead, link = ctx["lead"], ctx["link"]
        if ctx["n"] == 1:
            compact = f"【{ctx['tag']}】{lead['site']} {lead['device']}"
        else:
            compact = f"【{ctx['tag']}×{ctx['n']}】{ctx['site']}"
        if lang == "en":
            compact = compact.replace("【", "[").replace("】", "] ")
        if len(compact) + 1 + len(link) <= budget:
            return f"{compact} {link}"
        room = budget - len(link) - 2
        if room >= 8:
            return compact[:room] + "… " + link
        return compact[: budget - 1] + "…"
