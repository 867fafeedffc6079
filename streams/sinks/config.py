"""The sink's own settings (``SW_INFLUX_*`` / ``SW_SINK_*``), next to the shared ``sitewatch.settings``.

Secrets (``SW_INFLUX_PASSWORD``, ``SW_INFLUX_TOKEN``) come only from the environment or the git-ignored
``.env`` file; they have no defaults and never appear in a command line (process lists are world-readable).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SinkSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SW_", env_file=".env", extra="ignore")

    influx_url: str = Field("http://127.0.0.1:8086", description="http(s):// → InfluxDB 1.x; influxdb2(s):// → 2.x/3.x")
    influx_api: str | None = Field(None, description="force v1 or v2 regardless of the URL scheme")
    influx_db: str = "sitewatch"
    influx_username: str | None = None
    influx_password: str | None = None
    influx_token: str | None = None
    influx_org: str = "sitewatch"
    influx_bucket: str | None = None
    sink_group: str = "sitewatch-sink"
    sink_batch_points: int = 50_000
    sink_linger_s: float = 0.5
    sink_max_poll_interval_ms: int = 3000
    sink_chunk_lines: int = 10_000
    sink_companies: Path | None = Field(None, description="YAML mapping site → company (adds a company tag)")
    raw_retention: str = "30d"
    rollup_1m_retention: str = "400d"


def load_companies(path: Path | None) -> dict[str, str]:
    """``{site: company}`` from a YAML file (``cz-0412: zhongjian-3``), or empty."""
    if path is None:
        return {}
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping site → company")
    return {str(k): str(v) for k, v in data.items()}
