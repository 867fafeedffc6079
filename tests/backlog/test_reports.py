"""Month-end figures against a hand-counted October 2026 (demo org, Asia/Shanghai)."""

from __future__ import annotations

import csv
import io

import pytest

from backlog import render, reports
from backlog.errors import Invalid
from backlog.reports import Period
from sitewatch.findings import Level
from tests.backlog.conftest import HOUR, actor, finding

DAY = 24 * HOUR
OCT = Period.month("2026-10")
S = OCT.start_ms


@pytest.fixture
def october(org, clock):
    """The hand-counted month (see the table in each assertion)."""
    b = org
    officer, li, mgr, sup = (actor(b, n) for n in ("wang.officer", "li.officer", "zhao.manager", "sun.supervisor"))

    def at(ms):
        clock.now = ms

    # September: not an October finding
    at(S - 5 * DAY)
    b.apply_findings([finding(site="cz-0412", device="tc-01", family="crane", kind="crane.moment", ts=S - 5 * DAY)])
    # A cz-0001 pit, orange, rectified in time and closed
    b.apply_findings([finding(ts=S + 1 * DAY), finding(level=Level.CLEAR, ts=S + 1 * DAY + HOUR)])
    a = b.tickets(site="cz-0001")[0].id
    at(S + 2 * DAY)
    b.acknowledge(a, officer), b.start_rectification(a, officer), b.rectify(a, officer, "braced")
    at(S + 3 * DAY)
    b.verify(a, mgr)
    # B cz-0001 crane, red, major by rule, never rectified (overdue, stop-work in force)
    b.apply_findings([finding(device="tc-01", family="crane", kind="crane.overload", level=Level.RED, major=True,
                              ts=S + 5 * DAY)])
    # F cz-0001 sensor fault for one day
    b.apply_findings([finding(kind="fault.silent", category="fault", level=Level.YELLOW, ts=S + 10 * DAY),
                      finding(kind="fault.silent", category="fault", level=Level.CLEAR, ts=S + 11 * DAY)])
    # C cz-0002 inspection, yellow (7 d), rectified late on day 30
    at(S + 20 * DAY)
    c = b.create_ticket(officer, site="cz-0002", family="formwork", kind="inspection.ties", level=1, title="ties").id
    at(S + 30 * DAY)
    b.acknowledge(c, officer), b.start_rectification(c, officer), b.rectify(c, officer, "ties fixed")
    # E cz-0412 orange, closed, then the sensor alarms again: E2 (repeat), open and overdue
    b.apply_findings([finding(site="cz-0412", device="el-01", family="electrical", kind="electrical.leakage",
                              ts=S + 15 * DAY),
                      finding(site="cz-0412", device="el-01", family="electrical", kind="electrical.leakage",
                              level=Level.CLEAR, ts=S + 16 * DAY)])
    e = b.tickets(kind="electrical.leakage")[0].id
    at(S + 16 * DAY)
    b.acknowledge(e, li), b.start_rectification(e, li), b.rectify(e, li, "RCD replaced"), b.verify(e, sup)
    b.apply_findings([finding(site="cz-0412", device="el-01", family="electrical", kind="electrical.leakage",
                              ts=S + 25 * DAY)])
    # an unmapped site, and a November finding (outside the month)
    b.apply_findings([finding(site="cz-9999", ts=S + 1 * DAY), finding(site="cz-0003", ts=OCT.end_ms + DAY)])
    at(OCT.end_ms + 5 * DAY)
    return b


def _row(r, scope, **key):
    (row,) = [x for x in r.scope(scope) if all(getattr(x, k) == v for k, v in key.items())]
    return row


def test_monthly_figures_match_hand_count(october):
    r = reports.build(october, OCT)
    p1 = _row(r, "project", site="cz-0001")
    assert (p1.found, p1.rectified, p1.closed, p1.overdue, p1.major, p1.major_open, p1.stop_work, p1.faults,
            p1.tickets) == (2, 1, 1, 1, 1, 1, 1, 1, 3)
    assert p1.fault_share == round(1 / 3, 4)
    assert p1.uptime == round(1 - 1 / (2 * 31), 4)  # 2 registered devices × 31 days, 1 day of fault
    p2 = _row(r, "project", site="cz-0002")
    assert (p2.found, p2.rectified, p2.overdue) == (1, 1, 1)  # rectified, but after its 7-day deadline
    p3 = _row(r, "project", site="cz-0412")
    assert (p3.found, p3.rectified, p3.closed, p3.overdue) == (2, 1, 1, 1)
    assert _row(r, "project", site="cz-0003").found == 0  # its finding is in November
    jianan = _row(r, "company", company="jianan")
    assert (jianan.found, jianan.rectified, jianan.overdue, jianan.rectification_rate) == (3, 2, 2, 0.6667)
    wujin = _row(r, "district", district="wujin")
    assert (wujin.found, wujin.rectified, wujin.overdue, wujin.major) == (5, 3, 3, 1)
    assert _row(r, "district", district="tianning").rectification_rate is None
    assert _row(r, "district", district="(unassigned)").found == 1
    t = r.totals
    assert (t.found, t.rectified, t.overdue, t.major, t.faults, t.tickets) == (6, 3, 4, 1, 1, 7)
    assert [m["kind"] for m in r.majors] == ["crane.overload"] and r.majors[0]["stop_work"] is True
    assert [(x.company, x.credit_points, x.majors, x.repeats, x.overdue) for x in r.ranking] == [
        ("jianan", 10.0, 1, 0, 2), ("huasheng", 0.0, 0, 1, 1), ("(unassigned)", 0.0, 0, 0, 1)]


def test_documents_carry_the_figures(october, tmp_path):
    r = reports.build(october, OCT)
    paths = render.write(r, tmp_path)
    assert [p.name for p in paths] == ["sitewatch-monthly-2026-10.html", "sitewatch-monthly-2026-10.csv",
                                       "sitewatch-monthly-2026-10-ranking.csv"]
    rows = list(csv.DictReader(io.StringIO(paths[1].read_text(encoding="utf-8"))))
    jianan = next(x for x in rows if x["scope"] == "company" and x["company"] == "jianan")
    assert (jianan["found"], jianan["rectified"], jianan["rectification_rate"], jianan["overdue"]) == ("3", "2", "0.6667", "2")
    html = paths[0].read_text(encoding="utf-8")
    assert "2026-10" in html and "crane.overload" in html and "66.7%" in html and "常州建安建设有限公司" in html
    ranking = list(csv.DictReader(io.StringIO(paths[2].read_text(encoding="utf-8"))))
    assert [x["company"] for x in ranking] == ["jianan", "huasheng", "(unassigned)"]


def test_yearly_includes_september(october):
    r = reports.build(october, Period.year(2026), "yearly")
    assert r.totals.found == 7 + 1  # + September's and November's findings
    assert _row(r, "project", site="cz-0412").found == 3


def test_bad_periods_are_invalid():
    for bad in ("2026-13", "2026-1", "oct", ""):
        with pytest.raises(Invalid):
            Period.month(bad)
    with pytest.raises(Invalid):
        Period.year("20x6")
