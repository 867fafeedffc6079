"""Fixtures for the backlog tests: a REAL throwaway PostgreSQL 15 (Debian binaries), SQLite files, a controllable
clock, the demo organisation, and the API served by a real uvicorn on a free port.

The PostgreSQL fixture FAILS (never skips) when the server cannot start: the suite promises both databases.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from backlog import orgs
from backlog.store import Backlog
from sitewatch.findings import Finding, Level
from app.localstack import free_port

PG_BIN = Path(os.environ.get("SW_PG_BIN", "/usr/lib/postgresql/15/bin"))
DEMO_ORG = Path(__file__).resolve().parents[2] / "backlog" / "fixtures" / "demo_org.yaml"
T0 = 1_791_000_000_000  # 2026-10-03 ~ 08:00 Asia/Shanghai: a fixed "now" so deadlines are deterministic
HOUR = 3_600_000


class Clock:
    """The backlog's notion of now, moved by the tests (deadlines, escalation, reports)."""

    def __init__(self, now: int = T0):
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


class PgServer:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="sw-pg-"))
        self.port = free_port()
        self._as_root = os.geteuid() == 0

    def _run(self, *argv: str) -> subprocess.CompletedProcess:
        cmd = list(argv)
        if self._as_root:  # initdb/postgres refuse to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    def start(self) -> "PgServer":
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"PostgreSQL 15 binaries not found in {PG_BIN} (apt-get install postgresql-15)")
        if self._as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        r = self._run(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                      "--no-sync", "--locale=C")
        if r.returncode:
            raise RuntimeError(f"initdb failed:\n{r.stdout}\n{r.stderr}")
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        r = self._run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(self.dir / "pg.log"), "-w",
                      "-t", "30", "start")
        if r.returncode:
            log = (self.dir / "pg.log").read_text() if (self.dir / "pg.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed:\n{r.stdout}\n{r.stderr}\n{log}")
        return self

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True)

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    server = PgServer()
    try:
        server.start()
    except Exception as e:  # noqa: BLE001 - any reason is a failure, reported verbatim
        shutil.rmtree(server.dir, ignore_errors=True)
        pytest.fail(f"could not start the test PostgreSQL server: {e}", pytrace=False)
    yield server
    server.stop()


_db_seq = itertools.count(1)


@pytest.fixture
def pg_url(pg_server: PgServer):
    name = f"sw_test_{os.getpid()}_{next(_db_seq)}"
    with pg_server.admin() as c:
        c.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.url(name)
    with pg_server.admin() as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'backlog.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def backlog(db_url: str, clock: Clock) -> Backlog:
    b = Backlog(db_url, clock=clock)
    yield b
    b.engine.dispose()


@pytest.fixture
def org(backlog: Backlog) -> Backlog:
    """The backlog with the demo organisation imported (sites cz-0001/0002 → jianan, cz-0412 → huasheng…)."""
    orgs.import_org(backlog, DEMO_ORG)
    return backlog


def actor(b: Backlog, name: str):
    return orgs.actor_by_name(b, name)


def finding(site="cz-0001", device="pit-01", kind="pit.cumulative", level=Level.ORANGE, ts=T0, value=26.0,
            family="pit", category="hazard", major=False, metric="wall_top_horizontal_mm", threshold=25.5) -> Finding:
    return Finding(site=site, device=device, family=family, kind=kind, category=category, level=Level(level), ts=ts,
                   metric=metric, value=value, threshold=threshold, rule=f"{metric} >= {threshold}",
                   source="test", major=major)


# ------------------------------------------------------------------------------------------------ the real API
class ApiServer:
    """The FastAPI app under a real uvicorn in a thread, on a free port."""

    def __init__(self, backlog: Backlog, evidence_dir: Path):
        import uvicorn

        from backlog.api import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(backlog, evidence_dir), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> "ApiServer":
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


@pytest.fixture
def api(org: Backlog, tmp_path: Path):
    """(server, clients-by-user-name) for the demo org's people, each with a freshly created token."""
    server = ApiServer(org, tmp_path / "evidence").start()
    clients = {u: server.client(orgs.create_token(org, u)) for u in
               ("wang.officer", "li.officer", "zhao.manager", "chen.manager", "sun.supervisor", "zhou.ops")}
    clients["anonymous"] = server.client(None)
    yield server, clients
    for c in clients.values():
        c.close()
    server.stop()
