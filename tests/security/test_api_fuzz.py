"""The backlog API under schemathesis, once per role's token (and an invalid one), on SQLite and PostgreSQL.

Two properties over every generated request: no 5xx, and every ticket (or ticket-owned row: events,
attachments, device health, inhibited findings, the wall's overview) in an answer belongs to a site the token may
see. The allowed sites are computed from the demo org file itself (officer: their sites; manager: their company's
projects; supervisor/ops: everything), not from ``backlog.orgs``, so a scoping bug there cannot hide itself.

Ticket ids are small (1..n) so generated ids hit real tickets of every site, and a deterministic sweep then drives
each lifecycle operation on each seeded ticket with each token: the property must hold after state changes too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from starlette.testclient import TestClient

from backlog import orgs
from backlog.api import create_app
from backlog.api.ratelimit import RateLimitSettings
from backlog.store import Backlog
from sitewatch.findings import Level
from tests.backlog.conftest import DEMO_ORG, Clock, finding, pg_server, pg_url  # noqa: F401 - fixtures

# schemathesis' deprecation notices about the httpx-based TestClient and per-request cookies, once per example
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

EXAMPLES = 12  # per operation and token; ~30 operations x 5 tokens x 2 databases
INVALID = "sw_invalid-token-for-the-fuzzer"
ROLES = {"site_officer": "wang.officer", "company_manager": "zhao.manager", "supervisor": "sun.supervisor",
         "ops": "zhou.ops", "invalid": None}
# the event stream never ends on its own (it pushes until STREAM_MAX_S); it has its own tests in tests/wall
NOT_FUZZED = ["/wall/api/stream"]
RAISE = False  # True while hunting a server error: the traceback instead of a 500


def allowed_sites(user: str | None) -> set[str] | None:
    """From the org file: None means every site; an invalid token may see none."""
    doc = yaml.safe_load(DEMO_ORG.read_text(encoding="utf-8"))
    if user is None:
        return set()
    u = next(x for x in doc["users"] if x["name"] == user)
    if u["role"] == "site_officer":
        return set(u["sites"])
    if u["role"] == "company_manager":
        return {p["site"] for d in doc["districts"] for c in d["companies"] if c["code"] == u["company"]
                for p in c.get("projects", [])}
    return None


def seed(b: Backlog) -> None:
    """Tickets on four sites of three companies, a sensor fault and an inspection hazard."""
    b.apply_findings([
        finding(),  # cz-0001 pit (jianan)
        finding(site="cz-0412", device="tc-01", family="crane", kind="crane.overload", level=Level.RED,
                metric="load", threshold=10.0, value=11.0),  # huasheng
        finding(site="cz-0003", device="pit-01"),  # tianyuan
        finding(site="cz-0002", device="fw-01", family="formwork", kind="formwork.settlement", level=Level.YELLOW,
                metric="settlement_mm", threshold=10.0, value=12.0),
        finding(kind="fault.silent", category="fault", level=Level.YELLOW, device="pit-02"),
        finding(site="cz-0412", kind="fault.silent", category="fault", level=Level.YELLOW, device="el-01",
                family="electrical"),
    ])


def _sites_in(data: Any, ticket_sites: dict[int, str]) -> Iterator[str]:
    if isinstance(data, dict):
        if isinstance(data.get("site"), str):
            yield data["site"]
        if isinstance(data.get("ticket_id"), int) and data["ticket_id"] in ticket_sites:
            yield ticket_sites[data["ticket_id"]]
        for v in data.values():
            yield from _sites_in(v, ticket_sites)
    elif isinstance(data, list):
        for v in data:
            yield from _sites_in(v, ticket_sites)


def in_token_sites(allowed: set[str] | None, ticket_sites: dict[int, str]):
    def tickets_in_token_sites(ctx, response, case) -> None:
        if response.status_code >= 300 or allowed is None:
            return None
        try:
            data = response.json()
        except Exception:  # noqa: BLE001 - HTML/CSV answers carry no ticket rows for a scoped token
            return None
        outside = sorted({s for s in _sites_in(data, ticket_sites) if s not in allowed})
        if outside:
            raise AssertionError(f"{case.method} {case.formatted_path}: answer shows sites {outside}, "
                                 f"the token may see only {sorted(allowed)}")
        return None

    return tickets_in_token_sites


def send(client, case, headers: dict[str, str]):
    """Send a generated case in-process through Starlette's TestClient (httpx). Schemathesis' own transport is
    requests on urllib3, which the urllib3-future package that niquests (grafana-client) installs replaces with an
    incompatible pool manager; the case's serialised request is the same either way."""
    kw = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
    data = kw.pop("data", None)
    if isinstance(data, dict):
        kw["data"] = data
    elif data is not None:
        kw["content"] = data
    kw = {k: v for k, v in kw.items() if k in ("method", "url", "params", "headers", "cookies", "json", "content",
                                               "data", "files")}
    return client.request(**kw)


def _env(db_url: str, tmp_path: Path):
    b = Backlog(db_url, clock=Clock())
    orgs.import_org(b, DEMO_ORG)
    seed(b)
    app = create_app(b, tmp_path / "evidence", rate_limits=RateLimitSettings(enabled=False))
    tokens = {role: (orgs.create_token(b, user) if user else INVALID) for role, user in ROLES.items()}
    return b, app, tokens


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fuzz.db'}"
    return request.getfixturevalue("pg_url")


@pytest.mark.parametrize("role", list(ROLES))
def test_fuzz_every_operation(db, role, tmp_path, monkeypatch):
    monkeypatch.setenv("SW_INFLUX_URL", "http://127.0.0.1:9")  # the wall drill-down's InfluxDB: refused at once
    b, app, tokens = _env(db, tmp_path)
    try:
        allowed = allowed_sites(ROLES[role])
        if role != "invalid":
            me = orgs.authenticate(b, tokens[role])
            assert me.sites == (frozenset(allowed) if allowed is not None else None)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path=NOT_FUZZED)
        headers = {"Authorization": f"Bearer {tokens[role]}"}
        client = TestClient(app, raise_server_exceptions=RAISE)
        failures: list[str] = []
        ops = [r.ok() for r in schema.get_all_operations()]
        assert len(ops) >= 25, [op.label for op in ops]
        for op in ops:
            ticket_sites = {t.id: t.site for t in b.tickets()}
            check = in_token_sites(allowed, ticket_sites)

            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy())
            def run(case):
                case.validate_response(send(client, case, headers), checks=[not_a_server_error, check])

            try:
                run()
            except Exception as e:  # noqa: BLE001 - collect every operation's failure, then report them all
                failures.append(f"{op.label}: {e}")
        assert not failures, "\n\n".join(failures)
    finally:
        b.engine.dispose()


LIFECYCLE = [("acknowledge", {}), ("start-rectification", {}), ("rectify", {"note": "fixed"}),
             ("verify", {"accept": False, "note": "not yet"}), ("rectify", {"note": "fixed again"}),
             ("verify", {"accept": True}), ("reopen", {"reason": "back again"}),
             ("major", {"reason": "wall cracking", "credit_points": 1}), ("lift-stop-work", {"note": "ok"})]


@pytest.mark.parametrize("role", list(ROLES))
def test_state_changes_stay_in_token_sites(role, tmp_path):
    """Every lifecycle step on every seeded ticket: a 2xx answer is a ticket of the token's sites, other sites'
    tickets answer 404 (not 403: their existence is not revealed), and nothing answers 5xx."""
    b, app, tokens = _env(f"sqlite:///{tmp_path / 'sweep.db'}", tmp_path)
    allowed = allowed_sites(ROLES[role])
    client = TestClient(app, headers={"Authorization": f"Bearer {tokens[role]}"})
    seen_ok = 0
    for t in b.tickets():
        for step, body in LIFECYCLE:
            r = client.post(f"/tickets/{t.id}/{step}", json=body)
            assert r.status_code < 500, (step, t.id, r.text)
            if role == "invalid":
                assert r.status_code == 401
            elif allowed is not None and t.site not in allowed:
                assert r.status_code == 404, (step, t.site, r.status_code)
            if r.status_code == 200:
                seen_ok += 1
                assert allowed is None or r.json()["site"] in allowed
        r = client.get("/tickets", params={"page_size": 500})
        if role != "invalid":
            assert all(allowed is None or x["site"] in allowed for x in r.json()["items"])
    assert (seen_ok > 0) == (role not in ("invalid",)), seen_ok
    b.engine.dispose()


# ------------------------------------------------------------------------------------------------ pinned fixes
# Each server error the fuzzer found, as a plain request: the 500 must stay a 4xx.
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def test_found_by_the_fuzzer_stay_client_errors(db, tmp_path):
    from backlog.api.schemas import MAX_ID

    b, app, tokens = _env(db, tmp_path)
    sup = TestClient(app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {tokens['supervisor']}"})
    wang = TestClient(app, raise_server_exceptions=False,
                      headers={"Authorization": f"Bearer {tokens['site_officer']}"})
    anon = TestClient(app, raise_server_exceptions=False)
    try:
        # ids past the 32-bit INTEGER columns: OverflowError (SQLite) / DataError (PostgreSQL) before
        for path in (f"/tickets/{MAX_ID + 1}", f"/tickets/{2**63}/events", f"/tickets/{2**64}/attachments",
                     f"/tickets/1/attachments/{2**63}"):
            assert sup.get(path).status_code == 422, path
        assert sup.get(f"/tickets/{MAX_ID}").status_code == 404  # the largest id is still a (missing) ticket
        assert wang.post("/tickets/1/rectify", json={"note": "x", "attachment_ids": [2**63]}).status_code == 422
        # NUL in text that reaches PostgreSQL: DataError before
        assert sup.get("/devices/health", params={"site": "\x00"}).status_code == 422
        assert sup.get("/tickets", params={"family": "a\x00"}).status_code == 422
        assert sup.get("/audit", params={"entity": "\x00"}).status_code == 422
        assert wang.post("/tickets", json={"site": "cz-0001", "family": "pit", "kind": "k\x00", "level": 1,
                                           "title": "t"}).status_code == 422
        assert wang.post("/tickets/1/acknowledge", json={"note": "\x00"}).status_code == 422
        assert wang.post("/tickets/1/attachments", params={"filename": "a\x00.png"}, content=PNG,
                         headers={"content-type": "image/png"}).status_code == 422
        # month 0000-01: datetime(0, …) raised; other scripts' digits matched \d and int() read them
        for month in ("0000-01", "2026-13", "２０２６-１０"):
            assert sup.get("/reports/monthly", params={"month": month}).status_code == 422, month
        assert sup.get("/reports/monthly", params={"month": "2026-10"}).status_code == 200
        # the wall's login with a body that is not {"token": "..."}: AttributeError / JSONDecodeError before
        for body in (b"[1, 2]", b'"tok"', b"{", b'{"token": {"a": 1}}'):
            r = anon.post("/wall/session", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 401, (body, r.status_code)
        assert anon.post("/wall/session", json={"token": tokens["supervisor"]}).status_code == 200
        # a NUL in a static file name: ValueError from Path.resolve() before
        assert anon.get("/wall/static/%00").status_code == 404
    finally:
        b.engine.dispose()
