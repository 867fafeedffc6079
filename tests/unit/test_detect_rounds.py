"""State rounds of the detect stage: its input records are acknowledged only by the round that wrote the states
holding their readings, so a crash replays exactly what the table is missing (streams/detect.py)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from detectors import DetectorEngine, RuleSet
from sitewatch.contracts import Reading, pack_readings
from streams.detect import ROUND_CHUNK, ROUND_IDLE_S, Detection, decode_batch
from tests.unit.test_detect_resident import js, table_states

T0 = 1_790_000_000_000


def record(step: int, rise_at: int = -1) -> bytes:
    """A minute of four quiet pit sensors (no finding: their states wait for a round); at step ``rise_at`` the
    fourth rises 40 mm (an alarm: its state is saved as soon as the finding is out)."""
    rs = [Reading("sa", "pit", f"jc-{d:02d}", "wall_top_horizontal", T0 + step * 60_000 + k * 1000,
                  0.01 * ((d + k + step) % 7) + (40.0 if d == 3 and step >= rise_at >= 0 else 0.0))
          for d in range(4) for k in range(0, 60, 7)]
    return pack_readings(rs, T0 + step * 60_000)


def plain_run(records: list[bytes]) -> dict:
    """The states a plain engine ends with on the same records, never interrupted."""
    eng, states = DetectorEngine(RuleSet.default()), {}
    for r in records:
        eng.process(decode_batch([r])[0], states, None)
        states = js(states)
    return states


class Acks:
    """``Stream.ack`` as the stage calls it: what was acknowledged, in order."""

    def __init__(self):
        self.events: list = []

    async def __call__(self, event) -> None:
        self.events.append(event)


def stage(table: dict, **kw) -> Detection:
    counts: dict = {}
    pipe = SimpleNamespace(settings=SimpleNamespace(rules_path=None, kafka_partitions=4), device_state=table,
                           count=lambda k, n=1: counts.__setitem__(k, counts.get(k, 0) + n), counts=counts)
    return Detection(pipe, **kw)  # type: ignore[arg-type]


def batch(det: Detection, acks: Acks, rec: bytes, deliver: bool = True) -> set[str]:
    """What the agent does with one taken record: detect, deliver the findings (``emit``), hold the record."""
    decoded = decode_batch([rec])
    det.run_decoded(decoded)
    keys = det.take_pending()
    if deliver:
        det.save(keys)
    det.hold(acks, [rec], len(decoded[0]))
    return keys


def test_records_are_acknowledged_only_by_the_round_that_saves_their_states():
    table: dict = {}
    det, acks = stage(table, checkpoint_s=3600.0), Acks()
    recs = [record(0), record(1)]
    for r in recs:
        batch(det, acks, r)
    assert acks.events == [], "no record acknowledged before a round"
    assert det.dirty and not any(k.encode() in table for k in det.dirty), "changed states wait for the round"

    assert asyncio.run(det.checkpoint_round()) == 2
    assert acks.events == recs, "acknowledged in the order taken"
    assert not det.dirty and not det.held and det.held_readings == 0
    want = plain_run(recs)
    assert table_states(table) == want, "the round wrote every state holding the acknowledged readings"
    assert det.pipe.counts["state_rounds"] == 1 and det.pipe.counts["states_checkpointed"] == len(want)
    assert asyncio.run(det.checkpoint_round()) == 0 and acks.events == recs, "nothing acknowledged twice"


def test_a_crash_replays_the_unacknowledged_records_onto_the_last_round():
    """Worker A takes five records, a round after the second; it dies after the fifth. Worker B restores the table
    (the changelog) and is given the records after the last acknowledged one: its states are those of a worker that
    never crashed. Acknowledging with the batch (the old ``take()``) would have left three records' readings out. The
sensor that rose at the fourth record was saved then (its finding went out), ahead of the round: the replay of
the third and fourth is old to it and dropped, the fifth applies."""
    table: dict = {}
    a, acks = stage(table, checkpoint_s=3600.0), Acks()
    recs = [record(i, rise_at=3) for i in range(5)]
    for r in recs[:2]:
        batch(a, acks, r)
    asyncio.run(a.checkpoint_round())
    for r in recs[2:]:
        batch(a, acks, r)
    assert acks.events == recs[:2]

    restored = {k: js(v) for k, v in table.items()}  # what a new owner reads back from the changelog
    b, acks_b = stage(restored, checkpoint_s=3600.0), Acks()
    for r in recs[len(acks.events):]:
        batch(b, acks_b, r)
    asyncio.run(b.checkpoint_round())
    assert table_states(restored) == plain_run(recs)


def pit_rise(site: str, mm: float) -> bytes:
    return pack_readings([Reading(site, "pit", "jc-01", "wall_top_horizontal", T0, mm)], T0)


def test_no_record_is_acknowledged_while_a_finding_of_it_is_in_flight():
    table: dict = {}
    det, acks = stage(table), Acks()
    keys = batch(det, acks, pit_rise("sc", 40.0), deliver=False)  # 40 mm against the 30 mm alarm: a finding
    assert keys == {"sc/jc-01"}
    assert asyncio.run(det.checkpoint_round()) == 0 and acks.events == []
    assert len(det.held) == 1 and det.held_readings == 1, "kept for the next round"
    det.save(keys)  # delivered: its state is saved at once
    assert b"sc/jc-01" in table
    assert asyncio.run(det.checkpoint_round()) == 1 and len(acks.events) == 1


def test_partitions_that_move_take_their_held_records_along():
    det, acks = stage({}), Acks()
    batch(det, acks, record(0))
    det.forget()
    assert not det.held and not det.round_due(urgent=True)
    assert asyncio.run(det.checkpoint_round()) == 0 and acks.events == []


def test_when_a_round_is_due():
    det, acks = stage({}, checkpoint_s=30.0, max_held_readings=300), Acks()
    assert not det.round_due(urgent=True), "nothing held, nothing to do"
    batch(det, acks, record(0))
    assert det.held_readings < 300
    assert not det.round_due(), "a busy stream, little held, young"
    assert det.round_due(urgent=True), "a rebalance or shutdown waits for the held records"
    det.last_batch -= ROUND_IDLE_S
    assert det.round_due(), "the stream paused"
    det.waiting = lambda: 7
    assert not det.round_due(), "no pause while records wait to be taken (the stage was busy, not the stream quiet)"
    det.waiting = lambda: 0
    det.last_batch += ROUND_IDLE_S
    det.held_since -= 30.0
    assert det.round_due(), "the interval is up"
    det.held_since += 30.0
    for i in range(1, 20):
        batch(det, acks, record(i))
    assert det.held_readings >= 300 and det.round_due(), "too many readings held"


def test_a_large_round_writes_in_chunks_and_stops_if_the_partitions_move():
    """More states than one chunk: the loop is let go between chunks; a rebalance in between (``forget``) ends the
    round without acknowledging, since the records now belong to the next owner."""
    table: dict = {}
    det, acks = stage(table, checkpoint_s=3600.0), Acks()
    rs = [Reading(f"s{d // 50}", "pit", f"jc-{d % 50:02d}", "wall_top_horizontal", T0, 0.0) for d in range(2500)]
    batch(det, acks, pack_readings(rs, T0))
    assert len(det.dirty) == 2500

    async def round_with_rebalance():
        task = asyncio.ensure_future(det.checkpoint_round())
        await asyncio.sleep(0)  # the round wrote its first chunk and let the loop go
        det.forget()
        return await task

    assert asyncio.run(round_with_rebalance()) == 0 and acks.events == []
    assert 0 < len(table) < 2500, "stopped after a chunk"
    assert json.loads(json.dumps(next(iter(table.values()))))["fam"] == "pit"


def fleet_record(step: int, devices: int = 2500) -> bytes:
    return pack_readings([Reading(f"s{d // 50}", "pit", f"jc-{d % 50:02d}", "wall_top_horizontal",
                                  T0 + step * 60_000, 0.01 * ((d + step) % 5)) for d in range(devices)],
                         T0 + step * 60_000)


def test_batches_go_on_between_a_rounds_chunks_and_a_crash_still_loses_nothing():
    """A round over 2,500 states lets a batch in after its first chunk (the lock is taken per chunk): the round
    acknowledges only the record held when it began, and a crash after it replays the later one onto states that
    may or may not hold it already — either way the new owner ends where an uninterrupted worker does."""
    table: dict = {}
    det, acks = stage(table, checkpoint_s=3600.0), Acks()
    first, second = fleet_record(0), fleet_record(1)
    batch(det, acks, first)

    async def round_with_a_batch_inside():
        task = asyncio.ensure_future(det.checkpoint_round())
        await asyncio.sleep(0)  # the round wrote its first chunk and let the loop go
        async with det.lock:
            batch(det, acks, second)
        return await task

    assert asyncio.run(round_with_a_batch_inside()) == 1
    assert acks.events == [first] and [evs for _, evs, _ in det.held] == [[second]]
    lt = sorted(v["lt"] for v in table.values())
    assert len(lt) == 2500 and lt[0] < lt[-1], "chunks before the batch hold the first record, later ones both"
    assert len(det.dirty) == ROUND_CHUNK, "the first chunk's states wait for the next round; the rest are written"

    restored = {k: js(v) for k, v in table.items()}
    b, acks_b = stage(restored, checkpoint_s=3600.0), Acks()
    batch(b, acks_b, second)  # the record not acknowledged, read again
    asyncio.run(b.checkpoint_round())
    assert table_states(restored) == plain_run([first, second])


def test_a_state_whose_findings_are_in_flight_waits_as_dirty_whatever_else_is_pending():
    """One device's findings are being delivered (``sending``) while another's wait to be taken (``pending``): a
    write of the first is refused and it stays dirty, so the next round or the delivery's ``save`` writes it."""
    table: dict = {}
    det, acks = stage(table), Acks()
    sending = batch(det, acks, pit_rise("sc", 40.0), deliver=False)  # taken for delivery, not yet delivered
    det.run_decoded(decode_batch([pit_rise("sd", 40.0)]))  # another finding, not yet taken
    assert sending == {"sc/jc-01"} and det.pending == {"sd/jc-01"}
    assert det._checkpoint(["sc/jc-01", "sd/jc-01"]) == 0 and table == {}
    assert {"sc/jc-01", "sd/jc-01"} <= det.dirty
    det.save(det.take_pending() | sending)  # both delivered
    assert {b"sc/jc-01", b"sd/jc-01"} <= table.keys() and not det.dirty
