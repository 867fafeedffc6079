"""What goes into and comes out of a detector. Pure data: no Kafka, MQTT or database here.

Detectors work on a *columnar batch* of readings (numpy arrays, one row per reading) plus per-device state
(JSON-serialisable dicts, so the stream processor can keep them in a changelogged Faust table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from sitewatch.contracts import Reading, device_key


@dataclass(frozen=True)
class ReadingBatch:
    """A batch of readings as parallel arrays. Rows are in arrival order; ``ts`` may be out of order."""

    site: np.ndarray  # object (str)
    device: np.ndarray  # object (str)
    family: np.ndarray  # object (str)
    metric: np.ndarray  # object (str)
    ts: np.ndarray  # int64 epoch ms
    value: np.ndarray  # float64, canonical unit (see sitewatch.contracts.FAMILIES)
    gateway: np.ndarray | None = None  # object (str or None): the gateway whose frame carried the reading

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @property
    def key(self) -> np.ndarray:
        return np.array([device_key(s, d) for s, d in zip(self.site, self.device)], dtype=object)

    @classmethod
    def from_readings(cls, readings: Iterable[Reading]) -> "ReadingBatch":
        rs = list(readings)
        return cls(
            site=np.array([r.site for r in rs], dtype=object),
            device=np.array([r.device for r in rs], dtype=object),
            family=np.array([r.family for r in rs], dtype=object),
            metric=np.array([r.metric for r in rs], dtype=object),
            ts=np.array([r.ts for r in rs], dtype=np.int64),
            value=np.array([r.value for r in rs], dtype=np.float64),
            gateway=np.array([r.gateway for r in rs], dtype=object) if any(r.gateway for r in rs) else None,
        )

    @classmethod
    def from_columns(cls, site, device, family, metric, ts, value, gateway=None) -> "ReadingBatch":
        return cls(
            site=np.asarray(site, dtype=object),
            device=np.asarray(device, dtype=object),
            family=np.asarray(family, dtype=object),
            metric=np.asarray(metric, dtype=object),
            ts=np.asarray(ts, dtype=np.int64),
            value=np.asarray(value, dtype=np.float64),
            gateway=None if gateway is None else np.asarray(gateway, dtype=object),
        )

    def take(self, rows: np.ndarray) -> "ReadingBatch":
        return ReadingBatch(self.site[rows], self.device[rows], self.family[rows], self.metric[rows], self.ts[rows],
                            self.value[rows], None if self.gateway is None else self.gateway[rows])
