"""Payload fuzzing at the bridge and the validate stage (hypothesis).

``SW_FUZZ_EXAMPLES`` is the total number of generated examples across the fuzz tests (10,000 by default, the CI
share; ``make faults`` runs 100,000). Each test takes its ``share`` of it. Runs are derandomized and keep no
example database, so a CI failure reproduces with the same command.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

TOTAL_EXAMPLES = int(os.environ.get("SW_FUZZ_EXAMPLES", "10000"))
# the suite's per-test timeout (300 s) scaled with the examples: a 100k run is long, not hung
TIMEOUT_S = round(300 * max(1.0, TOTAL_EXAMPLES / 10_000))


def fuzz_settings(weight: float) -> settings:
    """Settings for a test that takes ``weight`` of the total examples."""
    return settings(
        max_examples=max(1, round(TOTAL_EXAMPLES * weight)),
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                               HealthCheck.filter_too_much],
    )
