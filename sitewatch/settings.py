"""Runtime settings, from the environment (``SW_*``) with local defaults.

The defaults run the whole pipeline on one machine (``sitewatch demo``); production overrides them from the
environment or a ``.env`` file kept out of the repository — secrets never live in code or config files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
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
    # Production Kafka listeners require TLS and/or SASL; the local stack is plaintext on loopback.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_username: str | None = None
    kafka_password: str | None = Field(None, repr=False)
    kafka_cafile: Path | None = Field(None, description="CA bundle that signed the Kafka brokers' certificates")

    db_url: str | None = Field(None, description="SQLAlchemy URL of the backlog; default SQLite in data_dir")
    rules_path: Path | None = Field(None, description="rules directory (defaults.yaml + sites/*.yaml)")

    webhook_url: str | None = Field(None, description="generic webhook receiving every new ticket / level upgrade")
    webhook_secret: str | None = Field(None, description="HMAC-SHA256 key for the X-SiteWatch-Signature header")

    bridge_id: str | None = Field(None, description="MQTT client id (= persistent session) of this bridge instance; "
                                  "default: the first free sitewatch-bridge-<host>-<n>")
    bridge_group: str = Field("sitewatch-bridges", description="MQTT v5 share group the bridges split the load in "
                              "($share/<group>/sw/#); empty: a plain sw/# subscription")
    bridge_session_expiry_s: int = Field(7 * 24 * 3600, description="how long the broker keeps a bridge's session "
                                         "(and queues its share) while it is down")
    bridge_delivery_timeout_s: float = Field(120.0, ge=1, description="how long the bridge's Kafka producer tries "
                                             "one write before giving it up; its MQTT messages stay unacknowledged "
                                             "and the broker sends them again")

    # The tamper-evident record (blackbox/, docs/evidence.md). Keys are files outside the repository.
    blackbox_key_dir: Path | None = Field(None, description="Ed25519 keys per site: <site>.pem, <site>.pub.pem")
    blackbox_checkpoint_s: float = Field(300.0, description="sign each site's head at most this often")
    blackbox_export_dir: Path | None = Field(None, description="folder of exported checkpoints a third party holds")
    blackbox_export_url: str | None = Field(None, description="webhook of the third party receiving checkpoints")
    blackbox_readings_every_s: float = Field(1.0, description="one readings entry per site per window (0: per batch)")
    blackbox_record: bool = Field(True, description="keep the worker's record (off: only a benchmark's baseline)")

    state_snapshots: Literal["auto", "on", "off"] = Field(
        "auto", description="detector state also snapshotted to the backlog database and read back when the state "
        "table has none (streams/state_snapshots.py); auto: on with a SQLite backlog or Kafka on loopback")

    deadman_settle_s: float = Field(30.0, ge=0, description="silence checks wait this long after the worker starts "
                                    "and after Kafka answers again, so buffered readings are in first")
    worker_id: str = "sitewatch-worker"
    batch_size: int = 5000
    # A take() window is paid once per stage an alarm crosses (validate, detect); under load a batch grows by
    # what arrives while the previous one is processed, so a short window costs little throughput.
    batch_within_s: float = 0.05
    state_checkpoint_s: float = Field(30.0, gt=0, description="the detect stage writes changed device states at "
                                      "least this often, and only then acknowledges the records behind them "
                                      "(a crash replays at most this much); also when the stream pauses")
    state_checkpoint_max_readings: int = Field(500_000, ge=1, description="or when this many readings wait for "
                                               "the next state round (their records are kept in memory until then)")
    validate_batches_in_flight: int = Field(4, ge=1, description="batches the validate stage may have sent but not "
                                            "yet acknowledged by Kafka while it takes the next (1: await each "
                                            "batch's deliveries first); their offsets are committed only after")

    @model_validator(mode="after")
    def _kafka_auth_complete(self) -> "Settings":
        if self.kafka_security_protocol.startswith("SASL") and not (self.kafka_username and self.kafka_password):
            raise ValueError(f"SW_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs SW_KAFKA_USERNAME "
                             "and SW_KAFKA_PASSWORD")
        return self

    def kafka_options(self) -> dict[str, Any]:
        """Security keyword arguments shared by kafka-python and aiokafka clients (empty for plaintext)."""
        opts: dict[str, Any] = {}
        if self.kafka_security_protocol == "PLAINTEXT":
            return opts
        opts["security_protocol"] = self.kafka_security_protocol
        if "SSL" in self.kafka_security_protocol:
            import ssl

            opts["ssl_context"] = ssl.create_default_context(cafile=str(self.kafka_cafile) if self.kafka_cafile else None)
        if self.kafka_security_protocol.startswith("SASL"):
            opts.update(sasl_mechanism=self.kafka_sasl_mechanism, sasl_plain_username=self.kafka_username,
                        sasl_plain_password=self.kafka_password)
        return opts

    @property
    def backlog_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.data_dir / 'backlog.db').resolve()}"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"
