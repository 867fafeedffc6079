"""Weeks of streams shaped like real sites, run like the worker runs them (arrival order, into the real backlog):
no false fault ticket, every genuine silence found within its bound, every hazard inside a buffered outage
ticketed exactly once, back-dated, with its peak. Ground truth comes from the generator's manifest."""

from __future__ import annotations

import pytest

from backlog.store import Backlog
from detectors import RuleSet
from detectors.plan import build_plan
from ingest.fieldstreams import generate
from tests.field_run import run_like_the_worker

SITE = """
site: fd-0001
calendar:
  timezone: Asia/Shanghai
  working_hours: ["07:00-19:00"]
  rest_days: [sun]
"""
START = 1_793_314_800_000  # Fri 2026-10-30 07:00 Asia/Shanghai
WINDOW = 60_000  # arrival window per engine batch; the deadman clock ticks at each window end


def run(name: str, tmp_path, **params):
    fs = generate(name, start_ms=START, seed=3, **params)
    backlog = Backlog(f"sqlite:///{tmp_path / (name + '.db')}")
    rules = RuleSet.from_yaml_text(SITE, "site.yaml")
    out = run_like_the_worker(fs.events, rules, backlog, window_ms=WINDOW, until_ms=fs.manifest.end_ms)
    return fs.manifest, backlog, out, rules


def fault_tickets(backlog):
    return [t for t in backlog.tickets() if t.category == "fault"]


def test_pit_points_at_changing_cadences_over_a_month_raise_no_fault_and_a_dead_point_is_found(tmp_path):
    m, backlog, out, rules = run("pit-cadence", tmp_path, die_at_s=20 * 86400.0)
    assert m.cadence_changes, "the stream must really change cadence"
    (dead,) = m.silences
    faults = fault_tickets(backlog)
    assert [(t.device, t.kind) for t in faults] == [(dead.device, "fault.silent")]  # and nothing else
    plan = build_plan(rules, dead.site, dead.device, "pit")
    bound = plan.silent_ceiling_ms + WINDOW  # whatever it learned, the ceiling bounds it
    assert dead.start_ms < faults[0].opened_ms <= dead.start_ms + bound


def test_a_crane_switched_off_every_night_for_a_week_raises_no_fault(tmp_path):
    m, backlog, out, _ = run("crane-nightly", tmp_path, interval_s=10.0)
    assert len(m.off_windows) >= 6 and any(not w.announced for w in m.off_windows)
    assert fault_tickets(backlog) == []
    states = [f.evidence["state"] for f in out.findings if f.category == "health"]
    assert states.count("off") >= 6  # off, every night, and visible as such


def test_gateway_outage_and_buffered_flush_on_one_site(tmp_path):
    m, backlog, out, rules = run("field-mix", tmp_path, crane_interval_s=10.0)
    tickets = backlog.tickets()
    # one fault per gateway outage, none for the devices behind it, no other fault at all
    assert sorted(t.device for t in tickets if t.category == "fault") == sorted(
        f"gateway:{o.gateway}" for o in m.outages)
    with backlog.session() as s:
        from backlog.models import InhibitedFinding
        inhibited = s.query(InhibitedFinding).all()
    behind = {d.split("/", 1)[1] for o in m.outages for d in m.topology[f"{o.site}/{o.gateway}"]}
    assert inhibited and {i.device for i in inhibited} <= behind  # recorded and visible, never ticketed
    assert all(i.resolved_ms for i in inhibited)  # the gateways came back
    # every hazard inside the buffered window: exactly one ticket, back-dated, with its peak
    buffered = [h for h in m.hazards if h.buffered]
    assert {h.kind for h in buffered} == {"crane.overload", "pit.rate"}
    for h in buffered:
        (t,) = [t for t in tickets if (t.device, t.kind) == (h.device, h.kind)]
        assert t.first_breach_ms == h.start_ms, h.kind
        if h.kind == "crane.overload":  # entirely inside the outage: a late ticket, red and major
            assert t.late and t.opened_ms == h.start_ms and t.peak_level == 3 and t.major
            assert t.peak_value == pytest.approx(h.peak_value, abs=1e-3) and t.peak_ts_ms == h.peak_ts
            assert t.outage_from_ms is not None and t.outage_from_ms < h.start_ms < t.outage_to_ms
        with backlog.session() as s:
            from backlog.models import AlertOutbox
            alerts = s.query(AlertOutbox).filter(AlertOutbox.dedup_key == t.dedup_key).all()
        assert len(alerts) == 1, (h.kind, [a.alert_id for a in alerts])
    assert not [r for r in out.rejected if r.reason == "too_late"]
