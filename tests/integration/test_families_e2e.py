"""Every family's simulator scenario through the real pipeline yields the expected ticket at the expected level,
a silent sensor yields a fault ticket (not a hazard), and normal operation yields nothing."""

from __future__ import annotations

import threading

import pytest

from backlog.store import Backlog
from ingest.simulator import SimConfig, Simulator
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

# scenario -> (device, kind, category, level) it must produce; each scenario runs on a site of its own.
EXPECTED = {
    "crane-overload": ("tc-01", "crane.overload", "hazard", 3),
    "leakage-rising": ("eb-01", "electrical.leakage", "hazard", 2),
    "sensor-silent": ("jc-01", "fault.silent", "fault", 2),
    "pit-creep": ("jc-01", "pit.cumulative", "hazard", 3),
    "formwork-pour": ("fw-01", "formwork.control", "hazard", 3),
    "battery-runaway": ("bc-01", "battery.temp", "hazard", 3),
    "none": None,
}


# The simulator's pit points report every second and go silent 3 s in, before a cadence can be learned; real pit
# monitoring reports every 10 min to hours (default 30 min, deadman floor 2 h). The rules say what this simulator
# does, so the silent point is found within the test; its devices sit behind a gateway, whose grace (120 s by
# default: time for the gateway's last will to arrive first) is shortened too.
@pytest.mark.rules("faults:\n  gateway_grace: 10s\nfamilies:\n  pit:\n    expected_interval: 1s\n"
                   "    silent_floor: 20s\n")
def test_each_family_scenario_becomes_its_ticket(pipeline):
    stop = threading.Event()
    sims, threads = {}, []
    for i, name in enumerate(EXPECTED):
        # speed 4 compresses ramps (a 5-minute battery runaway takes 75 s); the start is at t=3 s
        cfg = SimConfig(sites=1, devices_per_family=2, scenario=name, scenario_at_s=3.0, speed=4.0,
                        site_prefix=f"f{i}-", seed=7)
        sim = Simulator(cfg)
        sims[name] = sim
        threads.append(threading.Thread(target=sim.run, args=("127.0.0.1", pipeline.stack.mqtt_port, None, stop),
                                        daemon=True, name=f"sim-{name}"))
        threads[-1].start()
    site_of = {name: sim.site_ids[0] for name, sim in sims.items()}
    want = {(site_of[n], e[0], e[1]): e for n, e in EXPECTED.items() if e}
    backlog = Backlog(pipeline.db_url, create=False)

    def all_fired():
        got = {(t.site, t.device, t.kind): t for t in backlog.tickets()}
        return got if all(k in got and got[k].peak_level >= e[3] for k, e in want.items()) else None

    try:
        got = wait_until(all_fired, 150, "a ticket for every family scenario", interval=1.0)
    except AssertionError as e:
        have = sorted((t.site, t.device, t.kind, t.peak_level) for t in backlog.tickets())
        raise AssertionError(f"{e}; wanted {sorted(want)}, have {have}") from None
    finally:
        stop.set()  # before the simulators' silence itself becomes a fault on every device
        for th in threads:  # finish publishing while the broker is still up
            th.join(timeout=40)
    for key, (device, kind, category, level) in want.items():
        t = got[key]
        assert t.category == category, (key, t.category)
        assert t.peak_level == level, (key, t.peak_level)
        assert t.family == {"tc": "crane", "eb": "electrical", "jc": "pit", "fw": "formwork", "bc": "battery"}[device[:2]]
    assert got[(site_of["crane-overload"], "tc-01", "crane.overload")].major, "115 % of rated load is a major hazard"
    assert not any(t.site == site_of["none"] for t in got.values()), "normal operation must not raise anything"
    extra = {k: (t.peak_level, t.category) for k, t in got.items() if k not in want}
    assert not extra, f"false alarms: {extra}"
