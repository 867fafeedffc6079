"""``sitewatch bench``: throughput and latency, measured against a baseline taken in the same run.

- ``bench detect``: the numpy detector engine vs the scalar reference detector on the same readings; state size.
- ``bench deadman``: the deadline index vs a walk over every device.
- ``bench worker``: one worker draining a preloaded ``sw.raw`` vs the bare Faust and kafka-python consumers.
- ``bench pipeline``: end to end on the local stack; ``--load R``: alarm latency percentiles under R readings/s.
- ``bench scale``: 1, 2 … N workers in one group on the same input.
- ``bench chain``: the tamper-evident record's cost: the real worker with the record on vs off (``--components``:
  its parts against the detector engine alone).
- ``bench command``: request → device ack latency of commands vs a plain MQTT round trip.
- ``bench all``: all of them, and the README's benchmark table rewritten from the run.

Numbers are printed, not asserted: speed targets live here, not in timed unit tests.
"""

from __future__ import annotations

import click

from app.bench.all import all_cmd
from app.bench.chain import chain_cmd
from app.bench.command import command_cmd
from app.bench.detect import bench_deadman, bench_detect
from app.bench.pipeline import bench_pipeline
from app.bench.worker import bench_worker


@click.group()
def bench():
    """Measure throughput and latency (each against a baseline measured in the same run)."""


@bench.command("detect")
@click.option("--readings", default=100_000, show_default=True, help="readings per batch")
@click.option("--devices", default=[2_000, 10_000], multiple=True, show_default=True, help="fleet sizes (repeatable)")
@click.option("--repeat", default=7, show_default=True, help="batches to time (median reported)")
def detect_cmd(readings, devices, repeat):
    """Detector engine (numpy batches) vs the scalar reference detector, one core; state per device."""
    bench_detect(readings, devices, repeat)


@bench.command("deadman")
@click.option("--devices", default=100_000, show_default=True, help="devices in the fleet")
@click.option("--silent", default=100, show_default=True, help="devices falling silent at the tick")
@click.option("--repeat", default=5, show_default=True)
def deadman_cmd(devices, silent, repeat):
    """Deadman tick cost at fleet size: the deadline index vs a walk over every device."""
    bench_deadman(devices, silent, repeat)


@bench.command("pipeline")
@click.option("--readings", default=200_000, show_default=True, help="readings to push through")
@click.option("--load", type=int, default=None, help="instead: alarm latency under LOAD background readings/s "
              "(e.g. 10000, the goal's load)")
@click.option("--alarms", default=200, show_default=True, help="with --load: overloads injected under load")
@click.option("--workers", default=1, show_default=True, help="with --load: worker processes in the group")
@click.option("--baseline-src", help="with --load: first the same run with the worker of this source tree")
def pipeline_cmd(readings, load, alarms, workers, baseline_src):
    """End to end on the local stack: gateway frames vs one message per reading, and alert latency; with --load,
    publish → ticket / webhook percentiles under a background load."""
    if load is None:
        bench_pipeline(readings)
    else:
        from app.bench.latency import bench_latency

        bench_latency(load, alarms=alarms, workers=workers, baseline_src=baseline_src)


@bench.command("scale")
@click.option("--readings", default=2_000_000, show_default=True,
              help="preloaded readings per round (rounds under ~5 s measure the 1 s offset commit, not the workers)")
@click.option("--workers", default="1,2,4", show_default=True, help="worker counts, one round each")
@click.option("--partitions", type=int, default=None, help="partitions per topic (default $SW_KAFKA_PARTITIONS)")
def scale_cmd(readings, workers, partitions):
    """Readings/s of 1, 2 … N workers in one group on the same preloaded input, with worker CPU per core."""
    from app.bench.scale import bench_scale

    bench_scale(readings, tuple(int(w) for w in workers.split(",")), partitions)


@bench.command("worker")
@click.option("--readings", default=1_000_000, show_default=True, help="readings in gateway frames (0: skip)")
@click.option("--single-readings", default=200_000, show_default=True, help="one-reading messages (0: skip)")
@click.option("--singles-per-record", default=1, show_default=True, help="one-reading messages per sw.raw record")
@click.option("--profile", help="sample both Faust processes with py-spy (else cProfile), files PREFIX-*.txt")
@click.option("--baseline-src", type=click.Path(exists=True, file_okay=False),
              help="also time the worker of this source tree (e.g. `git archive` of an older commit) on the same data")
@click.option("--repeat", default=1, show_default=True, help="drain the same records N times, interleaved (medians)")
@click.option("--fleet-readings", default=0, show_default=True,
              help="also gateway frames from a large fleet, once (0: skip)")
@click.option("--fleet-per-family", default=100, show_default=True,
              help="devices per family and site of that fleet (100: 25,000 devices on 50 sites)")
def worker_cmd(readings, single_readings, singles_per_record, profile, baseline_src, repeat, fleet_readings,
               fleet_per_family):
    """One worker draining a preloaded sw.raw, beside the bare Faust take() and kafka-python ceilings."""
    bench_worker(readings, single_readings, singles_per_envelope=singles_per_record, profile=profile,
                 baseline_src=baseline_src, repeat=repeat, fleet_readings=fleet_readings,
                 fleet_per_family=fleet_per_family)


bench.add_command(chain_cmd)
bench.add_command(command_cmd)
bench.add_command(all_cmd)

__all__ = ["bench"]
