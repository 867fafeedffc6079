"""The month-end report as a PDF with charts (``sitewatch report monthly --format pdf``).

Same figures as the HTML/CSV report (``backlog/reports.py``: hazards *found* in the period, rectified before its
end, overdue against the deadline) plus what a supervisor reads on paper:

- hazards by family, by level and by site (charts and the numbers beside them);
- rectification on time: rectified by the deadline / rectified late / past the deadline and not rectified /
  not yet due — these four add up to the hazards found, and late + not rectified = the report's *overdue*;
- major hazards (重大事故隐患) with their stop-work order and listed supervision (挂牌督办);
- re-check (回头看) results: tickets reopened by a follow-up review in the period, hazards back after their
  ticket was closed (repeats), and rectifications the sensors proved ineffective;
- the most overdue tickets as of the period end (open from before the period too);
- the company ranking inputs (credit deductions, majors, repeats, overdue).

Charts are drawn by matplotlib, the document by reportlab; the Chinese font is a Debian package's TrueType CJK
font (``fonts-wqy-zenhei``, installed by ``make deps``), embedded as a subset so the PDF reads the same on any
machine. ``$SW_REPORT_FONT`` picks another TrueType/TTC file.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from backlog.errors import Invalid
from backlog.models import Ticket, TicketEvent
from backlog.reports import UNASSIGNED, Period, Report, build, report_tz
from backlog.store import Backlog

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",  # Debian fonts-wqy-zenhei
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",  # Debian fonts-wqy-microhei
    "/usr/share/fonts/truetype/arphic/uming.ttc",  # Debian fonts-arphic-uming
)
FONT = "SiteWatchCJK"
FAMILY_ZH = {"crane": "塔吊", "formwork": "高支模", "pit": "深基坑", "electrical": "临时用电", "battery": "电池充电"}
LEVEL_ZH = {1: "黄色 yellow", 2: "橙色 orange", 3: "红色 red"}
LEVEL_COLOUR = {1: "#e6b800", 2: "#ff8c00", 3: "#d62728"}
DAY = 86_400_000


@dataclass
class Extra:
    """The PDF's figures beyond ``reports.Report``, for the same period and definitions."""

    by_family: dict[str, int] = field(default_factory=dict)
    by_level: dict[int, int] = field(default_factory=dict)
    on_time: int = 0
    late: int = 0
    overdue_open: int = 0
    pending: int = 0
    reopened: list[dict] = field(default_factory=list)  # 回头看: reopened by a follow-up review in the period
    repeats: list[dict] = field(default_factory=list)  # found again after the ticket was closed
    failed: list[dict] = field(default_factory=list)  # rectification the sensors showed did not hold
    most_overdue: list[dict] = field(default_factory=list)


def extra(b: Backlog, period: Period, r: Report) -> Extra:
    cutoff = min(period.end_ms, r.generated_ms)
    names = {row.site: row.project for row in r.scope("project")}
    with b.session() as s:
        tickets = list(s.scalars(select(Ticket).where(Ticket.opened_ms < period.end_ms, Ticket.category == "hazard")))
        events = list(s.execute(select(TicketEvent, Ticket).join(Ticket, TicketEvent.ticket_id == Ticket.id).where(
            TicketEvent.at_ms >= period.start_ms, TicketEvent.at_ms < period.end_ms,
            TicketEvent.action.in_(("reopened", "rectification_failed"))).order_by(TicketEvent.id)))
    x = Extra()

    def brief(t: Ticket) -> dict:
        return {"id": t.id, "site": t.site, "project": names.get(t.site, t.site), "device": t.device,
                "kind": t.kind, "level": t.peak_level, "status": t.status, "deadline_ms": t.deadline_ms}

    for t in tickets:
        late_by = None
        if t.deadline_ms is not None and t.deadline_ms < cutoff:
            done = t.rectified_ms if t.rectified_ms is not None and t.rectified_ms < period.end_ms else None
            if done is None:
                late_by = cutoff - t.deadline_ms
            elif done > t.deadline_ms and done >= period.start_ms:
                late_by = done - t.deadline_ms
        if late_by is not None:
            x.most_overdue.append({**brief(t), "overdue_days": round(late_by / DAY, 1),
                                   "rectified": t.rectified_ms is not None and t.rectified_ms < period.end_ms})
        if t.opened_ms < period.start_ms:
            continue
        x.by_family[t.family] = x.by_family.get(t.family, 0) + 1
        lvl = max(1, min(3, t.peak_level))
        x.by_level[lvl] = x.by_level.get(lvl, 0) + 1
        rectified = t.rectified_ms is not None and t.rectified_ms < period.end_ms
        past = t.deadline_ms is not None and t.deadline_ms < cutoff
        if rectified and (t.deadline_ms is None or t.rectified_ms <= t.deadline_ms):
            x.on_time += 1
        elif past and (t.rectified_ms is None or t.rectified_ms > t.deadline_ms):
            if rectified:
                x.late += 1
            else:
                x.overdue_open += 1
        elif rectified:
            x.on_time += 1
        else:
            x.pending += 1
        if t.reopened_from is not None:
            x.repeats.append({**brief(t), "previous": t.reopened_from, "opened_ms": t.opened_ms})
    for e, t in events:
        row = {**brief(t), "at_ms": e.at_ms, "actor": e.actor,
               "reason": (e.detail or {}).get("reason") or (e.detail or {}).get("rule") or ""}
        (x.reopened if e.action == "reopened" else x.failed).append(row)
    x.most_overdue.sort(key=lambda m: (-m["overdue_days"], m["id"]))
    x.most_overdue = x.most_overdue[:10]
    return x


# ------------------------------------------------------------------------------------------------ fonts
def font_path() -> Path:
    env = os.environ.get("SW_REPORT_FONT")
    for p in ([env] if env else []) + list(FONT_CANDIDATES):
        if p and Path(p).is_file():
            return Path(p)
    raise Invalid("no Chinese TrueType font found for the PDF: install Debian's fonts-wqy-zenhei (make deps) "
                  "or point SW_REPORT_FONT at a .ttf/.ttc file")


_registered: dict[str, str] = {}


def _register(path: Path) -> str:
    """Register the CJK font with reportlab and matplotlib; returns matplotlib's family name."""
    if str(path) in _registered:
        return _registered[str(path)]
    from matplotlib import font_manager
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    kwargs = {"subfontIndex": 0} if path.suffix.lower() == ".ttc" else {}
    pdfmetrics.registerFont(TTFont(FONT, str(path), **kwargs))
    font_manager.fontManager.addfont(str(path))
    family = font_manager.FontProperties(fname=str(path)).get_name()
    _registered[str(path)] = family
    return family


# ------------------------------------------------------------------------------------------------ charts
def _chart(draw, width_in: float, height_in: float, family: str) -> io.BytesIO:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    with plt.rc_context({"font.family": family, "axes.unicode_minus": False, "font.size": 9,
                         "axes.spines.top": False, "axes.spines.right": False}):
        fig, ax = plt.subplots(figsize=(width_in, height_in), dpi=200)
        draw(ax)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
    buf.seek(0)
    return buf


def _bars(ax, labels, values, colours, title, horizontal=False):
    if horizontal:
        bars = ax.barh(labels, values, color=colours)
        ax.invert_yaxis()
    else:
        bars = ax.bar(labels, values, color=colours)
    ax.bar_label(bars, padding=2)
    ax.margins(**({"x": 0.12} if horizontal else {"y": 0.15}))
    ax.set_title(title, pad=8)
    (ax.xaxis if horizontal else ax.yaxis).get_major_locator().set_params(integer=True)
    if not any(values):
        ax.text(0.5, 0.5, "无 / none", transform=ax.transAxes, ha="center", va="center", color="#888")


# ------------------------------------------------------------------------------------------------ document
def _fmt(ms: int | None) -> str:
    return "–" if ms is None else datetime.fromtimestamp(ms / 1000, report_tz()).strftime("%Y-%m-%d")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f}%"


def render(b: Backlog, period: Period, kind: str = "monthly") -> tuple[bytes, Report, Extra]:
    """The report as PDF bytes (and the figures it carries)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Image, KeepTogether, PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    family = _register(font_path())
    r = build(b, period, kind)
    x = extra(b, period, r)
    t = r.totals

    h1 = ParagraphStyle("h1", fontName=FONT, fontSize=18, leading=24, spaceAfter=6)
    h2 = ParagraphStyle("h2", fontName=FONT, fontSize=13, leading=18, spaceBefore=10, spaceAfter=4,
                        textColor=colors.HexColor("#1f4e79"))
    body = ParagraphStyle("body", fontName=FONT, fontSize=9.5, leading=14)
    small = ParagraphStyle("small", fontName=FONT, fontSize=8, leading=11, textColor=colors.HexColor("#555555"))
    cell = ParagraphStyle("cell", fontName=FONT, fontSize=8, leading=10)

    def table(rows, widths, header=True, zebra=True):
        data = [[c if hasattr(c, "wrap") else Paragraph(str(c), cell) for c in row] for row in rows]
        tb = Table(data, colWidths=[w * mm for w in widths], repeatRows=1 if header else 0)
        style = [("FONTNAME", (0, 0), (-1, -1), FONT), ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#bbbbbb")),
                 ("VALIGN", (0, 0), (-1, -1), "MIDDLE"), ("TOPPADDING", (0, 0), (-1, -1), 2),
                 ("BOTTOMPADDING", (0, 0), (-1, -1), 2)]
        if header:
            style.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde7f2")))
        if zebra:
            style += [("BACKGROUND", (0, i), (-1, i), colors.HexColor("#f6f8fb")) for i in range(2, len(rows), 2)]
        tb.setStyle(TableStyle(style))
        return tb

    def img(buf, w_mm, h_mm):
        return Image(buf, width=w_mm * mm, height=h_mm * mm)

    title = "安全隐患月报" if kind == "monthly" else "安全隐患年报"
    story = [Paragraph(f"{title} · SiteWatch {kind} report {period.label}", h1),
             Paragraph(f"统计期 Period {_fmt(period.start_ms)} – {_fmt(period.end_ms - 1)} · "
                       f"生成 generated {datetime.fromtimestamp(r.generated_ms / 1000, report_tz()):%Y-%m-%d %H:%M}",
                       small), Spacer(1, 4 * mm)]
    kpis = [["发现隐患 found", "已整改 rectified", "整改率 rate", "逾期 overdue", "重大隐患 major", "停工 stop-work",
             "故障工单占比 fault share"],
            [t.found, t.rectified, _pct(t.rectification_rate), t.overdue, t.major, t.stop_work, _pct(t.fault_share)]]
    story += [table(kpis, [26] * 7, zebra=False), Spacer(1, 3 * mm)]
    story.append(Paragraph(
        f"本月发现隐患 {t.found} 项，已整改 {t.rectified} 项（整改率 {_pct(t.rectification_rate)}），逾期 {t.overdue} 项；"
        f"重大事故隐患 {t.major} 项（未销号 {t.major_open} 项，停工 {t.stop_work} 项）。"
        f" Found {t.found}, rectified {t.rectified}, overdue {t.overdue}, major {t.major}.", body))

    fams = list(FAMILY_ZH)
    fam_chart = _chart(lambda ax: _bars(ax, [FAMILY_ZH[f] for f in fams], [x.by_family.get(f, 0) for f in fams],
                                        "#4a90d9", "按类别 by family"), 3.6, 2.4, family)
    lvl_chart = _chart(lambda ax: _bars(ax, [LEVEL_ZH[k] for k in (3, 2, 1)], [x.by_level.get(k, 0) for k in (3, 2, 1)],
                                        [LEVEL_COLOUR[k] for k in (3, 2, 1)], "按等级 by level"), 3.6, 2.4, family)
    story += [Paragraph("隐患分布 Hazards found", h2),
              Table([[img(fam_chart, 88, 58), img(lvl_chart, 88, 58)]], colWidths=[90 * mm, 90 * mm])]
    fam_rows = [["类别 family", *[FAMILY_ZH[f] for f in fams], "红 red", "橙 orange", "黄 yellow"],
                ["发现 found", *[x.by_family.get(f, 0) for f in fams], x.by_level.get(3, 0), x.by_level.get(2, 0),
                 x.by_level.get(1, 0)]]
    story += [table(fam_rows, [22] + [19] * 8, zebra=False), Spacer(1, 4 * mm)]

    projects = [p for p in r.scope("project") if p.found or p.tickets]
    site_labels = [f"{p.project}" if p.site != p.project else p.site for p in projects]
    site_chart = _chart(lambda ax: (_bars(ax, site_labels, [p.found for p in projects], "#4a90d9",
                                          "按工地 by site（发现 found / 已整改 rectified）", horizontal=True),
                                    ax.barh(site_labels, [p.rectified for p in projects], height=0.35,
                                            color="#2ca02c", label="已整改 rectified")),
                        7.2, max(1.6, 0.45 * len(projects) + 0.8), family)
    story += [img(site_chart, 178, max(40, 11 * len(projects) + 20))]

    done_labels = ["按期整改\non time", "逾期整改\nrectified late", "逾期未整改\noverdue, open", "未到期\nnot yet due"]
    done_vals = [x.on_time, x.late, x.overdue_open, x.pending]
    done_chart = _chart(lambda ax: _bars(ax, done_labels, done_vals, ["#2ca02c", "#ff8c00", "#d62728", "#9e9e9e"],
                                         "整改时效 rectification on time"), 4.2, 2.5, family)
    story += [PageBreak(), Paragraph("整改时效 Rectification on time", h2),
              Table([[img(done_chart, 100, 60), table([["", "项 count"], ["按期整改 on time", x.on_time],
                                                        ["逾期整改 rectified late", x.late],
                                                        ["逾期未整改 overdue, open", x.overdue_open],
                                                        ["未到期 not yet due", x.pending],
                                                        ["合计 = 发现 found", t.found]], [44, 18])]],
                    colWidths=[104 * mm, 70 * mm]),
              Paragraph("逾期 overdue = 逾期整改 + 逾期未整改 (deadline passed before the period end without a "
                        "rectification in time).", small)]
    rows = [["区/企业/项目 scope", "发现 found", "已整改 rect.", "整改率 rate", "逾期 overdue", "重大 major",
             "停工 stop-work"]]
    for row in r.scope("district") + r.scope("company") + r.scope("project"):
        name = {"district": row.district, "company": f"  {row.company}",
                "project": f"    {row.project} ({row.site})"}[row.scope]
        if row.scope == "project" and not (row.found or row.tickets):
            continue
        rows.append([name, row.found, row.rectified, _pct(row.rectification_rate), row.overdue, row.major,
                     row.stop_work])
    story += [Paragraph("分区 / 企业 / 项目 By district, company and project", h2),
              table(rows, [70, 18, 18, 20, 18, 16, 18])]

    story += [PageBreak(), Paragraph("重大事故隐患 Major hazards — stop-work and listed supervision (挂牌督办)", h2)]
    mrows = [["#", "项目 project", "企业 company", "类型 kind", "状态 status", "停工 stop-work", "挂牌督办 listed",
              "发现 found"]]
    for m in r.majors:
        mrows.append([m["id"], m["project"], m["company"], m["kind"], m["status"],
                      "停工中 in force" if m["stop_work"] else "已解除 lifted",
                      "是 yes" if m["listed_supervision"] else "否 no", _fmt(m["opened_ms"])])
    story.append(table(mrows if r.majors else mrows + [["无 none", "", "", "", "", "", "", ""]],
                       [10, 34, 20, 28, 20, 22, 20, 22]))

    story.append(Paragraph("回头看 Re-check results", h2))
    story.append(Paragraph(f"复查重开 reopened by a follow-up review: {len(x.reopened)} · "
                           f"销号后再次发现 found again after closure: {len(x.repeats)} · "
                           f"整改未生效（传感器复现）rectification failed (sensor): {len(x.failed)}", body))
    rrows = [["#", "项目 project", "设备 device", "类型 kind", "结果 result", "日期 date", "说明 detail"]]
    for it in x.reopened:
        rrows.append([it["id"], it["project"], it["device"], it["kind"], "复查重开 reopened", _fmt(it["at_ms"]),
                      it["reason"]])
    for it in x.repeats:
        rrows.append([it["id"], it["project"], it["device"], it["kind"], "再次发现 repeat", _fmt(it["opened_ms"]),
                      f"前工单 previous #{it['previous']}"])
    for it in x.failed:
        rrows.append([it["id"], it["project"], it["device"], it["kind"], "整改未生效 failed", _fmt(it["at_ms"]),
                      it["reason"]])
    if len(rrows) > 1:
        story.append(table(rrows, [10, 34, 18, 28, 26, 20, 40]))

    story.append(Paragraph("逾期最久 Most overdue (as of the period end)", h2))
    orows = [["#", "项目 project", "设备 device", "类型 kind", "等级 level", "期限 deadline", "逾期天数 days", "状态 status"]]
    for it in x.most_overdue:
        orows.append([it["id"], it["project"], it["device"], it["kind"], LEVEL_ZH.get(it["level"], it["level"]),
                      _fmt(it["deadline_ms"]), f"{it['overdue_days']:.1f}",
                      "逾期整改 rectified late" if it["rectified"] else it["status"]])
    story.append(table(orows if x.most_overdue else orows + [["无 none"] + [""] * 7], [10, 34, 16, 28, 20, 22, 20, 26]))

    krows = [["名次 rank", "企业 company", "信用扣分 credit points", "重大 majors", "重复 repeats", "逾期 overdue"]]
    for i, c in enumerate(r.ranking, 1):
        krows.append([i, f"{c.company_name} ({c.company})" if c.company != UNASSIGNED else c.company,
                      f"{c.credit_points:g}", c.majors, c.repeats, c.overdue])
    story += [Paragraph("企业排名依据 Company ranking inputs", h2),
              KeepTogether(table(krows if r.ranking else krows + [["无 none", "", "", "", "", ""]],
                                 [16, 70, 28, 20, 20, 20]))]

    def footer(canvas, doc):
        canvas.saveState()
        canvas.setFont(FONT, 7.5)
        canvas.setFillColor(colors.HexColor("#777777"))
        canvas.drawString(15 * mm, 10 * mm, f"SiteWatch {kind} report {period.label}")
        canvas.drawRightString(A4[0] - 15 * mm, 10 * mm, f"第 {doc.page} 页 page {doc.page}")
        canvas.restoreState()

    out = io.BytesIO()
    doc = SimpleDocTemplate(out, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=14 * mm,
                            bottomMargin=16 * mm, title=f"SiteWatch {kind} report {period.label}",
                            author="SiteWatch", subject=title)
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return out.getvalue(), r, x


def write(b: Backlog, period: Period, out_dir: Path, kind: str = "monthly") -> tuple[Path, Report]:
    """Write ``sitewatch-<kind>-<period>.pdf`` into ``out_dir``."""
    data, r, _ = render(b, period, kind)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"sitewatch-{kind}-{period.label}.pdf"
    path.write_bytes(data)
    return path, r
