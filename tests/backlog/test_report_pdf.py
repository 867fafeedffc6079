"""The monthly PDF (``sitewatch report monthly --format pdf``) on the hand-counted October of test_reports.py:
it parses, carries that month's numbers, embeds its Chinese font, and renders (page 1 → docs/img/report-page1.png)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from backlog import report_pdf
from app.cli import main
from tests.backlog.test_reports import OCT, october  # noqa: F401 - the seeded month (fixture)

README_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "img" / "report-page1.png"


@pytest.fixture
def db_url(tmp_path) -> str:  # SQLite is enough here: the figures' SQL is reports.py's, tested on both
    return f"sqlite:///{tmp_path / 'backlog.db'}"


def _text(data: bytes) -> tuple[list[str], object]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return [re.sub(r"\s+", " ", p.extract_text()) for p in reader.pages], reader


def test_extra_figures_match_hand_count(october):
    _, r, x = report_pdf.render(october, OCT)
    assert x.by_family == {"pit": 2, "crane": 1, "formwork": 1, "electrical": 2}
    assert x.by_level == {2: 4, 3: 1, 1: 1}
    # A, E on time; C late (day 30 vs its 7-day deadline); B, E2, cz-9999 past the deadline and not rectified
    assert (x.on_time, x.late, x.overdue_open, x.pending) == (2, 1, 3, 0)
    assert x.on_time + x.late + x.overdue_open + x.pending == r.totals.found
    assert x.late + x.overdue_open == r.totals.overdue
    assert [(m["site"], m["previous"]) for m in x.repeats] == [("cz-0412", x.repeats[0]["previous"])]
    assert x.reopened == [] and x.failed == []
    # most overdue at the month end: September's crane (never rectified) first, then cz-9999, then B
    assert [(m["site"], m["kind"]) for m in x.most_overdue[:3]] == [
        ("cz-0412", "crane.moment"), ("cz-9999", "pit.cumulative"), ("cz-0001", "crane.overload")]


def test_pdf_parses_and_carries_the_month(october, tmp_path):
    data, r, x = report_pdf.render(october, OCT)
    pages, reader = _text(data)
    assert len(pages) >= 3
    everything = " ".join(pages)
    assert "安全隐患月报" in pages[0] and "2026-10" in pages[0]
    assert "本月发现隐患 6 项，已整改 3 项（整改率 50.0%），逾期 4 项" in everything
    assert "重大事故隐患 1 项（未销号 1 项，停工 1 项）" in everything
    # the KPI row: found, rectified, rate, overdue, major, stop-work
    assert re.search(r"6 3 50\.0% 4 1 1", pages[0]), pages[0]
    # by family / level row: crane formwork pit electrical battery | red orange yellow
    assert re.search(r"发现 found 1 1 2 2 0 1 4 1", pages[0]), pages[0]
    # rectification on time: 2 / 1 / 3 / 0, adding up to the 6 found
    assert re.search(r"按期整改 on time 2 逾期整改 rectified late 1 逾期未整改 overdue, open 3 未到期 not yet due 0 "
                     r"合计 = 发现 found 6", everything), everything
    # by company: jianan found 3, rectified 2, 66.7 %, overdue 2 (test_reports' hand count)
    assert re.search(r"jianan 3 2 66\.7% 2", everything)
    # the major: crane overload at cz-0001, stop-work in force, listed supervision
    assert re.search(r"crane\.overload \w+ 停工中 in force 是 yes", everything), everything
    assert "销号后再次发现 found again after closure: 1" in everything
    assert "常州建安建设有限公司 (jianan) 10 1 0 2" in everything
    # the Chinese font is embedded (a subset of WenQuanYi), not referenced
    fonts = set()
    for page in reader.pages:
        for f in page["/Resources"]["/Font"].values():
            f = f.get_object()
            desc = f.get("/FontDescriptor")
            if desc is not None:
                fonts.add((str(f["/BaseFont"]), "/FontFile2" in desc.get_object()))
    assert fonts and all(embedded for _, embedded in fonts), fonts
    assert any("WenQuanYi" in name or "WQY" in name.upper() for name, _ in fonts), fonts
    # charts are images on the first two pages
    assert len(reader.pages[0].images) >= 3 and len(reader.pages[1].images) >= 1

    # page 1 renders (pdfium), for the README
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(data)
    image = pdf[0].render(scale=1.4).to_pil()
    assert image.size[0] > 800 and len(set(image.convert("L").getdata())) > 50  # not a blank page
    README_IMAGE.parent.mkdir(parents=True, exist_ok=True)
    image.save(README_IMAGE, optimize=True)
    image.save(tmp_path / "report-page1.png")


def test_cli_writes_the_pdf(october, db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("SW_DB_URL", db_url)
    r = CliRunner().invoke(main, ["report", "monthly", "--month", "2026-10", "--format", "pdf",
                                  "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    path = tmp_path / "rep" / "sitewatch-monthly-2026-10.pdf"
    assert path.read_bytes().startswith(b"%PDF") and "found 6, rectified 3, overdue 4, major 1" in r.output
    assert CliRunner().invoke(main, ["report", "monthly", "--month", "2026-10", "--format", "doc"]).exit_code == 2
