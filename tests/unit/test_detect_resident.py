"""The detect stage with its resident engine: what reaches the table is always the full state (what a plain engine
would have produced on the same records), while the stage's cache holds states without the series block — across
checkpoints, a rebalance (``forget``: the next state comes from the table) and a rules reload (new engine)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from detectors import DetectorEngine, RuleSet
from detectors.engine import IdleState
from sitewatch.contracts import Reading, pack_readings
from streams.detect import Detection, decode_batch

T0 = 1_790_000_000_000
RULES_B = "reassert: 20s\nfamilies: {}\n"


def record(step: int) -> bytes:
    rs = [Reading("sa", "pit", f"jc-{d:02d}", m, T0 + step * 60_000 + k * 1000, 100.0 + d + 0.5 * k + step)
          for d in range(4) for m in ("wall_top_horizontal", "strut_force") for k in range(0, 60, 7)]
    rs += [Reading("sa", "electrical", "eb-01", m, T0 + step * 60_000 + k * 1000, 40.0 + (k % 5))
           for m in ("current_a", "current_b", "current_c", "leakage") for k in range(0, 60, 5)]
    return pack_readings(rs, T0 + step * 60_000)


def stage(table: dict) -> Detection:
    pipe = SimpleNamespace(settings=SimpleNamespace(rules_path=None, kafka_partitions=4), device_state=table,
                           count=lambda *a, **k: None)
    return Detection(pipe)  # type: ignore[arg-type]


def step(det: Detection, rec: bytes) -> list:
    found = det.run_decoded(decode_batch([rec]))
    det.save(det.take_pending())  # delivered: the states behind the findings may be saved
    det.flush_dirty()  # and a round writes the rest
    return found


def js(x):
    return json.loads(json.dumps(x, allow_nan=False))


def plain_run(rules_by_step: list[RuleSet]) -> tuple[list, dict]:
    """The same records through plain engines (full states throughout; a new engine where the rules change)."""
    states: dict = {}
    out, eng = [], None
    for i, rules in enumerate(rules_by_step):
        if eng is None or eng.rules is not rules:
            eng = DetectorEngine(rules)
        batch = decode_batch([record(i)])[0]
        out += eng.process(batch, states, None)
        states = js(states)
    return out, states


def table_states(table: dict) -> dict:
    return {k.decode(): js(v) for k, v in table.items()}


def test_table_gets_full_states_cache_keeps_them_without_the_block():
    table: dict = {}
    det = stage(table)
    for i in range(3):
        step(det, record(i))
    _, want = plain_run([RuleSet.default()] * 3)
    got = table_states(table)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == want[k]
        assert "m" in got[k] and (isinstance(det.cache[k], IdleState) or "m" not in det.cache[k])


def test_rebalance_and_rules_reload_keep_every_series_state():
    table: dict = {}
    det = stage(table)
    step(det, record(0))
    step(det, record(1))
    det.flush_dirty()
    det.forget()  # partitions moved away and back: the table is the truth, the engine's blocks are gone
    assert det.cache == {} and det.engine._store.at == {}
    step(det, record(2))
    rules_b = RuleSet.from_yaml_text(RULES_B, "b.yaml")
    assert det.apply_config(json.dumps({"text": RULES_B, "fingerprint": rules_b.fingerprint}).encode())
    assert all("m" in v for v in det.cache.values())  # exported for the new engine
    step(det, record(3))
    step(det, record(4))
    _, want = plain_run([RuleSet.default()] * 3 + [rules_b] * 2)
    got = table_states(table)
    assert got.keys() == want.keys()
    assert got == want
