"""Month-end and year-end figures per district, company and project (the plan's monthly report), and the
company ranking inputs (credit deductions, repeat offences) for differentiated supervision.

Definitions (also in docs/backlog.md), for hazards *found* in the period (opened within it):
- rectified: the ledger records a rectification before the period end;
- overdue: the deadline passed before the period end (or now, if earlier) without a rectification in time;
- rectification rate: rectified / found;
- major: found in the period and flagged major; open majors are not closed yet; stop-work counts orders in force;
- fault share: sensor-fault tickets / all tickets opened in the period;
- uptime proxy: 1 − (fault-ticket time overlapping the period) / (devices × period length), per project, where
  a fault lasts from opening until its condition cleared or it was closed.
- repeats: tickets reopened after closure, or opened again for a key whose previous ticket was closed.
Figures reflect the ledger as it is when the report is made (a later reopen changes a past month's figures).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select

from backlog.errors import Invalid
from backlog.models import CreditDeduction, Device, OrgUnit, Project, Ticket
from backlog.store import Backlog

UNASSIGNED = "(unassigned)"


def report_tz() -> ZoneInfo:
    return ZoneInfo(os.environ.get("SW_REPORT_TZ", "Asia/Shanghai"))


@dataclass(frozen=True)
class Period:
    label: str
    start_ms: int
    end_ms: int

    @classmethod
    def month(cls, spec: str) -> "Period":
        m = re.fullmatch(r"(\d{4})-(\d{2})", spec or "")
        if not m or not 1 <= int(m.group(2)) <= 12:
            raise Invalid(f"month must look like 2026-10 (got {spec!r})")
        y, mo = int(m.group(1)), int(m.group(2))
        tz = report_tz()
        start = datetime(y, mo, 1, tzinfo=tz)
        end = datetime(y + (mo == 12), 1 if mo == 12 else mo + 1, 1, tzinfo=tz)
        return cls(spec, int(start.timestamp() * 1000), int(end.timestamp() * 1000))

    @classmethod
    def year(cls, year: int | str) -> "Period":
        if not re.fullmatch(r"\d{4}", str(year)):
            raise Invalid(f"year must look like 2026 (got {year!r})")
        tz = report_tz()
        y = int(year)
        return cls(str(y), int(datetime(y, 1, 1, tzinfo=tz).timestamp() * 1000),
                   int(datetime(y + 1, 1, 1, tzinfo=tz).timestamp() * 1000))


@dataclass
class Row:
    scope: str  # district | company | project
    district: str
    company: str = ""
    project: str = ""
    site: str = ""
    found: int = 0
    rectified: int = 0
    closed: int = 0
    overdue: int = 0
    major: int = 0
    major_open: int = 0
    stop_work: int = 0
    faults: int = 0
    tickets: int = 0
    device_ms: int = 0
    fault_ms: int = 0

    @property
    def rectification_rate(self) -> float | None:
        return round(self.rectified / self.found, 4) if self.found else None

    @property
    def fault_share(self) -> float | None:
        return round(self.faults / self.tickets, 4) if self.tickets else None

    @property
    def uptime(self) -> float | None:
        return round(1 - self.fault_ms / self.device_ms, 4) if self.device_ms else None

    def add(self, other: "Row") -> None:
        for f in ("found", "rectified", "closed", "overdue", "major", "major_open", "stop_work", "faults",
                  "tickets", "device_ms", "fault_ms"):
            setattr(self, f, getattr(self, f) + getattr(other, f))

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(rectification_rate=self.rectification_rate, fault_share=self.fault_share, uptime=self.uptime)
        return d


@dataclass
class RankRow:
    company: str
    company_name: str
    credit_points: float = 0.0
    majors: int = 0
    repeats: int = 0
    overdue: int = 0


@dataclass
class Report:
    kind: str
    period: Period
    generated_ms: int
    rows: list[Row] = field(default_factory=list)
    majors: list[dict] = field(default_factory=list)
    ranking: list[RankRow] = field(default_factory=list)

    def scope(self, scope: str) -> list[Row]:
        return [r for r in self.rows if r.scope == scope]

    @property
    def totals(self) -> Row:
        t = Row("city", "")
        for r in self.scope("district"):
            t.add(r)
        return t

    def to_dict(self) -> dict:
        return {
            "kind": self.kind, "period": self.period.label, "start_ms": self.period.start_ms,
            "end_ms": self.period.end_ms, "generated_ms": self.generated_ms,
            "totals": self.totals.to_dict(), "rows": [r.to_dict() for r in self.rows],
            "majors": self.majors, "ranking": [asdict(r) for r in self.ranking],
        }


def build(b: Backlog, period: Period, kind: str = "monthly") -> Report:
    now = b.clock()
    cutoff = min(period.end_ms, now)
    with b.session() as s:
        units = {u.id: u for u in s.scalars(select(OrgUnit))}
        projects = {p.site: p for p in s.scalars(select(Project))}
        devices: dict[str, int] = {}
        for d in s.scalars(select(Device)):
            devices[d.site] = devices.get(d.site, 0) + 1
        tickets = list(s.scalars(select(Ticket).where(Ticket.opened_ms < period.end_ms)))
        deductions = list(s.scalars(select(CreditDeduction).where(CreditDeduction.at_ms >= period.start_ms,
                                                                  CreditDeduction.at_ms < period.end_ms)))

    def where(site: str) -> tuple[str, str, str]:
        p = projects.get(site)
        if p is None:
            return UNASSIGNED, UNASSIGNED, site
        return units[p.district_id].code, units[p.company_id].code, p.name

    proj: dict[str, Row] = {}
    seen_devices: dict[str, set[str]] = {}

    def row_for(site: str) -> Row:
        if site not in proj:
            d, c, name = where(site)
            proj[site] = Row("project", d, c, name, site)
        return proj[site]

    for site in projects:
        row_for(site)
    majors = []
    repeats: dict[str, int] = {}
    overdue_by_company: dict[str, int] = {}
    for t in tickets:
        seen_devices.setdefault(t.site, set()).add(t.device)
        r = row_for(t.site)
        if t.category == "fault":
            end = t.cleared_ms or t.closed_ms or cutoff
            overlap = min(end, cutoff) - max(t.opened_ms, period.start_ms)
            if overlap > 0:
                r.fault_ms += overlap
        if t.opened_ms < period.start_ms:
            continue
        r.tickets += 1
        if t.category == "fault":
            r.faults += 1
            continue
        r.found += 1
        if t.rectified_ms is not None and t.rectified_ms < period.end_ms:
            r.rectified += 1
        if t.closed_ms is not None and t.closed_ms < period.end_ms:
            r.closed += 1
        if t.deadline_ms is not None and t.deadline_ms < cutoff and (
                t.rectified_ms is None or t.rectified_ms > t.deadline_ms):
            r.overdue += 1
            overdue_by_company[r.company] = overdue_by_company.get(r.company, 0) + 1
        if t.reopened_from is not None or t.reopen_count > 0:
            repeats[r.company] = repeats.get(r.company, 0) + 1
        if t.major:
            r.major += 1
            r.major_open += t.status != "closed"
            r.stop_work += bool(t.stop_work)
            majors.append({"id": t.id, "site": t.site, "project": r.project, "company": r.company,
                           "district": r.district, "kind": t.kind, "title": t.title, "status": t.status,
                           "stop_work": t.stop_work, "listed_supervision": t.listed_supervision,
                           "opened_ms": t.opened_ms})
    span = cutoff - period.start_ms
    for site, r in proj.items():
        n = devices.get(site) or len(seen_devices.get(site, ()))
        r.device_ms = max(span, 0) * n

    companies: dict[tuple[str, str], Row] = {}
    districts: dict[str, Row] = {}
    for r in proj.values():
        companies.setdefault((r.district, r.company), Row("company", r.district, r.company)).add(r)
        districts.setdefault(r.district, Row("district", r.district)).add(r)
    rows = (sorted(districts.values(), key=lambda r: r.district)
            + sorted(companies.values(), key=lambda r: (r.district, r.company))
            + sorted(proj.values(), key=lambda r: (r.district, r.company, r.site)))

    by_code = {u.code: u for u in units.values()}
    rank: dict[str, RankRow] = {}

    def rank_row(code: str) -> RankRow:
        if code not in rank:
            rank[code] = RankRow(code, by_code[code].name if code in by_code else code)
        return rank[code]

    for d in deductions:
        code = units[d.company_id].code if d.company_id in units else UNASSIGNED
        rank_row(code).credit_points += d.points
    for r in proj.values():
        if r.major:
            rank_row(r.company).majors += r.major
    for code, n in repeats.items():
        rank_row(code).repeats += n
    for code, n in overdue_by_company.items():
        rank_row(code).overdue += n
    ranking = sorted(rank.values(), key=lambda x: (-x.credit_points, -x.majors, -x.repeats, -x.overdue, x.company))
    return Report(kind, period, now, rows, sorted(majors, key=lambda m: m["id"]), ranking)
