"""The deadman's trust in the wall clock (streams/input_watch.py): paused while Kafka does not answer, resumed
only ``settle_s`` after it answers again — and from a worker's start, which catches up first too."""

from __future__ import annotations

import asyncio

import pytest

from streams.input_watch import BrokerWatch, kafka_probe


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def run(watch: BrokerWatch) -> bool:
    return asyncio.run(watch.trusted())


def test_paused_during_an_outage_and_for_the_settle_time_after_it(caplog):
    clock, up = Clock(), {"ok": True}

    async def probe():
        return up["ok"]

    watch = BrokerWatch(probe, settle_s=30, clock=clock)
    assert not run(watch), "a worker that just started is catching up: no silence yet"
    clock.t += 31
    assert run(watch)
    up["ok"] = False
    for _ in range(3):  # the outage: every tick paused, however long it lasts
        clock.t += 200
        assert not run(watch)
    up["ok"] = True
    clock.t += 5
    assert not run(watch), "just back: the buffered readings are not in yet"
    clock.t += 20
    assert not run(watch)
    clock.t += 10
    assert run(watch)
    assert sum("paused" in r.message for r in caplog.records) == 1, "one log line per outage, not per tick"
    assert any("resumed" in r.message for r in caplog.records)


def test_settle_zero_trusts_at_once_when_reachable():
    async def probe():
        return True

    assert run(BrokerWatch(probe, settle_s=0, clock=Clock()))


@pytest.mark.timeout(30)
def test_kafka_probe_says_unreachable_for_a_closed_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there

    async def twice():
        probe = kafka_probe(f"127.0.0.1:{port}", {}, timeout_s=1.0)
        return await probe(), await probe()

    assert asyncio.run(twice()) == (False, False)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_kafka_probe_answers_for_a_live_broker(tansu):
    async def twice():
        probe = kafka_probe(tansu, {}, timeout_s=3.0)
        return await probe(), await probe()

    assert asyncio.run(twice()) == (True, True)


def test_a_stalled_stage_pauses_the_silence_checks_until_it_moves_again(caplog):
    """Records waiting and none taken: the stage, not the fleet, has stopped (a worker once called 100 healthy
    devices silent so)."""
    from streams.input_watch import StallWatch

    clock, lag, done = Clock(), {"n": 0}, {"n": 0}
    watch = StallWatch(lambda: lag["n"], lambda: done["n"], stall_s=10, settle_s=30, clock=clock)
    clock.t += 60
    assert watch.trusted(), "nothing waiting: a quiet fleet is a quiet fleet"
    lag["n"], done["n"] = 500, 100  # busy and moving
    clock.t += 5
    assert watch.trusted()
    clock.t += 5
    assert watch.trusted(), "waiting for less than stall_s since it last moved"
    clock.t += 6
    assert not watch.trusted(), "500 records waiting, none taken for 11 s"
    clock.t += 600
    assert not watch.trusted(), "however long it lasts"
    done["n"] = 600  # moving again: catching up on what waited
    clock.t += 5
    assert not watch.trusted(), "the readings that waited are not all in yet"
    clock.t += 30
    done["n"], lag["n"] = 900, 20
    assert watch.trusted()
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "stalled" in r.message]
    assert len(errors) == 1, "one error per stall, not per tick"


def test_readings_lag_counts_what_the_stage_has_not_taken():
    """High watermark minus Faust's read offset, over the assigned sw.readings partitions only (the fetch
    position is not it: a fetch that ran ahead of the stream must count)."""
    from types import SimpleNamespace

    from faust.types import TP

    from streams.detect import readings_lag

    read = {TP("sw.readings", 0): 46, TP("sw.readings", 1): None, TP("sw.raw", 0): 3}
    ends = {TP("sw.readings", 0): 255, TP("sw.readings", 1): 12, TP("sw.raw", 0): 900}
    pipe = SimpleNamespace(app=SimpleNamespace(
        consumer=SimpleNamespace(_read_offset=read, highwater=ends.get),
        assignor=SimpleNamespace(assigned_actives=lambda: set(ends))))
    assert readings_lag(pipe) == (255 - 1 - 46) + 12  # offsets 47..254 of p0, all 12 of p1 (nothing read yet)
    pipe.app.consumer = None  # no consumer yet (starting): nothing known to wait
    assert readings_lag(pipe) == 0
