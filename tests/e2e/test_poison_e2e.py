"""End to end with a poisoning replica: anvil, the contracts, three daemons over libp2p, one of them hostile
(tests/e2e/poison_node.py: a NaN update in round 0, a sign-flipped x10 one in round 1, each announced with 10^15
samples). One shard x three replicas, geometric median.

The session completes; both honest daemons log the poisoner's update as refused, with its reason, in every round;
and every round's final hash on chain is exactly the screened aggregate of the two honest updates weighted by the
partition (recomputed here from their blobs): the poisoner had no influence at all, which bounds the published
adapter's accuracy by the clean run of the same honest updates (a margin of zero).
"""

import shutil
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.anvil]

TRAIN_LIMIT = 160
ROUNDS = 2
POISONER = 2  # node index started with tests/e2e/poison_node.py


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from coordinator.cluster import Cluster
    from coordinator.demo import demo_spec_text

    if shutil.which("node") is None:
        pytest.skip("node.js is not installed")

    class HostileCluster(Cluster):
        def entry(self, p):
            if p.index == POISONER:
                return [sys.executable, str(Path(__file__).with_name("poison_node.py"))]
            return super().entry(p)

    wd = tmp_path_factory.mktemp("poison")
    spec_text = demo_spec_text(rounds=ROUNDS, sync_interval=4, batch_size=8, max_seq_len=16, micro_batches=1,
                               validation_size=64, bottleneck=8, layers=[[0, 6]], min_replicas=3,
                               aggregation="geometric-median")
    with HostileCluster(wd, nodes=3, train_limit=TRAIN_LIMIT, pipeline_timeout_s=30, sync_timeout_s=15) as cl:
        cl.wait_registered(240)
        spec, pid = cl.propose(spec_text)
        sid = cl.wait_for("the session to open", lambda: cl.session_of(pid), 180)
        cl.wait_for("the session to complete", lambda: int(cl.sessions.get_session(sid).state) == 3, 500, poll=1)
        cl.wait_for("the adapter to be published", lambda: cl.adapters.adapter_of_session(sid), 120)
        yield {"cl": cl, "spec": spec, "sid": sid}


def test_poisoned_updates_are_refused_by_every_honest_replica(finished):
    from tests.e2e.fedpeat_cluster import daemon_events

    cl, sid = finished["cl"], finished["sid"]
    bad = cl.sessions.assignment_of(sid, cl.procs[POISONER].address).replica
    for p in cl.procs:
        if p.index == POISONER:
            continue
        refused = {e["round"]: e["reason"] for e in daemon_events(p, "update_refused", sid) if e["replica"] == bad}
        assert sorted(refused) == list(range(ROUNDS)), (p.index, refused)
        assert refused[0].startswith("non-finite") and refused[1].startswith(("norm", "direction")), refused
        others = [e for e in daemon_events(p, "update_refused", sid) if e["replica"] != bad]
        assert others == [], others                                     # no honest update refused


def test_each_final_is_the_honest_updates_aggregate(finished):
    """Recomputed from the honest daemons' own blobs: final(r) = screened_aggregate(honest updates of r, final(r-1))."""
    from node.daemon.session import replica_counts
    from node.daemon.state import StateStore
    from node.hashing import keccak_hex
    from node.train.adapter_state import canonical_bytes
    from node.train.aggregate import rule_for
    from node.train.build import build_model
    from node.train.screen import screened_aggregate
    from node.tuners import adapter_state_dict

    cl, sid, spec = finished["cl"], finished["sid"], finished["spec"]
    honest = [p for p in cl.procs if p.index != POISONER]
    reps = {p.index: cl.sessions.assignment_of(sid, p.address).replica for p in honest}
    counts = replica_counts(spec, 3, TRAIN_LIMIT)
    stores = {p.index: StateStore(p.data_dir) for p in honest}
    start = canonical_bytes(adapter_state_dict(build_model(spec, 0, 6)))   # the seeded initial adapter
    for rnd in range(ROUNDS):
        blobs = {}
        for p in honest:
            (row,) = cl.node_rows(p, "SELECT local_hash FROM rounds WHERE session_id=? AND round=?", (sid, rnd))
            blobs[reps[p.index]] = stores[p.index].get_blob(row["local_hash"])
        want, refused = screened_aggregate(blobs, start, rule_for(spec.training), counts.__getitem__)
        assert refused == {}
        final = cl.sessions.final_hash(sid, rnd, 0)
        assert final == keccak_hex(want), f"round {rnd}: the poisoner moved the aggregate"
        start = stores[honest[0].index].get_blob(final)
    for st in stores.values():
        st.close()
