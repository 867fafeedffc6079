"""The worker puts every batch of readings it receives on the site's tamper-evident record: through the real
pipeline, the readings entries of a site add up to what was published, span its event times, carry a digest, and
the chain (readings, the finding's ticket, its events) verifies; an edited readings entry is found."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text

from backlog.store import Backlog
from blackbox.schema import entries
from blackbox.verify import verify_site
from sitewatch.contracts import now_ms, reading_topic
from sitewatch.db import make_engine
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

SITE = "cz-0777"


def _readings_entries(url: str) -> list[dict]:
    e = make_engine(url)
    try:
        with e.connect() as c:
            rows = c.execute(select(entries.c.seq, entries.c.kind, entries.c.payload)
                             .where(entries.c.site == SITE).order_by(entries.c.seq)).all()
    finally:
        e.dispose()
    return [{**json.loads(p), "seq": s, "entry": k} for s, k, p in rows]


def test_every_reading_received_is_on_the_record_and_the_chain_verifies(pipeline, sensor):
    t0 = now_ms() - 60_000
    values = [4.0, 5.0, 6.0, 4.5, 5.5] * 8 + [11.5] * 3  # 43 readings, the last three an overload
    for i, v in enumerate(values):
        sensor.publish(reading_topic(SITE, "crane", "tc-01", "load"), {"ts": t0 + i * 1000, "value": v, "unit": "t"})

    backlog = Backlog(pipeline.db_url, create=False)
    wait_until(lambda: [t for t in backlog.tickets() if t.site == SITE], 60, "the overload ticket")

    def counted():
        got = [e for e in _readings_entries(pipeline.db_url) if e["entry"] == "readings"]
        return got if sum(e["readings"] for e in got) >= len(values) else None

    got = wait_until(counted, 30, "readings entries adding up to what was published")
    assert sum(e["readings"] for e in got) == len(values), got
    assert min(e["ts_min"] for e in got) == t0 and max(e["ts_max"] for e in got) == t0 + (len(values) - 1) * 1000
    assert all(len(e["digest"]) == 64 for e in got)
    kinds = {e["entry"] for e in _readings_entries(pipeline.db_url)}
    assert {"readings", "finding", "ticket"} <= kinds, kinds

    report = verify_site(pipeline.db_url, SITE)
    assert report.findings == [], [str(f) for f in report.findings]

    e = make_engine(pipeline.db_url)  # someone "corrects" the count of readings received (SQLite: drop the guard)
    with e.begin() as c:
        c.execute(text("DROP TRIGGER IF EXISTS blackbox_entries_no_update"))
        first = got[0]["seq"]
        c.execute(text("UPDATE blackbox_entries SET payload = replace(payload, :was, :now) WHERE site = :s AND seq = :q"),
                  {"was": '"readings":', "now": '"readings":1', "s": SITE, "q": first})
    e.dispose()
    broken = verify_site(pipeline.db_url, SITE).findings
    assert broken and broken[0].seq == first and broken[0].change == "edited", [str(b) for b in broken]
