"""A Byzantine replica at the chain level, through the real parts: anvil, the contracts, two honest daemons as
separate processes and libp2p; the third replica of the one shard is an adversary driven from this test with its
own key (anvil's published dev account 3, local chain only).

The adversary registers, joins (so the shard has three replicas and the quorum is two), commits garbage at the
start of every round before anyone else, tries to leave with its stake mid-session, and tries to publish first
with made-up shard hashes. In round 0 it also binds one local update and signs another (what it would show one
honest peer); a witness submits the signed update and it is slashed and barred, so its round-1 commit is refused
and the round goes on with the two honest replicas. The session must complete with the honest result: every final hash is the one both
honest replicas committed, no honest replica is provably faulty (``reportFaulty`` answers ``NotFaulty``) and
their stakes are untouched, the adversary is slashed (``WrongHash``) and then barred, and the published adapter
carries the final hashes. Under the old rules (deadline from the first commit, 2/3 of the commits made) the lone
garbage commit was final after the timeout and the honest replicas were slashed.
"""

import shutil
import threading
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.anvil]

ROUNDS = 2
ADVERSARY_ACCOUNT = 3  # anvil dev account (published key): the two daemons use 1 and 2
WITNESS_ACCOUNT = 4    # anvil dev account that submits the adversary's equivocation (anyone may)


def _adversary(cl, sid_box, stop, log):
    """Commit garbage at the start of each round; try to exit; publish made-up hashes once it completes."""
    from node.chain.clients import AdapterRecord, NodeRegistryClient, SessionsClient
    from node.chain.clients.adapter_registry import AdapterRegistryClient
    from node.chain.errors import ContractRevert
    from node.chain.keys import dev_key
    from node.chain.sender import TxSender
    from node.hashing import keccak_hex

    from node.chain.updates import UpdateSlot, update_digest

    key = dev_key(ADVERSARY_ACCOUNT, cl.w3.eth.chain_id)
    sender = TxSender(cl.w3, key.private_key, db_path=cl.workdir / "adversary-txs.sqlite")
    d = cl.deployment
    reg = NodeRegistryClient(cl.w3, d.address("NodeRegistry"), sender)
    ses = SessionsClient(cl.w3, d.address("TrainingSessions"), sender)
    witness = SessionsClient(cl.w3, d.address("TrainingSessions"), TxSender(
        cl.w3, dev_key(WITNESS_ACCOUNT, cl.w3.eth.chain_id).private_key, db_path=cl.workdir / "witness-txs.sqlite"))
    ads = AdapterRegistryClient(cl.w3, d.address("AdapterRegistry"), sender)
    reg.register(b"\x00\x25\x08\x02\x12\x21" + b"\x02" * 33, "/ip4/127.0.0.1/tcp/1", 4096, 0, 1, 10**18)
    log.append(("registered", key.address))
    while sid_box.get("sid") is None and not stop.is_set():
        time.sleep(0.2)
    sid = sid_box["sid"]
    ses.join(sid)
    log.append(("joined", sid))
    done = set()
    while not stop.is_set():
        info = ses.get_session(sid)
        if int(info.state) == 2:
            rnd = ses.current_round(sid, 0)
            if rnd < ROUNDS and rnd not in done:
                try:
                    ses.commit(sid, rnd, 0, keccak_hex(f"garbage {rnd}".encode()), keccak_hex(b"nothing"))
                    log.append(("garbage", rnd))
                except ContractRevert as exc:  # barred after its first slash
                    log.append(("refused", rnd, exc.name))
                done.add(rnd)
                try:
                    reg.request_exit()
                    log.append(("exited", rnd))
                except ContractRevert as exc:
                    log.append(("exit refused", exc.name))
                if rnd == 0:
                    # it binds one update and signs another (what it would show one honest peer); a witness
                    # submits the signed update: slashed (after the exit attempt, which needs it Active) and
                    # barred, and round 1 goes on without it
                    slot = UpdateSlot(sender.chain_id, ses.address, sid, 0, 0)
                    ses.bind(sid, 0, 0, update_digest(slot, key.address, bytes.fromhex(keccak_hex(b"bound")[2:])))
                    other = keccak_hex(b"shown to one peer")
                    sig = sender.sign_digest(update_digest(slot, key.address, bytes.fromhex(other[2:])))
                    witness.prove_unbound(sid, 0, 0, key.address, other, sig)
                    log.append(("proven", 0))
        elif int(info.state) == 3:
            spec = cl.gov.get_params(info.proposal_id)
            rec = AdapterRecord(keccak_hex(b"bogus manifest"), spec.base_model, spec.base_model_hash, spec.method,
                                spec.task, (keccak_hex(b"bogus shard"),), sid)
            try:
                ads.publish(rec)
                log.append(("published", sid))
            except ContractRevert as exc:
                log.append(("publish refused", exc.name))
            return
        time.sleep(0.1)


def test_a_byzantine_replica_cannot_decide_a_round_nor_get_the_honest_slashed(tmp_path):
    from coordinator.cluster import Cluster
    from coordinator.demo import demo_spec_text
    from node.chain.clients import Fault
    from node.chain.errors import ContractRevert
    from node.chain.keys import dev_key

    if shutil.which("node") is None:
        pytest.skip("node.js is not installed")
    spec_text = demo_spec_text(rounds=ROUNDS, sync_interval=4, batch_size=8, max_seq_len=16, micro_batches=2,
                               validation_size=32, bottleneck=8, layers=[[0, 6]], min_replicas=3)
    with Cluster(tmp_path, nodes=2, train_limit=64, pipeline_timeout_s=15, sync_timeout_s=4) as cl:
        stop, sid_box, log = threading.Event(), {}, []
        adv = threading.Thread(target=_adversary, args=(cl, sid_box, stop, log), daemon=True)
        adv.start()
        try:
            cl.wait_for("the adversary to register", lambda: ("registered", dev_key(
                ADVERSARY_ACCOUNT, cl.w3.eth.chain_id).address) in log, 60)
            cl.wait_registered(240)
            spec, pid = cl.propose(spec_text)
            sid_box["sid"] = sid = cl.wait_for("the session to open", lambda: cl.session_of(pid), 180, poll=0.2)
            cl.wait_for("the session to complete", lambda: int(cl.sessions.get_session(sid).state) in (3, 4), 600,
                        poll=1)
            aid = cl.wait_for("the adapter to be published", lambda: cl.adapters.adapter_of_session(sid), 180)
            adv.join(timeout=60)
        finally:
            stop.set()
        ses = cl.sessions
        bad = dev_key(ADVERSARY_ACCOUNT, cl.w3.eth.chain_id).address
        honest = [p.address for p in cl.procs]
        assert int(ses.get_session(sid).state) == 3, log
        assert ses.get_session(sid).replicas == 3 and ses.assignment_of(sid, bad).joined
        assert ("garbage", 0) in log and ("exit refused", "StakeLocked") in log, log
        # its equivocation was proven in round 0: barred, its round-1 commit refused, the session went on
        assert ("proven", 0) in log and ses.equivocation_proven(sid, 0, 0, bad), log
        assert ("refused", 1, "NodeBarred") in log, log
        finals = [ses.final_hash(sid, r, 0) for r in range(ROUNDS)]
        for r, fin in enumerate(finals):
            epoch = ses.final_epoch(sid, r, 0)[0]
            assert all(ses.commit_at(sid, r, epoch, 0, h) == fin for h in honest), r   # the honest result
            for h in honest:                                                         # no honest fault
                with pytest.raises(ContractRevert) as e:
                    ses.report_faulty(sid, r, epoch, 0, h)
                assert e.value.name == "NotFaulty"
        # the adversary's garbage differs from a quorum-final hash: provable, slashed, then barred
        epoch0 = ses.final_epoch(sid, 0, 0)[0]
        assert ses.commit_at(sid, 0, epoch0, 0, bad) not in (None, finals[0])
        res = ses.report_faulty(sid, 0, epoch0, 0, bad)
        (ev,) = ses.events("FaultReported", res.receipt)
        assert ev["fault"] == Fault.WRONG_HASH and ev["slashed"] > 0
        assert ses.is_barred(sid, bad)
        for h in honest:
            assert cl.registry.eligibility(h).stake == 10**18
        # the adversary's made-up record was refused; the published one carries the final hashes
        assert ("publish refused", "ShardHashMismatch") in log or ("publish refused", "AlreadyPublished") in log, log
        rec = cl.adapters.get_adapter(aid)
        assert list(rec.record.shard_hashes) == [finals[-1]] and rec.publisher in honest
