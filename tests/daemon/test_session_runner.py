"""The session runner with 2 shards x 2 replicas in threads over an in-memory chain and network.

Real model and data (MiniLM, SST-2, a few steps); what is faked is only the chain and the sockets
(tests/e2e runs the same runner in daemons over anvil and libp2p).
"""

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from node.daemon.ports import Member  # noqa: E402
from node.daemon.session import SessionRunner  # noqa: E402
from node.daemon.state import StateStore  # noqa: E402
from node.job import JobSpec  # noqa: E402

from .fakes import FakeChain, FakeNet, run_runners  # noqa: E402
from .specs import sst2_spec  # noqa: E402


def _spec(agg):
    return JobSpec.from_text(sst2_spec(
        "runner", method="houlsby", config={"bottleneck_size": 8}, layers=[[0, 3], [3, 6]], memory_mb=[256, 256],
        data={"distribution": "dirichlet", "alpha": 1.0},
        training={"rounds": 2, "sync_interval": 2, "batch_size": 4, "micro_batches": 2, "learning_rate": 0.001,
                  "seed": 3, "aggregation": agg}))


def _members(replicas=2):
    return [Member(f"0x{s}{r}", s, r, peer_id=f"peer{s}{r}") for s in range(2) for r in range(replicas)]


def _run(tmp_path, members, chain, net, spec, skip=(), sync_timeout=10.0, replicas=2, **kw):
    return run_runners(SessionRunner, spec, [m for m in members if m.peer_id not in skip], replicas, chain, net,
                       tmp_path, pipeline_timeout=5.0, sync_timeout=sync_timeout, **kw)


@pytest.mark.parametrize("agg", ["fedavg", "median"])
def test_two_by_two_session_agrees_every_round(tmp_path, agg):
    spec = _spec(agg)
    members = _members()
    chain, net = FakeChain(members, 2, 2), FakeNet()
    _run(tmp_path, members, chain, net, spec)
    assert chain.round == {0: 2, 1: 2}
    commits = [t for t in chain.txs if t[1] == "commit"]
    assert len(commits) == 8                                    # 4 nodes x 2 rounds, no duplicate
    for (rnd, shard), by_node in chain.commits.items():
        assert len(set(by_node.values())) == 1                  # replicas computed the same aggregate
        assert chain.finals[(rnd, shard)] in by_node.values()
    for m in members:                                            # every node holds the final adapter
        st = StateStore(tmp_path / m.peer_id)
        assert st.checkpoint(1, 1).adapter_hash == chain.finals[(1, m.shard)]
        assert [r["status"] for r in st.rounds(1)] == ["final", "final"]


@pytest.mark.slow
def test_replica_down_is_left_out_two_of_three_are_a_quorum(tmp_path):
    """Three replicas per shard (the fault-tolerant minimum): with replica 2 down the two others finalize every
    round by their own commits, with no deadline to wait for and no round retried."""
    spec = _spec("fedavg")
    members = _members(3)
    chain, net = FakeChain(members, 2, 3, deadline_s=60.0), FakeNet()
    net.down.update({"peer02", "peer12"})            # replica 2 never comes up
    _run(tmp_path, members, chain, net, spec, skip=("peer02", "peer12"), sync_timeout=1.0, replicas=3)
    assert chain.round == {0: 2, 1: 2}
    assert not any(t[1] == "closeRound" for t in chain.txs)
    st = StateStore(tmp_path / "peer00")
    assert [r["peers_used"] for r in st.rounds(1)] == [2, 2]


@pytest.mark.slow
def test_two_replicas_with_one_down_fail_the_session_cleanly(tmp_path):
    """With two replicas the quorum is both: a dead one can no longer be outvoted by a lone committer (the old
    timeout finalization). The round is retried MAX_EPOCHS times, then the session fails and every runner stops
    with SessionAborted instead of waiting forever."""
    from node.daemon.sync import SessionAborted

    spec = _spec("fedavg")
    members = _members()
    chain, net = FakeChain(members, 2, 2, deadline_s=6.0), FakeNet()  # room for a round's training
    net.down.update({"peer01", "peer11"})
    errors = _run(tmp_path, members, chain, net, spec, skip=("peer01", "peer11"), sync_timeout=0.5,
                  expect=SessionAborted)
    assert chain.failed and chain.finals == {}
    assert sum(t[1] == "closeRound" for t in chain.txs) >= 3  # MAX_EPOCHS closes of one shard's round 0
    assert len(errors) == 2 and all(isinstance(e, SessionAborted) for e in errors)


@pytest.mark.slow
def test_replicas_that_saw_different_updates_converge_on_one_aggregate(tmp_path):
    """peer10 cannot fetch peer11's update: without agreement the two shard-1 replicas would commit
    different aggregates, and with two replicas such a split can never be finalized."""
    spec = _spec("fedavg")
    members = _members()
    chain, net = FakeChain(members, 2, 2, deadline_s=60.0), FakeNet()
    net.blocked.add(("peer10", "peer11"))
    _run(tmp_path, members, chain, net, spec, sync_timeout=3.0)
    assert chain.round == {0: 2, 1: 2}
    for rnd in range(2):
        assert len(set(chain.commits[(rnd, 1)].values())) == 1     # both committed the same hash
    assert not any(t[1] == "closeRound" for t in chain.txs)  # final by the commits themselves
    st = StateStore(tmp_path / "peer11")
    assert [r["peers_used"] for r in st.rounds(1)] == [1, 1]         # both kept only peer10's update
