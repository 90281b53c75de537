"""The generator's peak RSS is its own, not the peak of the process that started it."""

from __future__ import annotations

import subprocess
import sys

from lkswarm.metrics import peak_rss_mb

PARENT_MB = 300


def test_a_child_reports_its_own_peak_not_its_parents() -> None:
    # Linux carries getrusage's ru_maxrss across exec: a generator started from a 300 MB test runner
    # reported about 300 MB (the hostile-peer test's 253 MB peak in the full suite was the runner's).
    ballast = bytearray(PARENT_MB * 1024 * 1024)
    for offset in range(0, len(ballast), 4096):
        ballast[offset] = 1
    code = "from lkswarm.metrics import peak_rss_mb; print(peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    child_mb = float(out.stdout.strip())
    assert 5 < child_mb < PARENT_MB / 2, child_mb
    assert peak_rss_mb() >= PARENT_MB  # this process's own peak holds the ballast
    del ballast
