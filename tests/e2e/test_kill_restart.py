"""kill -9 one daemon mid-round and restart it: the session still finishes, nothing finalized is lost,
no nonce is used twice and no commit is sent twice, and the restarted daemon's replica rejoins the round in
progress: the aggregate of the round it was killed in holds its replica's updates in both shards (its pipeline
neighbour saw it leave and started the round again with it; the other replicas waited for it). The victim is a
first stage: its neighbour waits on a receive, which before issue 16 item 5 lasted the whole pipeline timeout
(the replica then lost every remaining round). Two shards x two replicas, the daemon's own timeouts (pipeline
60 s, sync 45 s), real parts throughout."""

import shutil
import signal
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.anvil]


def test_sigkill_mid_round_then_restart(tmp_path):
    from coordinator.cluster import Cluster
    from coordinator.demo import demo_spec_text

    if shutil.which("node") is None:
        pytest.skip("node.js is not installed")
    spec_text = demo_spec_text(rounds=3, sync_interval=8, batch_size=8, max_seq_len=16, micro_batches=2,
                               validation_size=32, bottleneck=8)
    with Cluster(tmp_path, nodes=4, train_limit=160, pipeline_timeout_s=60, sync_timeout_s=45,
                 commit_timeout_blocks=180) as cl:
        cl.wait_registered(240)
        spec, pid = cl.propose(spec_text)
        sid = cl.wait_for("the session to open", lambda: cl.session_of(pid), 180)
        cl.wait_for("the session to start", lambda: int(cl.sessions.get_session(sid).state) >= 2, 120)
        victim = next(p for p in cl.procs
                      if (lambda a: a.shard == 0 and a.replica == 1)(cl.sessions.assignment_of(sid, p.address)))

        def mid_round_1():
            rows = cl.node_rows(victim, "SELECT round, step FROM losses WHERE session_id=? ORDER BY step DESC LIMIT 1",
                                (sid,))
            return rows and rows[0]["round"] == 1 and rows[0]["step"] % 8 < 6
        cl.wait_for("the victim to be in the middle of round 1", mid_round_1, 240, poll=0.05)
        final_before = {r: cl.sessions.final_hash(sid, r, 0) for r in range(3)}
        cl.kill_node(victim, signal.SIGKILL)
        txs_before = cl.node_txs(victim)
        time.sleep(2)
        cl.start_node(victim)

        cl.wait_for("the session to complete", lambda: int(cl.sessions.get_session(sid).state) == 3, 480, poll=1)
        cl.wait_for("the adapter to be published", lambda: cl.adapters.adapter_of_session(sid), 120)
        finals = {r: cl.sessions.final_hash(sid, r, 0) for r in range(3)}

        def checkpointed():  # the restarted daemon writes each final adapter before it moves on
            rows = cl.node_rows(victim, "SELECT round, adapter_hash FROM checkpoints WHERE session_id=? AND round >= 0",
                                (sid,))
            return {r["round"]: r["adapter_hash"] for r in rows} if len(rows) == 3 else None
        ckpts = cl.wait_for("the victim to checkpoint every round", checkpointed, 60)
        # the updates each round's final aggregate used, as replica 0 of each shard recorded them
        used = {shard: {r["round"]: r["peers_used"] for r in cl.node_rows(
            cl.member(sid, shard, 0), "SELECT round, peers_used FROM rounds WHERE session_id=?", (sid,))}
            for shard in (0, 1)}

        def settled():  # the journal and the chain agree once nothing is in flight: read both, compare, retry
            txs = cl.node_txs(victim)
            nonce = cl.w3.eth.get_transaction_count(victim.address)
            done = [t for t in txs if t["status"] in ("mined", "failed")]
            pending = [t for t in txs if t["status"] == "pending"]
            return (txs, nonce) if not pending and nonce == len(done) else None
        txs_after, onchain_nonce = cl.wait_for("the victim's journal to match the chain", settled, 60)

    assert final_before[0] is not None and finals[0] == final_before[0]      # round 0 was final before the kill
    assert final_before[1] is None                                            # killed in round 1 ...
    assert used == {0: {0: 2, 1: 2, 2: 2}, 1: {0: 2, 1: 2, 2: 2}}              # ... and no round lost, that one neither
    assert all(finals[r] for r in range(3))
    # nothing finalized is lost: the restarted node holds every final adapter of its shard
    assert ckpts == finals
    # the journal kept growing from where it was: no nonce twice, and the chain used each exactly once
    assert [t["hash"] for t in txs_after[:len(txs_before)]] == [t["hash"] for t in txs_before]
    nonces = [t["nonce"] for t in txs_after]
    assert len(set(nonces)) == len(nonces)
    assert onchain_nonce == len([t for t in txs_after if t["status"] in ("mined", "failed")])
    commits = [t["purpose"] for t in txs_after if t["purpose"].startswith("commit")]
    assert len(set(commits)) == len(commits)
