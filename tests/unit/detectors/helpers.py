"""Small builders shared by the detector tests: readings in, findings out, states through JSON like the table."""

from __future__ import annotations

import json
import random

from detectors import DetectorEngine, ReadingBatch, RuleSet
from sitewatch.findings import Finding

T0 = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC


def rows(family: str, metric: str, values, device: str = "d-01", site: str = "s-01", start: int = T0,
         step_ms: int = 1000) -> list[tuple]:
    return [(site, device, family, metric, start + i * step_ms, float(v)) for i, v in enumerate(values)]


def batch(rs: list[tuple]) -> ReadingBatch:
    if not rs:
        return ReadingBatch.from_columns([], [], [], [], [], [])
    return ReadingBatch.from_columns(*zip(*rs))


def engine(yaml_text: str | None = None) -> DetectorEngine:
    return DetectorEngine(RuleSet.from_yaml_text(yaml_text, "test.yaml") if yaml_text else RuleSet.default())


def run(eng: DetectorEngine, rs: list[tuple], states: dict | None = None, chunks: list[int] | None = None,
        shuffle_seed: int | None = None, via_json: bool = True, health: bool = False) -> list[Finding]:
    """Feed ``rs`` in chunks (sizes cycle through ``chunks``); rows inside a chunk optionally shuffled.
    ``device.health`` findings (the device's state at each batch end) are left out unless ``health``."""
    states = {} if states is None else states
    out: list[Finding] = []
    i, k = 0, 0
    rng = random.Random(shuffle_seed)
    while i < len(rs):
        size = chunks[k % len(chunks)] if chunks else len(rs)
        part = list(rs[i:i + size])
        if shuffle_seed is not None:
            rng.shuffle(part)
        out += [f for f in eng.process(batch(part), states) if health or f.category != "health"]
        if via_json:  # the stream processor keeps state in a changelogged table: it must survive JSON
            states.update(json.loads(json.dumps(states, allow_nan=False)))
        i += size
        k += 1
    return out


def levels(findings: list[Finding], kind: str | None = None, with_reassert: bool = False) -> list[tuple]:
    """(seconds after T0, level name) for each finding of ``kind``."""
    return [((f.ts - T0) / 1000, f.level.name) for f in findings
            if (kind is None or f.kind == kind) and (with_reassert or not f.evidence.get("reassert"))]


def key(f: Finding) -> tuple:
    d = f.to_dict()
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in d.items()))
