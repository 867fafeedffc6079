"""Upload the generated dashboards through Grafana's HTTP API (grafana-client, the maintained successor of
grafana-api): ensure the folder exists, then ``POST /api/dashboards/db`` with ``overwrite: true`` per
dashboard, so a push is idempotent and CI can run it on every merge."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

from dashboards.build import GENERATED

FOLDER_UID = "sitewatch"
FOLDER_TITLE = "SiteWatch"


def client(url: str, token: str, timeout: float = 15.0):
    from grafana_client import GrafanaApi
    from grafana_client.client import TokenAuth

    parts = urlsplit(url)
    return GrafanaApi(auth=TokenAuth(token), host=parts.hostname or "localhost", port=parts.port,
                      protocol=parts.scheme or "http", url_path_prefix=parts.path.strip("/"), timeout=timeout)


def ensure_folder(api) -> str:
    from grafana_client.client import GrafanaClientError

    try:
        return api.folder.get_folder(FOLDER_UID)["uid"]
    except GrafanaClientError as e:
        if e.status_code != 404:
            raise
    return api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)["uid"]


def push(url: str, token: str, paths: list[Path] | None = None, message: str = "sitewatch dashboards push") -> list[dict]:
    api = client(url, token)
    folder_uid = ensure_folder(api)
    out = []
    for p in paths or sorted(GENERATED.glob("*.json")):
        dash = json.loads(p.read_text(encoding="utf-8"))
        dash.pop("id", None)  # Grafana matches by uid; a stale numeric id would be rejected
        out.append(api.dashboard.update_dashboard(
            {"dashboard": dash, "folderUid": folder_uid, "overwrite": True, "message": message}))
    return out
