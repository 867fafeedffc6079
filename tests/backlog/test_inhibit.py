"""Inhibition (Alertmanager inhibit_rules semantics): devices silent behind an offline gateway are not ticketed but
recorded and queryable, and resolved when the gateway is back; a fault never inhibits a hazard."""

from __future__ import annotations

import pytest

from backlog.inhibit import (DEFAULT_RULES, InhibitRule, InhibitRuleError, Inhibitor, check_rule, finding_labels,
                             ticket_labels)
from backlog.store import Backlog
from tests.backlog.late_helpers import MIN, OUT_FROM, crane, gateway, silent

T = OUT_FROM


def _keys(b):
    return sorted((t.device, t.kind) for t in b.tickets())


def test_silences_behind_an_offline_gateway_are_inhibited_then_resolved(backlog):
    # one batch: the silent devices sort before the gateway's key, the gateway must still go first
    assert backlog.apply_findings([silent(1, T + 5000, device="a-01"), gateway(2, T),
                                   silent(1, T + 6000, device="tc-01"),
                                   silent(1, T + 7000, device="tc-09", gateway="gw-02")]) == 2
    assert _keys(backlog) == [("gateway:gw-01", "fault.gateway_offline"), ("tc-09", "fault.silent")]
    gw_ticket = [t for t in backlog.tickets() if t.kind == "fault.gateway_offline"][0]
    rows = backlog.inhibited(active=True)
    assert sorted(r.device for r in rows) == ["a-01", "tc-01"]
    assert {(r.rule, r.source_ticket_id, r.kind, r.level) for r in rows} == {
        ("gateway-offline-silences", gw_ticket.id, "fault.silent", 1)}

    # re-asserts update the row; a replay does not count twice
    backlog.apply_findings([silent(1, T + 5000 + MIN, device="a-01")])
    backlog.apply_findings([silent(1, T + 5000 + MIN, device="a-01")])
    (a01,) = [r for r in backlog.inhibited(active=True) if r.device == "a-01"]
    assert (a01.count, a01.ts, a01.last_ts) == (2, T + 5000, T + 5000 + MIN)
    assert len(backlog.tickets()) == 2

    # the gateway is back: its inhibited rows are resolved at the clear's reading time
    backlog.apply_findings([gateway(0, T + 4 * MIN)])
    assert backlog.inhibited(active=True) == []
    done = backlog.inhibited(active=False)
    assert len(done) == 2 and {(r.resolved_ms, r.resolution) for r in done} == {(T + 4 * MIN, "source_cleared")}

    # a device still silent after the gateway is back is a real fault now: ticketed
    backlog.apply_findings([silent(1, T + 5 * MIN, device="tc-01")])
    assert ("tc-01", "fault.silent") in _keys(backlog)


def test_a_device_clearing_on_its_own_resolves_its_row(backlog):
    backlog.apply_findings([gateway(2, T), silent(1, T + 1000)])
    backlog.apply_findings([silent(0, T + 2000)])
    (r,) = backlog.inhibited()
    assert (r.resolved_ms, r.resolution) == (T + 2000, "target_cleared")
    assert len(backlog.tickets()) == 1


def test_a_hazard_is_never_inhibited_by_the_gateway(backlog):
    backlog.apply_findings([gateway(2, T), crane(3, T + 1000, 11.5)])
    assert _keys(backlog) == [("gateway:gw-01", "fault.gateway_offline"), ("tc-01", "crane.overload")]
    assert backlog.inhibited() == []


def test_fault_to_hazard_rule_is_refused_everywhere(db_url):
    bad = InhibitRule(name="gw-hides-everything", source_match={"kind": "fault.gateway_offline"},
                      target_match={"family": "crane"}, equal=["site", "gateway"])
    with pytest.raises(InhibitRuleError, match="never inhibit a hazard"):
        check_rule(bad)
    inh = Inhibitor([bad, *DEFAULT_RULES])
    assert inh.rules == list(DEFAULT_RULES) and inh.refused[0][0] is bad
    # even a rule that slipped past the check cannot hide a hazard (defensive pair check)
    src = finding_labels(gateway(2, T))
    assert Inhibitor.inhibits(bad, src, finding_labels(crane(3, T, 11.5))) is False
    assert Inhibitor.inhibits(bad, src, finding_labels(silent(1, T))) is True

    b = Backlog(db_url, inhibit_rules=[bad])
    try:
        b.apply_findings([gateway(2, T), crane(3, T + 1000, 11.5), silent(1, T + 1000)])
        assert _keys(b) == [("gateway:gw-01", "fault.gateway_offline"), ("tc-01", "crane.overload"),
                            ("tc-01", "fault.silent")]
    finally:
        b.engine.dispose()


def test_rule_checks():
    with pytest.raises(InhibitRuleError, match="unknown label"):
        check_rule(InhibitRule("x", {"kind": "fault.gateway_offline"}, {"kind": "fault.silent"}, ["colour"]))
    with pytest.raises(InhibitRuleError, match="empty target_match"):
        check_rule(InhibitRule("x", {"category": "hazard"}, {}, []))
    # a hazard may inhibit another hazard (e.g. a red wind stop hides yellow load warnings on the same crane)
    check_rule(InhibitRule("wind", {"kind": "crane.wind", "level": "red"}, {"kind": "crane.overload", "level": 1},
                           ["site", "device"]))


def test_labels_and_equal_semantics():
    gw = ticket_labels(type("T", (), dict(site="s", device="gateway:gw-01", family="gateway",
                                          kind="fault.gateway_offline", category="fault", level=2,
                                          metric="online", evidence={}))())
    assert gw["gateway"] == "gw-01" and gw["level"] == "orange"
    no_gw = finding_labels(silent(1, T, gateway=None))
    assert "gateway" not in no_gw
    (rule,) = DEFAULT_RULES
    assert not Inhibitor.inhibits(rule, gw, no_gw), "a device without a gateway label is not behind gw-01"
    other_site = finding_labels(silent(1, T, site="cz-0412"))
    assert not Inhibitor.inhibits(rule, gw | {"site": "cz-0001"}, other_site)


def test_rules_from_the_rules_files_are_accepted(db_url):
    """The rules file's pydantic model (RuleSet.inhibit_rules(site)) is duck-typed into the backlog."""
    from sitewatch.rules import RuleSet

    rs = RuleSet.default()
    b = Backlog(db_url, inhibit_rules=lambda site: rs.inhibit_rules(site=site))
    try:
        b.apply_findings([gateway(2, T), silent(1, T + 1000)])
        assert _keys(b) == [("gateway:gw-01", "fault.gateway_offline")]
        assert len(b.inhibited(active=True)) == 1
    finally:
        b.engine.dispose()
