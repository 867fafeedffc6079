"""The resident engine (the worker's: series blocks kept in the engine's arrays across batches, states without
``m``, full states only through ``export_state``) against the plain engine (every state a full JSON dict).

The two must be indistinguishable from outside: the same findings (every field, health included) and, after every
batch, tick and device status, exported states equal to the plain engine's — on in-order and late, shuffled
streams, across a restart from exported JSON states (a new engine, or the same one after ``drop_resident``, as the
worker does when partitions move), and with JSON round trips of the resident states in between (a state without
``m`` is still the engine's)."""

from __future__ import annotations

import json
import random

from hypothesis import given
from hypothesis import strategies as st

from detectors import DetectorEngine, ReadingBatch, RuleSet
from detectors.engine import IdleState
from detectors.plan import CHECKS
from sitewatch.contracts import FAMILIES, DeviceStatus

from .test_reference_differential import DEVICES, SETTINGS, batches, build, event, rules


def full(f) -> str:
    return json.dumps(f.to_dict(), sort_keys=True)


def js(x):
    return json.loads(json.dumps(x, allow_nan=False))


def fields(st) -> set[str]:
    """The fields a resident state carries itself (an ``IdleState``: its times)."""
    return set(st.as_dict() if isinstance(st, IdleState) else st)


def run_both(parts: list[list[tuple]], restart_at: int, mode: str, statuses: dict[int, DeviceStatus]):
    plain, res = DetectorEngine(rules()), DetectorEngine(rules(), resident=True)
    s_plain: dict = {}
    s_res: dict = {}
    for i, part in enumerate(parts):
        if i == restart_at:  # the worker's restart / rebalance: full states from the table, engine without blocks
            s_res = js(res.export_states(s_res))
            if mode == "new":
                res = DetectorEngine(rules(), resident=True)
            else:
                res.drop_resident()
        b = ReadingBatch.from_columns(*zip(*part))
        now = max(r[4] for r in part) + 90_000
        a = plain.process(b, s_plain, now)
        c = res.process(b, s_res, now)
        assert list(map(full, c)) == list(map(full, a))
        if i % 3 == 2:
            t = max(r[4] for r in part) + 400_000
            assert list(map(full, res.tick(t, s_res))) == list(map(full, plain.tick(t, s_plain)))
        if i in statuses:
            ds = statuses[i]
            assert list(map(full, res.on_device_status(ds, s_res))) == list(map(full, plain.on_device_status(
                ds, s_plain)))
        assert js(res.export_states(s_res)) == js(s_plain)
        s_plain = js(s_plain)
        if mode == "json":  # resident states survive a JSON round trip (no ``m`` in them; idle ones as dicts)
            s_res = js({k: v.as_dict() if isinstance(v, IdleState) else v for k, v in s_res.items()})
    return s_plain, s_res


@SETTINGS
@given(events=st.lists(event, min_size=1, max_size=300), cuts=st.lists(st.integers(1, 90), min_size=1, max_size=4),
       delays=st.lists(st.integers(0, 60), min_size=1, max_size=20), seed=st.integers(0, 2**16),
       restart=st.integers(0, 12), mode=st.sampled_from(["new", "drop", "json"]))
def test_resident_engine_is_the_plain_engine(events, cuts, delays, seed, restart, mode):
    rs = build(events)
    rng = random.Random(seed)
    arrival = sorted(range(len(rs)), key=lambda i: i + (delays[i % len(delays)] if rng.random() < 0.2 else 0))
    parts = batches([rs[i] for i in arrival], cuts)
    for p in parts:
        rng.shuffle(p)
    statuses = {}
    for i in range(len(parts)):
        if rng.random() < 0.15:
            s, d, f = DEVICES[rng.randrange(len(DEVICES))]
            statuses[i] = DeviceStatus(s, f, d, max(r[4] for r in parts[i]) + 1, rng.random() < 0.5, "test")
    run_both(parts, restart, mode, statuses)


def test_a_healthy_device_is_kept_as_an_idle_state():
    """A healthy resident device between batches is an ``IdleState`` (64 B instead of a 184 B dict: the worker's
    heap per device), and it is the same device to every entry point: the next batch, the deadman tick (a silent
    device is found), a power-off announcement and the export are the plain engine's."""
    rs = build([(d, k % 6, 1000, 0.3 + 0.1 * (k % 4), 0) for k in range(40) for d in (0, 1)])
    eng, plain = DetectorEngine(rules(), resident=True), DetectorEngine(rules())
    s_res: dict = {}
    s_plain: dict = {}
    for part in (rs[:40], rs[40:]):
        b = ReadingBatch.from_columns(*zip(*part))
        assert list(map(full, eng.process(b, s_res))) == list(map(full, plain.process(b, s_plain)))
    idle = [k for k, v in s_res.items() if isinstance(v, IdleState)]
    assert idle and len(idle) == len(s_res)
    assert js(eng.export_states(s_res)) == js(s_plain)
    assert DetectorEngine.next_due(s_res[idle[0]]) == DetectorEngine.next_due(s_plain[idle[0]]) is not None
    late = max(r[4] for r in rs) + 6 * 3_600_000
    silent = list(map(full, eng.tick(late, s_res)))
    assert silent and silent == list(map(full, plain.tick(late, s_plain)))
    assert js(eng.export_states(s_res)) == js(s_plain)
    site, _, device = idle[-1].partition("/")
    ds = DeviceStatus(site, s_plain[idle[-1]]["fam"], device, late + 1, False, "test")
    assert list(map(full, eng.on_device_status(ds, s_res))) == list(map(full, plain.on_device_status(ds, s_plain)))
    assert js(eng.export_states(s_res)) == js(s_plain)


def test_a_full_state_replaces_the_stored_block():
    """A device whose full state comes back (e.g. restored from a snapshot) continues from that state, not from
    what the engine still holds: here an older state, so readings between the two are new again."""
    rs = build([(2, k % 6, 1000, 0.5 + 0.01 * k, 0) for k in range(60)])
    eng, plain = DetectorEngine(rules(), resident=True), DetectorEngine(rules())
    s_res: dict = {}
    s_plain: dict = {}
    eng.process(ReadingBatch.from_columns(*zip(*rs[:20])), s_res)
    plain.process(ReadingBatch.from_columns(*zip(*rs[:20])), s_plain)
    old = js(eng.export_states(s_res))
    assert "m" in old["s-a/p-1"] and "m" not in fields(s_res["s-a/p-1"])
    eng.process(ReadingBatch.from_columns(*zip(*rs[20:40])), s_res)
    s_res = old  # back to the checkpoint: the readings 20..39 are replayed
    for part in (rs[20:40], rs[40:]):
        b = ReadingBatch.from_columns(*zip(*part))
        assert list(map(full, eng.process(b, s_res))) == list(map(full, plain.process(b, s_plain)))
        assert js(eng.export_states(s_res)) == js(s_plain)


def test_a_state_without_its_block_is_a_fresh_device():
    """A resident state handed to an engine that does not hold its block (the contract broken) is unreadable,
    like any malformed state: the device starts fresh — the engine never invents a series state."""
    rs = build([(2, k % 6, 1000, 0.5, 0) for k in range(30)])
    eng = DetectorEngine(rules(), resident=True)
    s: dict = {}
    eng.process(ReadingBatch.from_columns(*zip(*rs[:15])), s)
    other = DetectorEngine(rules(), resident=True)
    fresh = DetectorEngine(rules(), resident=True)
    s2: dict = {}
    b = ReadingBatch.from_columns(*zip(*rs[15:]))
    assert list(map(full, other.process(b, dict(s)))) == list(map(full, fresh.process(b, s2)))


def test_late_lane_of_a_resident_device_starts_from_its_stored_baselines():
    """Buffered readings of an outage, arriving after the live ones resumed, are judged on the late lane from the
    device's baselines — held in the store for a resident device — and an episode still raised at the end of the
    buffer is cleared with the live value (also from the store)."""
    dev = ("s-a", "p-2", "pit", "wall_top_horizontal")
    t0 = 1_700_000_000_000
    before = [(*dev, t0 + k * 1000, 1.0 + 0.05 * (k % 3)) for k in range(30)]
    buffered = [(*dev, t0 + 30_000 + k * 1000, 12.0 + 0.01 * k) for k in range(120)]
    after = [(*dev, t0 + 150_000 + k * 1000, 1.0 + 0.05 * (k % 3)) for k in range(10)]
    got = {}
    for name, eng in (("plain", DetectorEngine(rules())), ("resident", DetectorEngine(rules(), resident=True))):
        s: dict = {}
        out = []
        for part, now in ((before, t0 + 30_000), (after, t0 + 160_000), (buffered, t0 + 170_000)):
            out += eng.process(ReadingBatch.from_columns(*zip(*part)), s, now)
            s = js(eng.export_states(s)) if name == "plain" else s
        got[name] = out
    late = [f for f in got["plain"] if f.evidence.get("late")]
    assert any(f.level for f in late) and any(not f.level for f in late)  # raised on the lane, then cleared
    assert list(map(full, got["resident"])) == list(map(full, got["plain"]))


def _pit_ramp(k0: int, k1: int) -> list[tuple]:
    """Readings of the pit s-a/p-1 every 2 s: its wall rising at 6 mm/min (above its rate lines: rate samples and
    a set latch in its check state) up to the reading 100, then holding still (the alarm clears), rising again
    from the reading 200."""
    dev = ("s-a", "p-1", "pit", "wall_top_horizontal")
    return [(*dev, 1_700_000_000_000 + 2000 * k, 0.2 * min(k, 100) + 0.2 * max(k - 200, 0) + 0.01 * (k % 3))
            for k in range(k0, k1)]


def test_check_states_live_in_the_store_and_come_back_in_full():
    """The resident engine keeps check states (rate samples, latches, hold runs) in its arrays: its states carry no
    ``c``, the exported state does, equal to the plain engine's — and a checkpoint handed back replaces what the
    store holds for the device (its latch is set again, its samples are the old ones)."""
    eng, plain = DetectorEngine(rules(), resident=True), DetectorEngine(rules())
    s_res: dict = {}
    s_plain: dict = {}
    for part in (_pit_ramp(0, 50), _pit_ramp(50, 100)):
        b = ReadingBatch.from_columns(*zip(*part))
        assert list(map(full, eng.process(b, s_res))) == list(map(full, plain.process(b, s_plain)))
    assert not {"c", "m"} & fields(s_res["s-a/p-1"])
    checkpoint = js(eng.export_states(s_res))
    cs = checkpoint["s-a/p-1"]["c"]["pit.rate:wall_top_horizontal"]
    assert cs["hist"][0] and any(cs["h"][:3])  # samples kept, a latch set: the test exercises both
    assert checkpoint == js(s_plain)
    plain_at_checkpoint = js(s_plain)
    b = ReadingBatch.from_columns(*zip(*_pit_ramp(100, 200)))
    cleared = eng.process(b, s_res)
    assert any(f.kind == "pit.rate" and not f.level for f in cleared)
    s_res, s_plain = checkpoint, plain_at_checkpoint  # back to the checkpoint: the alarm is raised again
    for part in (_pit_ramp(100, 200), _pit_ramp(200, 240)):
        b = ReadingBatch.from_columns(*zip(*part))
        assert list(map(full, eng.process(b, s_res))) == list(map(full, plain.process(b, s_plain)))
        assert js(eng.export_states(s_res)) == js(s_plain)


def test_a_device_key_reused_by_another_family_starts_without_the_old_check_states():
    """The store hands a device a new block when its family changes: the old block's check states neither leak
    into the new one (nor into the export) nor stay behind in the store's arrays."""
    eng, plain = DetectorEngine(rules(), resident=True), DetectorEngine(rules())
    s_res: dict = {}
    s_plain: dict = {}
    b = ReadingBatch.from_columns(*zip(*_pit_ramp(0, 100)))
    eng.process(b, s_res)
    plain.process(b, s_plain)
    assert eng.export_state("s-a/p-1", s_res["s-a/p-1"])["c"]
    s_res.pop("s-a/p-1")
    s_plain.pop("s-a/p-1")
    rs = [("s-a", "p-1", "formwork", "settlement", 1_700_000_100_000 + 1000 * k, 0.5 * k) for k in range(30)]
    b = ReadingBatch.from_columns(*zip(*rs))
    assert list(map(full, eng.process(b, s_res))) == list(map(full, plain.process(b, s_plain)))
    got = js(eng.export_states(s_res))
    assert got == js(s_plain)
    assert all(cid.startswith("formwork.") for cid in got["s-a/p-1"]["c"])
    store = eng._store
    new_id = store.at["s-a/p-1"]
    assert all(pool.key.shape[0] == 0 or (pool.key // len(CHECKS) == new_id).all() for pool in store.pools)


def test_gaps_and_covered_time_live_in_the_store():
    """A device's learned gaps (``cad``) and covered time (``cov``) are kept in the store: its state carries neither.
    They still decide what depends on them, as in the plain engine: the silent limit (the clock raises a silent
    fault), the silence ending when readings resume, the outage the buffered readings fall in (late lane), the
    covered time those readings add and the silence they retract — findings and exported states equal after
    every step."""
    dev = ("s-a", "p-2", "pit", "wall_top_horizontal")
    t0, H = 1_700_000_000_000, 3_600_000
    before = [(*dev, t0 + k * 1000, 1.0 + 0.05 * (k % 3)) for k in range(30)]
    buffered = [(*dev, t0 + 30_000 + k * 1000, 12.0 + 0.01 * k) for k in range(400)]
    after = [(*dev, t0 + 3 * H + k * 1000, 1.0 + 0.05 * (k % 3)) for k in range(10)]
    eng, plain = DetectorEngine(rules(), resident=True), DetectorEngine(rules())
    s_res: dict = {}
    s_plain: dict = {}
    got = []
    for step, arg in (("b", (before, t0 + 30_000)), ("t", t0 + 2 * H + 60_000), ("t", t0 + 2 * H + 600_000),
                      ("b", (after, t0 + 3 * H + 10_000)), ("b", (buffered, t0 + 3 * H + 20_000))):
        if step == "b":
            b = ReadingBatch.from_columns(*zip(*arg[0]))
            a, c = plain.process(b, s_plain, arg[1]), eng.process(b, s_res, arg[1])
        else:
            a, c = plain.tick(arg, s_plain), eng.tick(arg, s_res)
        assert list(map(full, c)) == list(map(full, a))
        assert not {"cad", "cov"} & fields(s_res["s-a/p-2"])
        assert js(eng.export_states(s_res)) == js(s_plain)
        got += c
        # null off/offat/sx are left out of the resident state (its dict stays small), and exported
        st = s_res["s-a/p-2"]
        st = st.as_dict() if isinstance(st, IdleState) else st
        assert all(st.get(k, 0) is not None for k in ("off", "offat", "sx"))
    silent = [f for f in got if f.kind == "fault.silent"]
    assert silent and silent[0].level  # the clock found it silent (2 h floor of its limit)
    assert any(not f.level and not f.evidence.get("retracted") for f in silent)  # ended when readings resumed
    assert any(f.evidence.get("retracted") for f in silent)  # and retracted by the buffered readings
    assert any(f.evidence.get("late") for f in got if f.kind != "fault.silent")  # judged on the late lane
    assert len(js(eng.export_states(s_res))["s-a/p-2"]["cov"]) >= 1


def test_kind_states_and_outage_records_live_in_the_store():
    """A raised alarm's kind state (``k``: level, slots, open episode) and the outage records heard live (``og``,
    each with a copy of the rate samples from before the outage) are kept in the store: the resident state carries
    neither. A checkpoint brings both back (a restart from exported JSON), and they still decide what depends on
    them as in the plain engine: the episode carried into the next finding, the outage a buffered reading is
    named late in, and the rate samples the late lane starts from — findings and exported states equal after
    every step."""
    ramp = _pit_ramp(0, 420)
    live, buffered, after = ramp[:100], ramp[100:400], ramp[400:]
    eng, plain = DetectorEngine(rules(), resident=True), DetectorEngine(rules())
    s_res: dict = {}
    s_plain: dict = {}
    got = []
    t_end = after[-1][4]
    for i, part in enumerate((live[:60], live[60:], after, buffered)):
        if i == 3:  # the worker restarts before the buffered readings arrive: full states from the table
            s_res = js(eng.export_states(s_res))
            eng = DetectorEngine(rules(), resident=True)
        b = ReadingBatch.from_columns(*zip(*part))
        a, c = plain.process(b, s_plain, t_end + 10_000), eng.process(b, s_res, t_end + 10_000)
        assert list(map(full, c)) == list(map(full, a))
        if i < 3:  # (the last batch is all late readings: the state handed in, a full one, is kept as it is)
            assert not {"k", "og"} & fields(s_res["s-a/p-1"])
        assert js(eng.export_states(s_res)) == js(s_plain)
        got += c
        if i == 2:
            exported = js(eng.export_states(s_res))["s-a/p-1"]
            assert exported["k"]["pit.rate"]["ep"]  # an open episode, from the store
            (x, y, pre), = exported["og"]
            assert (x, y) == (live[-1][4], after[0][4]) and pre["pit.rate:wall_top_horizontal"][0]
        s_plain = js(s_plain)
    assert any(f.evidence.get("late") and f.kind == "pit.rate" for f in got)  # the lane judged the buffered rate



WORKING_HOURS = """
families: {}
---
site: s-w
calendar: {timezone: UTC, working_hours: ["06:00-18:00"]}
"""


def test_an_idle_device_leaves_the_idle_path_as_the_plain_engine_does():
    """The resident engine keeps an idle device (``IdleState``) idle through a batch without making it a dict; where
    the batch changes more than its times — heard through a gateway, a site with working hours (an off-hours
    deadline), a sensor fault raised — and where it has late readings (the late lane changes its state), it gets
    the plain engine's state. Batch by batch against the plain engine: findings and exported states."""
    rs = RuleSet.from_yaml_text(WORKING_HOURS, "wh.yaml")
    devs = [("s-w", "c-w", "crane"), ("s-x", "f-x", "formwork"), ("s-x", "c-x", "crane"), ("s-x", "p-x", "pit")]
    eng, plain = DetectorEngine(rs, resident=True), DetectorEngine(rs)
    s_res: dict = {}
    s_plain: dict = {}
    t0 = 1_793_555_520_000  # 17:52 UTC: the end of the working day on s-w
    for k in range(9):
        rows = []
        for j, (site, device, fam) in enumerate(devs):
            if (k, device) == (5, "c-x"):
                continue  # an outage: the buffered readings come at k = 7
            m = list(FAMILIES[fam])[0]
            for i in range(6):
                v = 999.0 if (k, device, i) == (4, "p-x", 3) else 1.0 + 0.01 * i + 0.001 * k  # 999: out of range
                rows.append((site, device, fam, m, t0 + k * 60_000 + i * 10_000 + j, v,
                             "gw-1" if (k, device) == (3, "f-x") else None))
        if k == 7:
            rows += [("s-x", "c-x", "crane", "load", t0 + 5 * 60_000 + i * 10_000 + 2, 1.2, None) for i in range(6)]
        site, device, fam, metric, ts, value, gw = zip(*rows)
        b = ReadingBatch.from_columns(site, device, fam, metric, ts, value, gw if any(gw) else None)
        now = t0 + k * 60_000 + 90_000
        assert list(map(full, eng.process(b, s_res, now))) == list(map(full, plain.process(b, s_plain, now)))
        assert js(eng.export_states(s_res)) == js(s_plain)
        idle = {key for key, v in s_res.items() if isinstance(v, IdleState)}
        if k == 1:  # s-w's crane as an idle device (its off-hours deadline dropped) before a batch in working hours
            assert "s-w/c-w" not in idle and s_res["s-w/c-w"]["offat"]
            s_res["s-w/c-w"] = IdleState(*(s_res["s-w/c-w"][f] for f in ("fam", "lt", "dl", "due")))
            del s_plain["s-w/c-w"]["offat"]
        if k == 2:
            assert "s-w/c-w" not in idle
        assert ("s-x/f-x" in idle) == (k < 3)  # then it has a gateway
        assert ("s-x/p-x" in idle) == (k < 4)  # then a sensor fault
        assert "s-x/c-x" in idle
        s_plain = js(s_plain)
    assert js(eng.export_states(s_res))["s-x/f-x"]["via"] == "gw-1"
    assert eng.stats["late"] == plain.stats["late"] == 6
