"""The backlog's REST API (FastAPI): ``create_app(backlog, evidence_root)``; served by ``sitewatch api serve``."""

from backlog.api.app import create_app

__all__ = ["create_app"]
