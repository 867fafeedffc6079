"""Field streams: how real construction sites really send data, reproducible by seed.

Clean synthetic streams (``ingest.simulator``) hide what breaks a monitoring pipeline on a real site: pit
points whose cadence changes with the values, cranes that are off at night (and sometimes say so), gateways
that drop off 4G and either lose or buffer their readings, and flushes that arrive hours late, out of order and
twice. This package generates those shapes in fast-forwarded event time as *arrival events* plus a ground-truth
:class:`Manifest`, for tests, backtests (``sitewatch backtest --scenario``), the demo and
``sitewatch simulate --scenario``.

    >>> fs = generate("buffered-flush", start_ms=1_714_953_600_000, seed=1, crane_interval_s=10)
    >>> fs.events[0]                  # Arrival(arrival_ms, topic, payload)
    >>> fs.manifest.hazards           # the overload window, its peak and time; the pit-rate breach
    >>> publish_scenario("127.0.0.1", 1883, fs.events, speed=60, cues=fs.manifest.cues, on_cue=print)
"""

from .model import (Arrival, CadenceChange, Cue, DeviceInfo, FieldStream, HazardTruth, Manifest, OffWindow,
                    OutageTruth, SilenceTruth, read_capture, write_capture)
from .publish import anchored_start, publish_scenario
from .scenarios import SCENARIOS, demo_stream, describe, generate, pit_rate_series, scenario_names

__all__ = ["Arrival", "CadenceChange", "Cue", "DeviceInfo", "FieldStream", "HazardTruth", "Manifest", "OffWindow",
           "OutageTruth", "SilenceTruth", "SCENARIOS", "anchored_start", "demo_stream", "describe", "generate",
           "pit_rate_series", "publish_scenario", "read_capture", "scenario_names", "write_capture"]
