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
    validate_message,
)
from streams.app import Pipeline

log = logging.getLogger("sitewatch.validate")


def validate_envelopes(envelopes: list[bytes], now: int | None = None) -> tuple[dict[str, list[Reading]], Validated, int]:
    """Validate a batch of bridge envelopes. Returns readings grouped by device key, the rest, and latest rx."""
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
    by_device: dict[str, list[Reading]] = defaultdict(list)
    for r in out.readings:
        by_device[device_key(r.site, r.device)].append(r)
    return by_device, out, rx_max


def register(pipe: Pipeline) -> None:
    s = pipe.settings

    @pipe.app.agent(pipe.raw, name="validate")
    async def validate(stream):
        async for batch in stream.take(s.batch_size, within=s.batch_within_s):
            by_device, out, rx = validate_envelopes(batch)
            for key, readings in by_device.items():
                await pipe.readings.send(key=key.encode(), value=pack_readings(readings, rx))
            for st in out.statuses:
                await pipe.readings.send(key=device_key(st.site, f"gateway:{st.gateway}").encode(), value=pack_status(st))
            for rej in out.rejected:
                await pipe.dlq.send(key=rej.topic.encode(), value=rej.to_dlq(rx))
                log.warning("DLQ %s on %r: %s", rej.reason, rej.topic, rej.detail)
            pipe.count("readings_valid", len(out.readings))
            pipe.count("readings_rejected", len(out.rejected))

