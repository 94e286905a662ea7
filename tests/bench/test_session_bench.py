"""`bsns bench session` at a tiny size: it runs the pipeline over libp2p between two processes and the
local baseline, and reports the sync traffic of an adapter against the full model (no timing asserted)."""

import pytest

pytestmark = pytest.mark.slow


def test_bench_session_runs_and_reports_both_sides():
    from coordinator.bench.session import run_bench

    r = run_bench(steps=1, warmup=0, batch_size=4, max_seq_len=16, micro_batches=2, threads=1)
    assert r["pipeline_step_s"] > 0 and r["local_step_s_1t"] > 0
    assert r["activation_bytes_per_step"] > 0
    # what one sync moves is the shard's adapter (canonical bytes, fetched and verified), not the model
    assert r["sync_bytes_per_peer"] >= r["adapter_bytes"] > 0
    assert r["sync_bytes_per_node_per_round"] < 0.02 * r["fedavg_bytes_per_node_per_round"]
