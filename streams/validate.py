"""Stage 1: sw.raw → sw.readings (valid, packed per partition) + sw.readings.dlq (rejected, with reason).

A batch of envelopes is validated into columns (``sitewatch.contracts.validate_envelopes``: schema-checked
decoding, no object per reading) and leaves as one ``sw.readings`` record per partition.

``Topic.send`` hands the record to the producer at once (faust-streaming's ``stream_publish_on_commit`` is off),
and Faust commits a batch's offsets without waiting for what the batch produced. So the stage awaits every
delivery of a batch, all together, before it asks for the next one (which is when the batch's offsets become
committable): a worker killed in between re-reads the batch instead of losing its readings.
"""

from __future__ import annotations

import asyncio
import logging

from sitewatch.contracts import (
    DEFAULT_ALLOWED_LATENESS_MS,
    ReadingColumns,
    device_key,
    pack_device_status,
    pack_status,
    validate_envelopes,
)
from streams.pipeline import Pipeline

log = logging.getLogger("sitewatch.validate")


def allowed_lateness_ms(pipe: Pipeline) -> int:
    """Readings older than this go to the DLQ as ``too_late`` (rules: ``lateness.allowed``)."""
    from sitewatch.rules import load_rules

    if pipe.settings.rules_path is None:
        return DEFAULT_ALLOWED_LATENESS_MS
    lateness = getattr(load_rules(pipe.settings.rules_path), "lateness", None)
    return int(lateness.allowed * 1000) if lateness is not None else DEFAULT_ALLOWED_LATENESS_MS


def outgoing(out: ReadingColumns, partitions: int) -> tuple[list[dict], list[dict]]:
    """What a validated batch sends: ``sw.readings`` records (one per partition, then the status records) and
    DLQ records, as keyword arguments of ``Topic.send``."""
    rx = out.rx
    readings = [dict(value=v, partition=p) for p, v in out.by_partition(partitions)]
    readings += [dict(key=device_key(st.site, f"gateway:{st.gateway}").encode(), value=pack_status(st))
                 for st in out.statuses]
    readings += [dict(key=device_key(ds.site, ds.device).encode(), value=pack_device_status(ds))
                 for ds in out.device_statuses]
    dlq = [dict(key=rej.topic.encode(), value=rej.to_dlq(rx)) for rej in out.rejected]
    return readings, dlq


def register(pipe: Pipeline) -> None:
    s = pipe.settings
    max_age_ms = allowed_lateness_ms(pipe)

    @pipe.app.agent(pipe.raw, name="validate")
    async def validate(stream):
        async for batch in stream.take(s.batch_size, within=s.batch_within_s):
            out = validate_envelopes(batch, max_age_ms=max_age_ms)
            readings, dlq = outgoing(out, s.kafka_partitions)
            sent = [await pipe.readings.send(**kw) for kw in readings]
            sent += [await pipe.dlq.send(**kw) for kw in dlq]
            await asyncio.gather(*sent)  # acknowledged by Kafka before this batch's offsets can be committed
            for rej in out.rejected:
                log.warning("DLQ %s on %r: %s", rej.reason, rej.topic, rej.detail)
            pipe.count("readings_valid", len(out))
            pipe.count("readings_rejected", len(out.rejected))
            pipe.count("readings_too_late", sum(r.reason == "too_late" for r in out.rejected))
