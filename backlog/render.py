"""Reports as documents: HTML (Jinja2, self-contained, prints well) and CSV (for spreadsheets).

The template lives in this module rather than a data file so an installed wheel needs no package-data entry.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, select_autoescape

from backlog.reports import Report, report_tz

CSV_FIELDS = ["scope", "district", "company", "project", "site", "found", "rectified", "rectification_rate",
              "closed", "overdue", "major", "major_open", "stop_work", "faults", "tickets", "fault_share", "uptime"]
RANK_FIELDS = ["rank", "company", "company_name", "credit_points", "majors", "repeats", "overdue"]

TEMPLATE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>SiteWatch {{ r.kind }} report {{ r.period.label }}</title>
<style>
 body{font-family:system-ui,"Noto Sans CJK SC",sans-serif;margin:2em;color:#222}
 table{border-collapse:collapse;margin:1em 0;font-size:.9em} th,td{border:1px solid #bbb;padding:.3em .6em}
 th{background:#eee} td.n{text-align:right} tr.district td{font-weight:bold;background:#f6f6f6}
 .bad{color:#b00;font-weight:bold} caption{text-align:left;font-weight:bold;padding:.3em 0}
</style></head><body>
<h1>安全隐患{{ "月报" if r.kind == "monthly" else "年报" }} · SiteWatch {{ r.kind }} report {{ r.period.label }}</h1>
<p>Period {{ fmt(r.period.start_ms) }} – {{ fmt(r.period.end_ms) }}; generated {{ fmt(r.generated_ms) }}.</p>
{% set t = r.totals %}
<p>Hazards found <b>{{ t.found }}</b>, rectified <b>{{ t.rectified }}</b>
 (rate {{ pct(t.rectification_rate) }}), overdue <b class="{{ 'bad' if t.overdue }}">{{ t.overdue }}</b>,
 major hazards <b class="{{ 'bad' if t.major }}">{{ t.major }}</b> ({{ t.major_open }} open, {{ t.stop_work }} stop-work),
 sensor-fault share {{ pct(t.fault_share) }}, uptime proxy {{ pct(t.uptime) }}.</p>
{% for scope, title in [("district","By district"),("company","By company"),("project","By project")] %}
<table><caption>{{ title }}</caption>
<tr><th>district</th><th>company</th><th>project</th><th>found</th><th>rectified</th><th>rate</th><th>overdue</th>
<th>major</th><th>major open</th><th>stop-work</th><th>faults</th><th>fault share</th><th>uptime</th></tr>
{% for row in r.scope(scope) %}
<tr><td>{{ row.district }}</td><td>{{ row.company }}</td><td>{{ row.project }}{% if row.site %} ({{ row.site }}){% endif %}</td>
<td class="n">{{ row.found }}</td><td class="n">{{ row.rectified }}</td><td class="n">{{ pct(row.rectification_rate) }}</td>
<td class="n {{ 'bad' if row.overdue }}">{{ row.overdue }}</td><td class="n {{ 'bad' if row.major }}">{{ row.major }}</td>
<td class="n">{{ row.major_open }}</td><td class="n">{{ row.stop_work }}</td><td class="n">{{ row.faults }}</td>
<td class="n">{{ pct(row.fault_share) }}</td><td class="n">{{ pct(row.uptime) }}</td></tr>
{% endfor %}</table>
{% endfor %}
<table><caption>Major hazards (重大事故隐患)</caption>
<tr><th>#</th><th>project</th><th>company</th><th>kind</th><th>title</th><th>status</th><th>stop-work</th><th>挂牌督办</th></tr>
{% for m in r.majors %}<tr><td>{{ m.id }}</td><td>{{ m.project }}</td><td>{{ m.company }}</td><td>{{ m.kind }}</td>
<td>{{ m.title }}</td><td>{{ m.status }}</td><td>{{ "yes" if m.stop_work else "lifted" }}</td>
<td>{{ "yes" if m.listed_supervision else "no" }}</td></tr>{% else %}<tr><td colspan="8">none</td></tr>{% endfor %}
</table>
<table><caption>Company ranking inputs (credit deductions, repeat offences)</caption>
<tr><th>rank</th><th>company</th><th>credit points deducted</th><th>majors</th><th>repeats</th><th>overdue</th></tr>
{% for c in r.ranking %}<tr><td>{{ loop.index }}</td><td>{{ c.company_name }} ({{ c.company }})</td>
<td class="n">{{ c.credit_points }}</td><td class="n">{{ c.majors }}</td><td class="n">{{ c.repeats }}</td>
<td class="n">{{ c.overdue }}</td></tr>{% else %}<tr><td colspan="6">none</td></tr>{% endfor %}
</table>
</body></html>
"""

_env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))


def _fmt(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, report_tz()).strftime("%Y-%m-%d %H:%M")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f}%"


def html(r: Report) -> str:
    return _env.from_string(TEMPLATE).render(r=r, fmt=_fmt, pct=_pct)


def csv_rows(r: Report) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in r.rows:
        w.writerow(row.to_dict())
    return out.getvalue()


def csv_ranking(r: Report) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, RANK_FIELDS, lineterminator="\n")
    w.writeheader()
    for i, c in enumerate(r.ranking, 1):
        w.writerow({"rank": i, "company": c.company, "company_name": c.company_name,
                    "credit_points": c.credit_points, "majors": c.majors, "repeats": c.repeats, "overdue": c.overdue})
    return out.getvalue()


def write(r: Report, out_dir: Path) -> list[Path]:
    """Write ``sitewatch-<kind>-<period>.html``, ``….csv`` and ``…-ranking.csv``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"sitewatch-{r.kind}-{r.period.label}"
    paths = [out_dir / f"{stem}.html", out_dir / f"{stem}.csv", out_dir / f"{stem}-ranking.csv"]
    paths[0].write_text(html(r), encoding="utf-8")
    paths[1].write_text(csv_rows(r), encoding="utf-8")
    paths[2].write_text(csv_ranking(r), encoding="utf-8")
    return paths
