"""One module per sensor family. Each lists its checks (kind, metric, mode) and turns a device's effective
rules into the numbers those checks compare against; the engine itself knows no family by name."""

from __future__ import annotations

from detectors.families import battery, crane, electrical, formwork, pit

MODULES = {"crane": crane, "pit": pit, "formwork": formwork, "electrical": electrical, "battery": battery}
