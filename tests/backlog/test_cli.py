"""The commands, through the real ``sitewatch`` entry point (click), on a fresh SQLite data dir."""

from __future__ import annotations

from click.testing import CliRunner

from backlog import migrate, orgs
from backlog.store import Backlog
from app.cli import main
from tests.backlog.conftest import DEMO_ORG, finding


def test_commands_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("SW_DATA_DIR", str(tmp_path / "data"))
    url = f"sqlite:///{(tmp_path / 'data' / 'backlog.db').resolve()}"
    run = CliRunner().invoke

    r = run(main, ["backlog", "migrate"])
    assert r.exit_code == 0 and migrate.head() in r.output, r.output
    r = run(main, ["api", "token", "create", "--user", "nobody"])
    assert r.exit_code != 0 and "no user" in r.output  # no default users, no default tokens
    r = run(main, ["backlog", "import-org", str(DEMO_ORG)])
    assert r.exit_code == 0 and "4 projects" in r.output, r.output
    r = run(main, ["api", "token", "create", "--user", "sun.supervisor", "--label", "test"])
    assert r.exit_code == 0
    token = r.output.strip()
    b = Backlog(url, create=False)
    assert orgs.authenticate(b, token).role == "supervisor"
    with b.engine.connect() as c:  # only the hash is stored
        assert token not in str(c.exec_driver_sql("SELECT * FROM api_tokens").fetchall())

    b.apply_findings([finding(ts=1_000)])  # long ago: overdue now
    r = run(main, ["backlog", "escalate-overdue"])
    assert r.exit_code == 0 and "escalated 1" in r.output
    assert "escalated 0" in run(main, ["backlog", "escalate-overdue"]).output

    r = run(main, ["report", "monthly", "--month", "1970-01", "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "rep" / "sitewatch-monthly-1970-01.html").exists() and "found 1" in r.output
    r = run(main, ["report", "yearly", "--year", "1970", "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0 and (tmp_path / "rep" / "sitewatch-yearly-1970.csv").exists()
    assert run(main, ["report", "monthly", "--month", "1970-13"]).exit_code == 2

    r = run(main, ["api", "token", "revoke", token[:10]])
    assert r.exit_code == 0 and orgs.authenticate(b, token) is None
    r = run(main, ["backlog", "migrate", "--downgrade", "0001_baseline"])
    assert r.exit_code == 0 and "0001_baseline" in r.output
    for cmd in (["report", "--help"], ["api", "serve", "--help"], ["backlog", "--help"], ["backlog", "import-org", "--help"]):
        r = run(main, cmd)
        assert r.exit_code == 0 and len(r.output) > 100
