"""``sitewatch api serve`` is the backlog's API with ``/commands`` on it: the backlog room cannot import the commands
room, so the face (app/cli.py) hands the mount in. Started as a user would, asked for its OpenAPI schema."""

from __future__ import annotations

import httpx
import pytest

from app.localstack import ManagedProcess, free_port, sitewatch_argv
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


def test_api_serve_has_the_backlog_and_the_commands_routes(tmp_path):
    port = free_port()
    proc = ManagedProcess("api", sitewatch_argv("api", "serve", "--port", str(port)), tmp_path / "api.log",
                          {"SW_DATA_DIR": str(tmp_path / "data")}).start()
    try:
        def schema():
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2)
            except httpx.HTTPError:
                assert proc.running, proc.tail(40)
                return None
            return r.json() if r.status_code == 200 else None

        paths = set(wait_until(schema, 60, "the API to answer")["paths"])
    finally:
        proc.stop()
    assert "/tickets" in paths, sorted(paths)
    assert {"/commands", "/commands/{command_id}/approve"} <= paths, sorted(paths)
