"""Runtime settings, from the environment (``SW_*``) with local defaults.

The defaults run the whole pipeline on one machine (``sitewatch demo``); production overrides them from the
environment or a ``.env`` file kept out of the repository — secrets never live in code or config files.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SW_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path(".sitewatch"), description="state of the local stack: logs, broker data, SQLite")

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_username: str | None = None
    mqtt_password: str | None = None

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_partitions: int = 4

    db_url: str | None = Field(None, description="SQLAlchemy URL of the backlog; default SQLite in data_dir")
    rules_path: Path | None = Field(None, description="rules directory (defaults.yaml + sites/*.yaml)")

    webhook_url: str | None = Field(None, description="generic webhook receiving every new ticket / level upgrade")
    webhook_secret: str | None = Field(None, description="HMAC-SHA256 key for the X-SiteWatch-Signature header")

    worker_id: str = "sitewatch-worker"
    batch_size: int = 5000
    batch_within_s: float = 0.2

    @property
    def backlog_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.data_dir / 'backlog.db').resolve()}"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"
