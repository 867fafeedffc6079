"""Route an alert to on-call tiers; match silences. Pure functions over the config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from alerts.config import AlertsConfig, Matcher, Route, Tier


@dataclass(frozen=True)
class TierRef:
    id: str  # "route-name#index": what the incident remembers as told
    route: Route | None
    index: int
    tier: Tier

    @property
    def label(self) -> str:
        return self.tier.name or f"tier {self.index + 1}"


def facts(payload: dict[str, Any], company_of: Callable[[str], str | None] | None = None,
          cfg: AlertsConfig | None = None) -> dict[str, Any]:
    """What routes and silences match on, from an alert payload (its ``ticket`` summary)."""
    t = payload.get("ticket") or {}
    site = t.get("site")
    company = None
    if cfg is not None and site in cfg.sites:
        company = cfg.sites[site].get("company")
    if company is None and company_of is not None and site:
        try:
            company = company_of(site)
        except Exception:  # the org lookup is a convenience: routing by site still works without it
            company = None
    return {
        "site": site, "company": company, "family": t.get("family"), "device": t.get("device"),
        "kind": t.get("kind"), "category": t.get("category"),
        "level": int(t.get("peak_level") or t.get("level") or 0), "major": bool(t.get("major")),
    }


def matching_routes(cfg: AlertsConfig, f: dict[str, Any]) -> list[Route]:
    out = []
    for r in cfg.routes:
        if r.match.matches(f):
            out.append(r)
            if not r.continue_:
                break
    return out


DEFAULT_ROUTE = "(default)"


def tiers_for(cfg: AlertsConfig, f: dict[str, Any]) -> list[TierRef]:
    routes = matching_routes(cfg, f)
    out = [TierRef(f"{r.name}#{i}", r, i, t) for r in routes for i, t in enumerate(r.tiers)]
    if not out and cfg.default_receivers:
        out = [TierRef(f"{DEFAULT_ROUTE}#0", None, 0, Tier(receivers=list(cfg.default_receivers)))]
    return out


def due_now(tr: TierRef, f: dict[str, Any]) -> bool:
    return tr.tier.after == 0 and (not tr.tier.major_only or f["major"])


def silence_matches(matchers: dict[str, Any], f: dict[str, Any], receiver: str) -> bool:
    m = dict(matchers)
    receivers = m.pop("receiver", None)
    if receivers is not None:
        if receiver not in (receivers if isinstance(receivers, list) else [receivers]):
            return False
    return Matcher.model_validate(m).matches(f)
