"""`bsns bench p2p` runs end to end at a small size and rejects bad options (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]  # ~15 s: spawns a receiver process


def test_bench_moves_tensors_over_every_path():
    from coordinator.bench.p2p import run_bench

    rows = run_bench([2], reps=1, wire_dtype=None)
    assert len(rows) == 1 and rows[0]["size_mb"] == 2
    for path in ("tcp", "tcp_keccak", "stream", "stream_blob", "bulk", "bulk_blob"):
        assert rows[0][path] > 0, path


def test_bench_rejects_bad_sizes():
    out = subprocess.run([sys.executable, "-m", "coordinator.cli", "bench", "p2p", "--sizes", "4,x"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip() == "error: --sizes must be comma-separated integers, not '4,x'"
