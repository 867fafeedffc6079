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
    DEFAULT_ALLOWED_LATENESS_MS,
    pack_device_status,
    pack_readings,
    pack_status,
    unpack_raw,
    partition_of,
    validate_message,
)
from streams.pipeline import Pipeline

log = logging.getLogger("sitewatch.validate")


def validate_envelopes(
    envelopes: list[bytes], partitions: int, now: int | None = None,
    max_age_ms: int = DEFAULT_ALLOWED_LATENESS_MS,
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
            validate_message(topic, payload, now, out, max_age_ms)
    by_partition: dict[int, list[Reading]] = defaultdict(list)
    for r in out.readings:
        by_partition[partition_of(device_key(r.site, r.device).encode(), partitions)].append(r)
    return by_partition, out, rx_max


def allowed_lateness_ms(pipe: Pipeline) -> int:
    """Readings older than this go to the DLQ as ``too_late`` (rules: ``lateness.allowed``)."""
    from sitewatch.rules import load_rules

    if pipe.settings.rules_path is None:
        return DEFAULT_ALLOWED_LATENESS_MS
    lateness = getattr(load_rules(pipe.settings.rules_path), "lateness", None)
    return int(lateness.allowed * 1000) if lateness is not None else DEFAULT_ALLOWED_LATENESS_MS


def register(pipe: Pipeline) -> None:
    s = pipe.settings
    max_age_ms = allowed_lateness_ms(pipe)

    @pipe.app.agent(pipe.raw, name="validate")
    async def validate(stream):
        async for batch in stream.take(s.batch_size, within=s.batch_within_s):
            by_partition, out, rx = validate_envelopes(batch, s.kafka_partitions, max_age_ms=max_age_ms)
            for partition, readings in by_partition.items():
                await pipe.readings.send(value=pack_readings(readings, rx), partition=partition)
            for st in out.statuses:
                await pipe.readings.send(key=device_key(st.site, f"gateway:{st.gateway}").encode(), value=pack_status(st))
            for ds in out.device_statuses:
                await pipe.readings.send(key=device_key(ds.site, ds.device).encode(), value=pack_device_status(ds))
            for rej in out.rejected:
                await pipe.dlq.send(key=rej.topic.encode(), value=rej.to_dlq(rx))
                log.warning("DLQ %s on %r: %s", rej.reason, rej.topic, rej.detail)
            pipe.count("readings_valid", len(out.readings))
            pipe.count("readings_rejected", len(out.rejected))
            pipe.count("readings_too_late", sum(r.reason == "too_late" for r in out.rejected))

