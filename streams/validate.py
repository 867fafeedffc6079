"""Stage 1: sw.raw → sw.readings (valid, packed per device) + sw.readings.dlq (rejected, with reason)."""

from __future__ import annotations

import logging
from collections import defaultdict

from sitewatch.contracts import (
    Reading,
    Rejected,
    Validated,
    device_key,
    now_ms,
    pack_readings,
    pack_status,
    unpack_raw,
    partition_of,
    validate_message,
)
from streams.app import Pipeline

log = logging.getLogger("sitewatch.validate")


def validate_envelopes(
    envelopes: list[bytes], partitions: int, now: int | None = None
) -> tuple[dict[int, list[Reading]], Validated, int]:
    """Validate a batch of bridge envelopes. Returns readings grouped by the ``sw.readings`` partition their
    device key maps to (one record per partition downstream), the rest, and the latest bridge receive time."""
    now = now if now is not None else now_ms()
    out = Validated()
    rx_max = 0
    for data in envelopes:
        try:
            rx, msgs = unpack_raw(data)
        except (ValueError, KeyError, TypeError) as e:  # not a bridge envelope: keep the bytes anyway
            out.rejected.append(Rejected("bad_envelope", str(e), "", data))
            continue
        rx_max = max(rx_max, rx)
        for topic, payload in msgs:
            validate_message(topic, payload, now, out)
    by_partition: dict[int, list[Reading]] = defaultdict(list)
    for r in out.readings:
        by_partition[partition_of(device_key(r.site, r.device).encode(), partitions)].append(r)
    return by_partition, out, rx_max


def register(pipe: Pipeline) -> None:
    s = pipe.settings

    @pipe.app.agent(pipe.raw, name="validate")
    async def validate(stream):
        async for batch in stream.take(s.batch_size, within=s.batch_within_s):
            by_partition, out, rx = validate_envelopes(batch, s.kafka_partitions)
            for partition, readings in by_partition.items():
                await pipe.readings.send(value=pack_readings(readings, rx), partition=partition)
            for st in out.statuses:
                await pipe.readings.send(key=device_key(st.site, f"gateway:{st.gateway}").encode(), value=pack_status(st))
            for rej in out.rejected:
                await pipe.dlq.send(key=rej.topic.encode(), value=rej.to_dlq(rx))
                log.warning("DLQ %s on %r: %s", rej.reason, rej.topic, rej.detail)
            pipe.count("readings_valid", len(out.readings))
            pipe.count("readings_rejected", len(out.rejected))

