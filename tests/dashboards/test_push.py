"""``sitewatch dashboards push`` against a local HTTP server standing in for Grafana's API: it checks the
paths, the bearer token and the payloads grafana-client sends."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from dashboards.build import GENERATED
from app.cli import main

TOKEN = "glsa_test_token_not_a_secret"


class FakeGrafana(BaseHTTPRequestHandler):
    calls: list = []
    folders: set = set()

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> dict | None:
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        self.calls.append((self.command, self.path, self.headers.get("Authorization"), body))
        return body

    def do_GET(self):  # noqa: N802
        self._record()
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._reply(401, {"message": "invalid API key"})
        uid = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/api/folders/") and uid in self.folders:
            return self._reply(200, {"uid": uid, "title": "SiteWatch"})
        return self._reply(404, {"message": "folder not found"})

    def do_POST(self):  # noqa: N802
        body = self._record()
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._reply(401, {"message": "invalid API key"})
        if self.path == "/api/folders":
            self.folders.add(body["uid"])
            return self._reply(200, {"uid": body["uid"], "title": body["title"]})
        if self.path == "/api/dashboards/db":
            uid = body["dashboard"]["uid"]
            return self._reply(200, {"status": "success", "uid": uid, "url": f"/d/{uid}/x", "version": 1})
        return self._reply(404, {"message": "not found"})

    def log_message(self, *args):
        pass


@pytest.fixture
def grafana():
    FakeGrafana.calls = []
    FakeGrafana.folders = set()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeGrafana)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", FakeGrafana.calls
    srv.shutdown()


def test_push_uploads_every_dashboard_with_the_token(grafana):
    url, calls = grafana
    r = CliRunner().invoke(main, ["dashboards", "push", "--url", url, "--no-build"],
                           env={"SW_GRAFANA_TOKEN": TOKEN})
    assert r.exit_code == 0, r.output
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth, _ in calls)
    assert [(m, p) for m, p, _, _ in calls[:2]] == [("GET", "/api/folders/sitewatch"), ("POST", "/api/folders")]
    assert calls[1][3] == {"title": "SiteWatch", "uid": "sitewatch"}
    posts = [b for m, p, _, b in calls if (m, p) == ("POST", "/api/dashboards/db")]
    want = {json.loads(p.read_text())["uid"]: json.loads(p.read_text()) for p in GENERATED.glob("*.json")}
    assert sorted(b["dashboard"]["uid"] for b in posts) == sorted(want)
    for b in posts:
        assert b["overwrite"] is True and b["folderUid"] == "sitewatch"
        assert b["dashboard"]["panels"] == want[b["dashboard"]["uid"]]["panels"]
    assert r.output.count("success") == 3

    # a second push finds the folder and only overwrites the dashboards
    calls.clear()
    r = CliRunner().invoke(main, ["dashboards", "push", "--url", url, "--no-build"],
                           env={"SW_GRAFANA_TOKEN": TOKEN})
    assert r.exit_code == 0, r.output
    assert [(m, p) for m, p, _, _ in calls] == [("GET", "/api/folders/sitewatch")] + [("POST", "/api/dashboards/db")] * 3


def test_push_refuses_without_a_token_and_reports_a_bad_one(grafana):
    url, calls = grafana
    r = CliRunner().invoke(main, ["dashboards", "push", "--url", url], env={"SW_GRAFANA_TOKEN": ""})
    assert r.exit_code != 0 and "SW_GRAFANA_TOKEN" in r.output and calls == []
    r = CliRunner().invoke(main, ["dashboards", "push", "--url", url, "--no-build"],
                           env={"SW_GRAFANA_TOKEN": "wrong"})
    assert r.exit_code != 0
    assert calls and calls[0][2] == "Bearer wrong"
