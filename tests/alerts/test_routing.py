"""Routing decisions, rule by rule: site, company (from the config or the org tree), family, level, kind glob,
category, device, major; first match wins unless ``continue``; default receivers; nothing matches."""

from __future__ import annotations

import pytest

from alerts.config import AlertsConfig
from alerts.routing import facts, tiers_for, due_now
from tests.alerts.conftest import alert

RECEIVERS = {n: {"channels": [{"type": "webhook", "url": f"http://127.0.0.1:1/{n}"}]}
             for n in ("ops", "wang", "li", "zhao", "chen", "sun", "elec", "pitteam", "faults", "fallback")}

CFG = AlertsConfig.model_validate({
    "sites": {"cz-0001": {"company": "jianan"}, "cz-0002": {"company": "jianan"}},
    "receivers": RECEIVERS,
    "routes": [
        {"name": "ops-copy", "match": {}, "tiers": [{"receivers": ["ops"]}], "continue": True},
        {"name": "faults", "match": {"category": "fault"}, "tiers": [{"receivers": ["faults"]}]},
        {"name": "electrical", "match": {"family": "electrical", "level": ["orange", "red"]},
         "tiers": [{"receivers": ["elec"]}], "continue": True},
        {"name": "pit-wall", "match": {"kind": "pit.wall_*", "site": "cz-0003"}, "tiers": [{"receivers": ["pitteam"]}]},
        {"name": "jianan", "match": {"company": "jianan"},
         "tiers": [{"receivers": ["wang"]}, {"after": "15min", "receivers": ["zhao"]},
                   {"major_only": True, "receivers": ["sun"]}]},
        {"name": "tianyuan-red", "match": {"company": "tianyuan", "level": "red"},
         "tiers": [{"receivers": ["chen"]}, {"after": "30min", "receivers": ["sun"]}]},
        {"name": "cz-0412-crane-tc01", "match": {"site": "cz-0412", "device": "tc-0[1-3]"},
         "tiers": [{"receivers": ["li"]}]},
    ],
    "default_receivers": ["fallback"],
})

ORG = {"cz-0003": "tianyuan", "cz-0001": "someone-else"}  # the config's sites: wins over the org tree


def routed(a: dict) -> list[tuple[str, float, bool]]:
    f = facts(a, ORG.get, CFG)
    return [(r, tr.tier.after, due_now(tr, f)) for tr in tiers_for(CFG, f) for r in tr.tier.receivers]


@pytest.mark.parametrize("a, expected", [
    # company from the config's sites: tier 1 now, tier 2 later, tier 3 only for majors
    (alert(1, site="cz-0001"), [("ops", 0, True), ("wang", 0, True), ("zhao", 900, False), ("sun", 0, False)]),
    (alert(2, site="cz-0002", major=True),
     [("ops", 0, True), ("wang", 0, True), ("zhao", 900, False), ("sun", 0, True)]),
    # company from the org tree (callable), red only
    (alert(3, site="cz-0003", level=3, family="battery", kind="battery.pack_temp"),
     [("ops", 0, True), ("chen", 0, True), ("sun", 1800, False)]),
    # orange at tianyuan: only the ops copy matched, so the default receivers are not used
    (alert(4, site="cz-0003", level=2, family="battery", kind="battery.pack_temp"), [("ops", 0, True)]),
    # kind glob + site, before the company rule
    (alert(5, site="cz-0003", family="pit", kind="pit.wall_top_horizontal"), [("ops", 0, True), ("pitteam", 0, True)]),
    # category
    (alert(6, site="cz-0001", category="fault", kind="fault.stale"), [("ops", 0, True), ("faults", 0, True)]),
    # family + level, continue into the company route
    (alert(7, site="cz-0001", family="electrical", kind="electrical.leakage", level=2),
     [("ops", 0, True), ("elec", 0, True), ("wang", 0, True), ("zhao", 900, False), ("sun", 0, False)]),
    (alert(8, site="cz-0001", family="electrical", kind="electrical.leakage", level=1),
     [("ops", 0, True), ("wang", 0, True), ("zhao", 900, False), ("sun", 0, False)]),
    # device glob
    (alert(9, site="cz-0412", device="tc-02"), [("ops", 0, True), ("li", 0, True)]),
    (alert(10, site="cz-0412", device="tc-04"), [("ops", 0, True)]),
])
def test_route_per_rule(a, expected):
    assert routed(a) == expected


def test_default_receivers_when_nothing_matches():
    cfg = AlertsConfig.model_validate({"receivers": RECEIVERS, "default_receivers": ["fallback"],
                                       "routes": [{"name": "x", "match": {"site": "nowhere"},
                                                   "tiers": [{"receivers": ["ops"]}]}]})
    assert [r for tr in tiers_for(cfg, facts(alert(1))) for r in tr.tier.receivers] == ["fallback"]
    cfg2 = cfg.model_copy(update={"default_receivers": []})
    assert tiers_for(cfg2, facts(alert(1))) == []


def test_org_lookup_failure_does_not_break_routing():
    def broken(site):
        raise RuntimeError("db down")

    f = facts(alert(1, site="cz-0412", device="tc-01"), broken, CFG)
    assert f["company"] is None and [tr.id for tr in tiers_for(CFG, f)] == ["ops-copy#0", "cz-0412-crane-tc01#0"]
