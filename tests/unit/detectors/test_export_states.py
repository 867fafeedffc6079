"""``DetectorEngine.export_states`` (the detect stage's checkpoint rounds: the states of many devices read from the
resident store at once) against ``export_state`` one device at a time: the same exported states, whatever the
mix of states asked for and whatever part of the store they hold — series blocks, check states (rate samples,
latches, phase currents), gaps, covered time, kind states, outage records with and without samples — and for
any subset of the devices, in any order (the stage asks in chunks of 1,000 keys).

``export_state`` is the reference here because it reads each part with the store's per-device readers, which
the engine's batch path uses too (and which the resident-vs-plain tests hold to the plain engine)."""

from __future__ import annotations

import json
import random

from hypothesis import given
from hypothesis import strategies as st

from app.bench.detect import _shifted, periodic_batch, synthetic_batch
from detectors import DetectorEngine, ReadingBatch, RuleSet
from detectors.engine import IdleState
from sitewatch.contracts import DeviceStatus, GatewayStatus

from .test_engine_resident import _pit_ramp, js
from .test_reference_differential import DEVICES, SETTINGS, batches, build, event, rules


def dumped(x) -> str:
    return json.dumps(x, sort_keys=True, allow_nan=False)


def assert_exports_agree(eng: DetectorEngine, states: dict, rng: random.Random | None = None) -> dict:
    """``export_states`` of all the states, and of a random subset in a random order, is ``export_state`` of
    each; returns the exported states."""
    got = eng.export_states(states)
    assert list(got) == list(states)
    want = {k: eng.export_state(k, v) for k, v in states.items()}
    assert dumped(got) == dumped(want)
    if rng is not None and states:
        keys = rng.sample(list(states), rng.randint(1, len(states)))
        assert dumped(eng.export_states({k: states[k] for k in keys})) == dumped({k: want[k] for k in keys})
    return got


def test_a_fleet_exports_as_one_device_at_a_time():
    """A fleet after periodic batches (cadence learned, healthy: mostly idle states), a random batch (gaps:
    outage records with rate samples) and periodic ones again; every pool of the store holds rows, so every
    reader is compared — on the whole fleet and in chunks of 100 keys."""
    eng = DetectorEngine(RuleSet.default(), resident=True)
    states: dict = {}
    periodic = periodic_batch(1600, 400, seed=1)
    for i in range(3):
        eng.process(_shifted(periodic, i), states)
    eng.process(_shifted(synthetic_batch(4000, 400, seed=3), 3), states)
    for i in range(4, 6):
        eng.process(_shifted(periodic, i), states)
    s = eng._store
    held = {name: getattr(s, name).key.shape[0] for name in ("rate", "hyst", "phase", "cad", "cov", "kinds", "og",
                                                             "ogs")}
    assert all(held.values()), held
    assert any(isinstance(v, IdleState) for v in states.values())
    assert any(isinstance(v, dict) for v in states.values())
    rng = random.Random(7)
    got = assert_exports_agree(eng, states, rng)
    assert all("m" in v and "c" in v for v in got.values())
    # kind states against the batch path's own lookup of a kind's level (``export_state`` and ``export_states``
    # read them with one reader, ``kinds_many``)
    raised = [(k, kind, ks["l"]) for k, v in got.items() for kind, ks in v["k"].items()]
    assert len(raised) == held["kinds"] and any(lvl for _, _, lvl in raised)
    assert all(eng._kind_level(k, {}, kind) == lvl for k, kind, lvl in raised)
    keys = list(states)
    rng.shuffle(keys)
    for j in range(0, len(keys), 100):
        part = {k: states[k] for k in keys[j:j + 100]}
        assert dumped(eng.export_states(part)) == dumped({k: got[k] for k in part})


@SETTINGS
@given(events=st.lists(event, min_size=1, max_size=300), cuts=st.lists(st.integers(1, 90), min_size=1, max_size=4),
       delays=st.lists(st.integers(0, 60), min_size=1, max_size=20), seed=st.integers(0, 2**16))
def test_random_streams_export_as_one_device_at_a_time(events, cuts, delays, seed):
    """Random multi-family streams (late, shuffled readings: the late lane and outage records; lines crossed:
    kind states, latches and rate samples), with ticks and power-off announcements between batches; after each
    step, every state and a random subset export alike."""
    rs = build(events)
    rng = random.Random(seed)
    arrival = sorted(range(len(rs)), key=lambda i: i + (delays[i % len(delays)] if rng.random() < 0.2 else 0))
    parts = batches([rs[i] for i in arrival], cuts)
    eng = DetectorEngine(rules(), resident=True)
    states: dict = {}
    for i, part in enumerate(parts):
        rng.shuffle(part)
        eng.process(ReadingBatch.from_columns(*zip(*part)), states, max(r[4] for r in part) + 90_000)
        if i % 3 == 2:
            eng.tick(max(r[4] for r in part) + 400_000, states)
        if rng.random() < 0.15:
            s, d, f = DEVICES[rng.randrange(len(DEVICES))]
            eng.on_device_status(DeviceStatus(s, f, d, max(r[4] for r in part) + 1, rng.random() < 0.5, "test"),
                                 states)
        assert_exports_agree(eng, states, rng)


def test_every_kind_of_state_exports_as_one_device_at_a_time():
    """One call with every kind of state the stage hands over: a device with rate samples, a set latch, an open
    episode and outage records of each form (without samples, with none kept, with samples); an electrical
    device with one phase current read (null phases and null series floats); idle states; a gateway's state;
    full states (with ``m``: as they are, also one of a device whose newer block the store holds); a
    resident-looking state of a device the store has no block for (as it is); a value that is no state at all (as
    it is) — each exported as ``export_state`` exports it."""
    eng = DetectorEngine(rules(), resident=True)
    states: dict = {}
    ramp = _pit_ramp(0, 120)
    crane = [("s-a", "c-2", "crane", "load", ramp[0][4] + 1000 * k, 1.0 + 0.1 * k) for k in range(10)]
    eng.process(ReadingBatch.from_columns(*zip(*(ramp[:100] + crane))), states)
    restored = js(eng.export_states(states))["s-a/p-1"]
    checkpoint = js(eng.export_states(states))["s-a/c-2"]  # older than what the store will hold for it
    t = ramp[99][4]
    cid = "pit.rate:wall_top_horizontal"
    og = [[t - 90_000, t - 80_000], [t - 60_000, t - 50_000, {}],
          [t - 40_000, t - 30_000, {cid: [[t - 45_000, t - 41_000], [1.5, 2.5]]}]]
    restored["og"] = og  # handed back in full: the store takes its records as they are
    states["s-a/p-1"] = restored
    t1 = ramp[100][4]
    quiet = [("s-a", c, "crane", "load", t1 + 1000 * k, 1.0) for k in range(5) for c in ("c-1", "c-2")]
    quiet += [("s-b", "b-3", "battery", "pack_temp", t1 + 1000 * k, 25.0) for k in range(5)]
    phase = [("s-a", "e-1", "electrical", "current_a", t1 + 1000 * k, 30.0 + k) for k in range(5)]
    eng.process(ReadingBatch.from_columns(*zip(*(ramp[100:101] + quiet + phase))), states)
    eng.on_status(GatewayStatus("s-a", "gw-1", t1, False), states)
    states["s-b/full"] = js(eng.export_state("s-b/b-3", states["s-b/b-3"]))
    assert eng._store.block("s-a/c-2") != checkpoint["m"]
    states["s-a/c-2"] = checkpoint
    states["s-b/no-block"] = IdleState("battery", t1, None, None)
    states["s-b/no-block-dict"] = {"v": 2, "fam": "battery", "lt": t1, "dl": None, "due": None, "off": True}
    states["s-b/junk"] = None
    got = assert_exports_agree(eng, states)
    assert got["s-a/p-1"]["og"] == og
    assert got["s-a/p-1"]["c"][cid]["hist"][0] and any(got["s-a/p-1"]["c"][cid]["h"][:3])
    assert got["s-a/p-1"]["k"]["pit.rate"]["ep"]
    e1 = got["s-a/e-1"]
    (ph,) = [cs["ph"] for cs in e1["c"].values() if "ph" in cs]
    assert None in ph and None in e1["m"][1]
    assert any(isinstance(states[k], IdleState) for k in ("s-a/c-1", "s-b/b-3"))
    assert got["s-a/gateway:gw-1"] is states["s-a/gateway:gw-1"] and got["s-a/gateway:gw-1"]["gw"]
    assert got["s-b/full"] is states["s-b/full"] and got["s-a/c-2"] is checkpoint
    assert got["s-b/no-block"] == states["s-b/no-block"].as_dict() and "m" not in got["s-b/no-block"]
    assert got["s-b/no-block-dict"] is states["s-b/no-block-dict"]
    assert got["s-b/junk"] is None
    assert all(got["s-a/c-1"][f] == v for f, v in (("off", None), ("sil", [0, 0, 0]), ("hs", [0, 0]))), got["s-a/c-1"]
    assert eng.export_states({}) == {}
