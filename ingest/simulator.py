"""Site simulator: N sites × M devices of every family, publishing realistic readings over real MQTT.

Signals are a base value plus a daily cycle, noise and a slow creep (a pit wall creeps, a formwork settles
while concrete is poured); scenarios inject hazards and sensor faults on cue so a demo or a test knows
exactly what should fire and when. Values for a whole tick are computed at once with numpy.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from sitewatch.contracts import FAMILIES, gateway_topic, reading_topic

log = logging.getLogger("sitewatch.simulate")

GATEWAY = "gw-01"  # each simulated site's one gateway: its frames, status and commands
DEVICE_PREFIX = {"crane": "tc", "formwork": "fw", "pit": "jc", "electrical": "eb", "battery": "bc"}

# metric -> (base, daily amplitude, noise sd, creep per hour). Defaults sit well below the default alarm lines.
SIGNALS: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "crane": {"load": (4.0, 2.0, 0.3, 0.0), "moment": (45.0, 15.0, 2.0, 0.0), "wind": (5.0, 2.0, 0.8, 0.0),
              "tilt": (0.10, 0.03, 0.01, 0.0)},
    "formwork": {"settlement": (2.0, 0.2, 0.05, 0.02), "tilt": (0.05, 0.01, 0.005, 0.0),
                 "axial_force": (30.0, 3.0, 0.8, 0.0), "horizontal_displacement": (1.0, 0.2, 0.05, 0.01)},
    "pit": {"wall_top_horizontal": (8.0, 0.3, 0.1, 0.02), "wall_top_vertical": (5.0, 0.3, 0.1, 0.01),
            "deep_horizontal": (6.0, 0.2, 0.1, 0.02), "strut_force": (600.0, 40.0, 8.0, 0.0),
            "groundwater_level": (-3.0, 0.05, 0.01, 0.0), "surface_settlement": (4.0, 0.2, 0.1, 0.01)},
    "electrical": {"current_a": (60.0, 15.0, 3.0, 0.0), "current_b": (58.0, 15.0, 3.0, 0.0),
                   "current_c": (62.0, 15.0, 3.0, 0.0), "leakage": (5.0, 1.0, 0.4, 0.0),
                   "terminal_temp": (38.0, 5.0, 0.5, 0.0)},
    "battery": {"pack_temp": (30.0, 4.0, 0.3, 0.0), "cell_temp": (31.0, 4.0, 0.3, 0.0),
                "charge_current": (8.0, 1.0, 0.3, 0.0), "smoke": (1.0, 0.2, 0.2, 0.0), "co": (3.0, 0.5, 0.5, 0.0)},
}


def connect_publisher(host: str, port: int, client_id: str, username: str | None = None,
                      password: str | None = None) -> mqtt.Client:
    """A paho-mqtt publisher with its network loop running: unbounded local queue (QoS 1 messages are never
    dropped client-side), up to 1,000 in flight."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    if username:
        client.username_pw_set(username, password)
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(1000)
    client.connect(host, port, keepalive=30)
    client.loop_start()
    return client


@dataclass(frozen=True)
class Effect:
    """From ``at_s`` for ``duration_s`` (None: until the end), change one device's metric on one site."""

    at_s: float
    family: str
    metric: str | None  # None with mode "silent": the whole device stops publishing
    mode: str  # "set" (hold value), "ramp" (from current to value over duration), "silent", "flatline"
    value: float = 0.0
    duration_s: float | None = None
    site_index: int = 0
    device_index: int = 0

    def active(self, t: float) -> bool:
        return t >= self.at_s and (self.duration_s is None or t < self.at_s + self.duration_s)


def _scenarios(at: float) -> dict[str, tuple[str, list[Effect]]]:
    return {
        "none": ("normal operation, nothing should fire", []),
        "crane-overload": (
            f"crane tc-01 lifts 11.5 t (115 % of its 10 t rating) at t={at:.0f} s for 20 s",
            [Effect(at, "crane", "load", "set", 11.5, 20.0)],
        ),
        "leakage-rising": (
            f"leakage current at eb-01 rises from 5 to 28 mA over 60 s from t={at:.0f} s",
            [Effect(at, "electrical", "leakage", "ramp", 28.0, 60.0),
             Effect(at + 60, "electrical", "leakage", "set", 28.0, None)],
        ),
        "sensor-silent": (
            f"pit monitoring point jc-01 goes silent at t={at:.0f} s",
            [Effect(at, "pit", None, "silent")],
        ),
        "pit-creep": (
            f"pit wall-top horizontal displacement at jc-01 accelerates to 32 mm over 120 s from t={at:.0f} s",
            [Effect(at, "pit", "wall_top_horizontal", "ramp", 32.0, 120.0),
             Effect(at + 120, "pit", "wall_top_horizontal", "set", 32.0, None)],
        ),
        "formwork-pour": (
            f"formwork fw-01 settles 12 mm within 3 minutes during a pour from t={at:.0f} s",
            [Effect(at, "formwork", "settlement", "ramp", 14.0, 180.0)],
        ),
        "battery-runaway": (
            f"battery bc-01 pack temperature climbs to 70 °C over 5 minutes from t={at:.0f} s",
            [Effect(at, "battery", "pack_temp", "ramp", 70.0, 300.0),
             Effect(at, "battery", "cell_temp", "ramp", 72.0, 300.0)],
        ),
        "flatline": (
            f"crane tc-01 wind sensor sticks at t={at:.0f} s",
            [Effect(at, "crane", "wind", "flatline")],
        ),
    }


def scenario_names() -> list[str]:
    return list(_scenarios(30.0))


def describe_scenario(name: str, at: float = 30.0) -> str:
    return _scenarios(at)[name][0]


@dataclass
class SimConfig:
    sites: int = 2
    devices_per_family: int = 2
    interval_s: float = 1.0
    scenario: str = "crane-overload"
    scenario_at_s: float = 30.0
    mode: str = "gateway"  # "gateway": one frame per site per tick; "single": one message per reading
    seed: int = 7
    site_prefix: str = "cz-"
    qos: int = 1
    speed: float = 1.0  # >1 compresses the scenario's ramps and holds (tests, demos); the start stays at `at`
    # The command service's public key (PEM file): each site's gateway then takes signed commands and acts on them
    # (ingest.device). None: the simulated gateways ignore commands.
    command_key: str | None = None


# A device whose power was cut by a command reads 0 on these (a charging cabinet's charge current, a box's phases).
POWERED_METRICS = {"charge_current", "current_a", "current_b", "current_c"}


@dataclass
class Simulator:
    cfg: SimConfig
    sent_readings: int = 0
    sent_messages: int = 0
    # site id -> its gateway's command endpoint (ingest.device): commands act on the readings that follow
    endpoints: dict = field(default_factory=dict)
    _rng: np.random.Generator = field(init=False)

    def __post_init__(self):
        if self.cfg.scenario not in scenario_names():
            raise ValueError(f"unknown scenario {self.cfg.scenario!r}; choose from {', '.join(scenario_names())}")
        self._rng = np.random.default_rng(self.cfg.seed)
        at, k = self.cfg.scenario_at_s, self.cfg.speed
        self.effects = [
            replace(e, at_s=at + (e.at_s - at) / k, duration_s=None if e.duration_s is None else e.duration_s / k)
            for e in _scenarios(at)[self.cfg.scenario][1]
        ]
        rows = []
        for s in range(self.cfg.sites):
            for fam, metrics in SIGNALS.items():
                for d in range(self.cfg.devices_per_family):
                    for metric, spec in metrics.items():
                        rows.append((s, fam, d, metric, *spec))
        self.rows = rows
        self.site_ids = [f"{self.cfg.site_prefix}{s + 1:04d}" for s in range(self.cfg.sites)]
        self._base = np.array([r[4] for r in rows])
        self._amp = np.array([r[5] for r in rows])
        self._sd = np.array([r[6] for r in rows])
        self._creep = np.array([r[7] for r in rows])
        self._phase = self._rng.uniform(0, 2 * math.pi, len(rows))
        self._frozen: dict[int, float] = {}
        self._index = {(r[0], r[1], r[2], r[3]): i for i, r in enumerate(rows)}
        if self.cfg.command_key and not self.endpoints:
            from ingest.device import CommandEndpoint
            from sitewatch import commands as wire

            public = wire.load_public_key(Path(self.cfg.command_key))
            devices = {self.device_id(fam, d) for fam in SIGNALS for d in range(self.cfg.devices_per_family)}
            self.endpoints = {site: CommandEndpoint(site, GATEWAY, public, devices=devices) for site in self.site_ids}

    @staticmethod
    def device_id(family: str, index: int) -> str:
        return f"{DEVICE_PREFIX[family]}-{index + 1:02d}"

    def values_at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Values of every (site, device, metric) row at ``t`` seconds into the run, and a publish mask."""
        day = 2 * math.pi * (time.time() % 86400) / 86400
        v = self._base + self._amp * np.sin(day + self._phase) * 0.5 + self._rng.normal(0, 1, len(self.rows)) * self._sd
        v += self._creep * t / 3600.0
        mask = np.ones(len(self.rows), dtype=bool)
        for e in self.effects:
            if not e.active(t):
                continue
            for i, r in enumerate(self.rows):
                if r[0] != e.site_index or r[1] != e.family or r[2] != e.device_index:
                    continue
                if e.metric is not None and r[3] != e.metric:
                    continue
                if e.mode == "silent":
                    mask[i] = False
                elif e.mode == "set":
                    v[i] = e.value
                elif e.mode == "ramp":
                    frac = min(1.0, (t - e.at_s) / (e.duration_s or 1.0))
                    start = self._base[i]
                    v[i] = start + (e.value - start) * frac + self._rng.normal(0, self._sd[i] * 0.2)
                elif e.mode == "flatline":
                    v[i] = self._frozen.setdefault(i, round(float(v[i]), 3))
        for s, ep in self.endpoints.items():  # devices whose power a command cut: no current any more
            unpowered = {d for d, st in ep.state.items() if not st.power}
            if unpowered:
                for i, r in enumerate(self.rows):
                    if self.site_ids[r[0]] == s and r[3] in POWERED_METRICS and \
                            self.device_id(r[1], r[2]) in unpowered:
                        v[i] = 0.0
        return v, mask

    def messages(self, t: float, ts_ms: int) -> list[tuple[str, bytes]]:
        values, mask = self.values_at(t)
        out: list[tuple[str, bytes]] = []
        if self.cfg.mode == "single":
            for (s, fam, d, metric, *_), v, on in zip(self.rows, values, mask):
                if on:
                    topic = reading_topic(self.site_ids[s], fam, self.device_id(fam, d), metric)
                    payload = {"ts": ts_ms, "value": round(float(v), 3), "unit": FAMILIES[fam][metric]}
                    out.append((topic, json.dumps(payload).encode()))
            self.sent_readings += int(mask.sum())
            return out
        frames: dict[int, list[dict]] = {s: [] for s in range(self.cfg.sites)}
        for (s, fam, d, metric, *_), v, on in zip(self.rows, values, mask):
            if on:
                frames[s].append({"family": fam, "device": self.device_id(fam, d), "metric": metric, "ts": ts_ms,
                                  "value": round(float(v), 3), "unit": FAMILIES[fam][metric]})
        for s, items in frames.items():
            if items:
                out.append((gateway_topic(self.site_ids[s], GATEWAY), json.dumps({"readings": items}).encode()))
                self.sent_readings += len(items)
        return out

    def run(self, host: str, port: int, duration_s: float | None = None, stop: threading.Event | None = None,
            username: str | None = None, password: str | None = None) -> None:
        stop = stop or threading.Event()
        # One client id per simulator: several simulators of one run (one per scenario) sharing an id would keep
        # kicking each other off the broker, and a kicked client's publishes fail with "not connected".
        client_id = f"sitewatch-sim-{self.cfg.site_prefix}{self.cfg.seed}-{os.getpid()}-{id(self) & 0xFFFFFF:06x}"
        client = connect_publisher(host, port, client_id, username, password)
        for ep in self.endpoints.values():  # the gateway also takes its commands on its own connection
            ep.attach(client)
        try:
            for site in self.site_ids:
                client.publish(gateway_topic(site, GATEWAY, "status"),
                               json.dumps({"online": True, "ts": int(time.time() * 1000)}), qos=1)
            t0 = time.monotonic()
            tick = 0
            last_report = t0
            info = None
            while not stop.is_set():
                t = tick * self.cfg.interval_s
                if duration_s is not None and t >= duration_s:
                    break
                ts_ms = int(time.time() * 1000)
                for topic, payload in self.messages(t, ts_ms):
                    info = client.publish(topic, payload, qos=self.cfg.qos)
                    self.sent_messages += 1
                tick += 1
                if time.monotonic() - last_report >= 10:
                    log.info("simulator t=%.0fs: %d readings in %d messages", t, self.sent_readings, self.sent_messages)
                    last_report = time.monotonic()
                delay = t0 + tick * self.cfg.interval_s - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
            if info is not None:
                info.wait_for_publish(30)  # QoS 1: the broker has it before we report it sent
        finally:
            client.loop_stop()
            client.disconnect()
