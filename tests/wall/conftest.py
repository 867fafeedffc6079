"""Fixtures for the wall page: the backlog tests' real API server (uvicorn on a free port) and demo org, on
SQLite (the wall's queries are plain SELECTs that the backlog tests already run on PostgreSQL too), and the
dashboards tests' real InfluxDB filled the way the sink fills it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backlog.conftest import ApiServer, Clock, backlog, clock, org  # noqa: F401 - fixtures
from tests.dashboards.conftest import filled  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'backlog.db'}"


@pytest.fixture
def server(org, tmp_path):
    s = ApiServer(org, tmp_path / "evidence").start()
    yield s
    s.stop()
