"""Render one message (one or more items for one receiver) for every kind of channel, in the receiver's language.

SMS is held to a length budget (``defaults.sms_max_chars``, 70 = one UCS-2 segment, minus the provider's
【签名】): if the full template is longer, a compact form is used, and as a last resort the text is cut before
the link so the link survives.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from jinja2 import ChoiceLoader, DictLoader, Environment, FileSystemLoader, StrictUndefined

from alerts import links
from alerts.channels.base import Rendered
from alerts.config import AlertsConfig
from alerts.templates import COLORS, TEMPLATES, UNITS, WORDS

Item = tuple[str, str, dict[str, Any]]  # (item id, kind, payload)


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
        unit = (payload.get("finding") or {}).get("unit") or t.get("unit") or ""
        return {
            "id": item_id, "kind": kind, "ticket_id": tid,
            "site": t.get("site", "?"), "device": t.get("device", "?"), "family": t.get("family", ""),
            "family_name": w["family"].get(t.get("family", ""), t.get("family", "")),
            "hazard": t.get("kind", ""), "metric": t.get("metric", ""),
            "metric_name": w["metric"].get(t.get("metric", ""), t.get("metric", "")),
            "value": fmt_num(t.get("value")), "threshold": fmt_num(t.get("threshold")) if t.get("threshold") else "",
            "unit": UNITS.get(unit, unit), "level": level, "level_name": w["level"].get(level, str(level)),
            "major": bool(t.get("major")), "status": t.get("status", ""), "action": payload.get("action", kind),
            "link": self.cfg.defaults.ticket_url.format(id=tid, site=t.get("site", "")),
            "ack_link": self._ack_link(receiver, tid) if kind not in ("resolved", "test") else "",
            "note": note, "color": COLORS.get(level, "info"),
        }

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
