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
