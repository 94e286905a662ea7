"""TrainingSessions: open only by governance, capacity-aware assignment, start, commits and finalization
(2/3 of the shard's replicas), deadlines from the round's start, retries in new epochs and the abort, late commits,
provable faults and slashing, stake locks and their release, completion. The attacks of issue 11 on the old rules
(a lone committer finalized after a timeout, stalled rounds, stake withdrawn mid-session) are replayed here."""

from __future__ import annotations

import pytest

from tests.support.evm import COMMIT_TIMEOUT, DEPOSIT, EXIT_DELAY, JOIN_WINDOW, MIN_STAKE, SLASH, VOTING_DELAY, \
    VOTING_PERIOD, h, plain, propose_args, register

JOINING, TRAINING, COMPLETED, FAILED = 1, 2, 3, 4
WRONG_HASH, MISSING = 1, 2
MAX_EPOCHS = 3
# memory of nodes 1..7; shards need [1000, 2000]
MEMORY = [4096, 1500, 4096, 4096, 4096, 4096, 4096]


@pytest.fixture(scope="module")
def nodes(chain, system):
    accts = chain.accounts[1:8]
    for a, mem in zip(accts, MEMORY):
        register(system, a, memory_mb=mem)
    return accts


def open_session(system, nodes, **overrides) -> int:
    """Propose, pass and execute a job; return its session id (in the Joining state)."""
    c, gov = system.chain, system.governance
    r = c.tx(gov.functions.propose(*propose_args(**overrides)), c.accounts[0], value=DEPOSIT)
    pid = c.events(gov, "ProposalCreated", r)[0]["proposalId"]
    c.mine(VOTING_DELAY)
    for a in nodes[:4]:
        c.tx(gov.functions.castVote(pid, True), a)
    c.mine(VOTING_PERIOD)
    r = c.tx(gov.functions.execute(pid), c.accounts[0])
    return c.events(gov, "ProposalExecuted", r)[0]["sessionId"]


def join_all(system, sid, members):
    for a in members:
        system.chain.tx(system.sessions.functions.join(sid), a)


def start(system, sid):
    c = system.chain
    deadline = system.sessions.functions.getSession(sid).call()[2]
    c.mine(max(0, deadline - c.block))
    return c.tx(system.sessions.functions.start(sid), c.accounts[0])


def commit(system, sid, node, rnd, shard, agg, local="local"):
    return system.chain.tx(system.sessions.functions.commit(sid, rnd, shard, h(agg), h(local + node)), node)


@pytest.fixture
def training(system, nodes, snap):
    """A started session: 2 shards x 3 replicas (nodes 1..6), node 7 a spare replica of shard 0, 2 rounds."""
    sid = open_session(system, nodes, minReplicas=3)
    join_all(system, sid, nodes)
    start(system, sid)
    ses = system.sessions
    by_shard = {0: [], 1: []}
    for a in nodes:
        _, shard, replica, *_ = ses.functions.assignmentOf(sid, a).call()
        by_shard[shard].append((replica, a))
    return sid, {s: [a for _, a in sorted(v)] for s, v in by_shard.items()}


def test_only_governance_opens_and_governance_is_set_once(system, nodes, snap):
    c, ses = snap, system.sessions
    with c.reverts("NotGovernance", c.accounts[0]):
        c.tx(ses.functions.openSession(1, [100], 1, 1), c.accounts[0])
    with c.reverts("GovernanceAlreadySet", system.governance.address):
        c.tx(ses.functions.setGovernance(c.accounts[1]), system.owner)
    with c.reverts("OwnableUnauthorizedAccount", c.accounts[1]):
        c.tx(ses.functions.setGovernance(c.accounts[1]), c.accounts[1])
    # a fresh sessions contract whose governance is an EOA: openSession's own checks
    fresh = c.deploy("TrainingSessions", system.registry.address, JOIN_WINDOW, COMMIT_TIMEOUT, SLASH)
    gov = c.accounts[9]
    c.tx(fresh.functions.setGovernance(gov), c.accounts[0])
    for args, field in [((1, [], 1, 1), "shardMemoryMB"), ((1, [100] * 65, 1, 1), "shardMemoryMB"),
                        ((1, [100, 0], 1, 1), "shardMemoryMB"), ((1, [100], 0, 1), "rounds"),
                        ((1, [100], 1, 0), "minReplicas")]:
        with c.reverts("InvalidSession", field):
            c.tx(fresh.functions.openSession(*args), gov)
    r = c.tx(fresh.functions.openSession(7, [100], 1, 1), gov)
    assert c.events(fresh, "SessionOpened", r)[0]["joinDeadline"] == r.blockNumber + JOIN_WINDOW
    with c.reverts("SessionAlreadyOpen", 7, 1):
        c.tx(fresh.functions.openSession(7, [100], 1, 1), gov)
    with c.reverts("InvalidSession", "joinWindowBlocks"):
        c.deploy("TrainingSessions", system.registry.address, 0, COMMIT_TIMEOUT, SLASH)
    # windows are bounded so that deadlines always fit their uint40 fields
    with c.reverts("InvalidSession", "commitTimeoutBlocks"):
        c.deploy("TrainingSessions", system.registry.address, JOIN_WINDOW, 2**32, SLASH)
    with c.reverts("InvalidSession", "joinWindowBlocks"):
        c.deploy("TrainingSessions", system.registry.address, 2**32, COMMIT_TIMEOUT, SLASH)


def test_join_assigns_fitting_shard_with_fewest_replicas(system, nodes, snap):
    c, ses = snap, system.sessions
    sid = open_session(system, nodes)
    assert ses.functions.getSession(sid).call()[9] == JOINING
    got = []
    for a in nodes[:4]:
        r = c.tx(ses.functions.join(sid), a)
        ev = c.events(ses, "Joined", r)[0]
        got.append((ev["shard"], ev["replica"]))
    # joining locked each member's stake: it can neither leave nor withdraw while the session is open
    assert system.registry.functions.locksOf(nodes[0]).call() == 1
    with c.reverts("StakeLocked", nodes[0], 1):
        c.tx(system.registry.functions.requestExit(), nodes[0])
    # 4096 -> shard 0 (tie, lowest index); 1500 fits shard 0 only; then shard 1 twice (fewest replicas)
    assert got == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert plain(ses.functions.assignmentOf(sid, nodes[1]).call()) == [True, 0, 1, False, False]
    assert ses.functions.memberAt(sid, 1, 1).call() == nodes[3]
    assert ses.functions.memberAt(sid, 1, 2).call() == "0x" + "00" * 20
    assert plain(ses.functions.getShard(sid, 1).call())[:2] == [2000, 2]
    with c.reverts("AlreadyJoined", sid, nodes[0]):
        c.tx(ses.functions.join(sid), nodes[0])
    with c.reverts("NodeNotActive", c.accounts[9]):
        c.tx(ses.functions.join(sid), c.accounts[9])
    small = c.accounts[8]
    register(system, small, memory_mb=500)
    with c.reverts("NoShardFits", 500):
        c.tx(ses.functions.join(sid), small)
    with c.reverts("UnknownSession", 42):
        c.tx(ses.functions.join(42), nodes[4])
    deadline = ses.functions.getSession(sid).call()[2]
    c.mine(deadline - c.block)
    with c.reverts("JoinWindowClosed", sid, deadline):
        c.tx(ses.functions.join(sid), nodes[4])


@pytest.mark.slow
def test_start_fixes_complete_replicas_or_fails(system, nodes, snap):
    c, ses = snap, system.sessions
    sid = open_session(system, nodes, minReplicas=2)
    for a in nodes[:5]:  # shard 0 gets 3 (incl. the 1500 MB node), shard 1 gets 2
        c.tx(ses.functions.join(sid), a)
    deadline = ses.functions.getSession(sid).call()[2]
    with c.reverts("JoinWindowOpen", sid, deadline):
        c.tx(ses.functions.start(sid), c.accounts[0])
    r = start(system, sid)
    assert c.events(ses, "SessionStarted", r)[0]["replicas"] == 2
    s = ses.functions.getSession(sid).call()
    assert s[9] == TRAINING and s[5] == 2 and s[3] == r.blockNumber
    assert ses.functions.replicas(sid).call() == 2
    with c.reverts("WrongSessionState", sid, TRAINING):
        c.tx(ses.functions.start(sid), c.accounts[0])
    with c.reverts("WrongSessionState", sid, TRAINING):
        c.tx(ses.functions.join(sid), nodes[6])

    sid2 = open_session(system, nodes, minReplicas=3)
    for a in nodes[:5]:
        c.tx(ses.functions.join(sid2), a)
    r = start(system, sid2)
    ev = c.events(ses, "SessionFailed", r)[0]
    assert (ev["replicas"], ev["minReplicas"]) == (2, 3)
    assert ses.functions.getSession(sid2).call()[9] == FAILED
    with c.reverts("WrongSessionState", sid2, FAILED):
        commit(system, sid2, nodes[0], 0, 0, "agg")


def test_commit_refusals(system, nodes, training):
    c, ses = system.chain, system.sessions
    sid, shards = training
    a0, b0 = shards[0][0], shards[1][0]
    spare = shards[0][3]
    with c.reverts("InvalidHash"):
        c.tx(ses.functions.commit(sid, 0, 0, b"\x00" * 32, h("x")), a0)
    with c.reverts("NotAssigned", sid, 1, a0):  # wrong shard
        commit(system, sid, a0, 0, 1, "agg")
    with c.reverts("NotAssigned", sid, 0, c.accounts[9]):  # not a member
        commit(system, sid, c.accounts[9], 0, 0, "agg")
    with c.reverts("SpareReplica", sid, 3, 3):
        commit(system, sid, spare, 0, 0, "agg")
    with c.reverts("WrongRound", 0, 0, 1):  # a future round
        commit(system, sid, a0, 1, 0, "agg")
    commit(system, sid, a0, 0, 0, "agg")
    with c.reverts("AlreadyCommitted", 0, 0, a0):
        commit(system, sid, a0, 0, 0, "other")
    with c.reverts("NotAssigned", sid, 0, b0):
        commit(system, sid, b0, 0, 0, "agg")


def test_deadline_counts_from_the_round_start_not_the_first_commit(system, nodes, training):
    c, ses = system.chain, system.sessions
    sid, shards = training
    a, b, d = shards[0][:3]
    start_block = ses.functions.getSession(sid).call()[3]
    deadline = start_block + COMMIT_TIMEOUT
    assert ses.functions.roundDeadline(sid, 0).call() == deadline
    assert plain(ses.functions.getShard(sid, 0).call())[5] == start_block  # roundStart
    c.mine(deadline - c.block - 1)
    commit(system, sid, a, 0, 0, "agg")  # mined in the deadline block: accepted
    with c.reverts("CommitDeadlinePassed", deadline):
        commit(system, sid, b, 0, 0, "agg")  # a late first commit does not move the deadline


def test_two_thirds_of_replicas_finalize_then_late_commit_and_faults(system, nodes, training):
    c, ses, reg = system.chain, system.sessions, system.registry
    sid, shards = training
    a, b, d = shards[0][:3]
    r = commit(system, sid, a, 0, 0, "agg0")
    ev = c.events(ses, "Committed", r)[0]
    assert (ev["node"], ev["round"], ev["shard"], ev["aggregateHash"], ev["localUpdateHash"], ev["epoch"]) == \
        (a, 0, 0, h("agg0"), h("local" + a), 0)
    assert ses.functions.votesFor(sid, 0, 0, h("agg0")).call() == 1
    assert ses.functions.commitOf(sid, 0, 0, a).call() == h("agg0")
    assert ses.functions.finalHash(sid, 0, 0).call() == b"\x00" * 32
    with c.reverts("TimeoutNotReached"):  # b has until the deadline: not provably missing yet
        c.tx(ses.functions.reportFaulty(sid, 0, 0, 0, b), c.accounts[9])
    # the second identical hash is ceil(2*3/3) = 2 of the 3 replicas: final inside this commit
    r = commit(system, sid, b, 0, 0, "agg0")
    fin = c.events(ses, "RoundFinalized", r)[0]
    assert (fin["round"], fin["shard"], fin["aggregateHash"], fin["votes"], fin["commits"], fin["epoch"]) == \
        (0, 0, h("agg0"), 2, 2, 0)
    round0_deadline = ses.functions.getSession(sid).call()[3] + COMMIT_TIMEOUT
    assert plain(ses.functions.finalEpoch(sid, 0, 0).call()) == [0, round0_deadline]
    assert ses.functions.finalHash(sid, 0, 0).call() == h("agg0")
    assert ses.functions.currentRound(sid, 0).call() == 1 and ses.functions.currentRound(sid, 1).call() == 0
    # round 1 starts now: its deadline counts from this block
    assert ses.functions.roundDeadline(sid, 0).call() == r.blockNumber + COMMIT_TIMEOUT
    # d is slow: its late commit for round 0 is recorded (not counted) until round 0's deadline
    commit(system, sid, d, 0, 0, "bad0")
    assert ses.functions.commitOf(sid, 0, 0, d).call() == h("bad0")
    assert ses.functions.finalHash(sid, 0, 0).call() == h("agg0")
    # faults: honest nodes are not faulty; d's different hash is, once
    with c.reverts("NotFaulty", 0, 0, a):
        c.tx(ses.functions.reportFaulty(sid, 0, 0, 0, a), c.accounts[9])
    with c.reverts("InvalidEpoch", 0, 1):
        c.tx(ses.functions.reportFaulty(sid, 0, 1, 0, a), c.accounts[9])
    stake_before = reg.functions.eligibility(d).call()[0]
    r = c.tx(ses.functions.reportFaulty(sid, 0, 0, 0, d), c.accounts[9])
    ev = c.events(ses, "FaultReported", r)[0]
    assert (ev["node"], ev["fault"], ev["slashed"], ev["reporter"], ev["epoch"]) == \
        (d, WRONG_HASH, SLASH, c.accounts[9], 0)
    assert reg.functions.eligibility(d).call()[0] == stake_before - SLASH
    assert ses.functions.faultReported(sid, 0, 0, 0, d).call()
    with c.reverts("AlreadyReported", 0, 0, d):
        c.tx(ses.functions.reportFaulty(sid, 0, 0, 0, d), c.accounts[9])
    with c.reverts("NotAssigned", sid, 1, d):
        c.tx(ses.functions.reportFaulty(sid, 0, 0, 1, d), c.accounts[9])

    # round 1: d is down; a and b finalize; d is reported missing only after round 1's deadline
    commit(system, sid, a, 1, 0, "agg1")
    r = commit(system, sid, b, 1, 0, "agg1")
    assert c.events(ses, "ShardCompleted", r)[0]["shard"] == 0
    _, deadline1 = ses.functions.finalEpoch(sid, 1, 0).call()
    with c.reverts("TimeoutNotReached", deadline1):
        c.tx(ses.functions.reportFaulty(sid, 1, 0, 0, d), c.accounts[9])
    c.mine(deadline1 - c.block)
    with c.reverts("NodeBarred", d):  # its slash left d below the minimum stake
        commit(system, sid, d, 1, 0, "agg1")
    with c.reverts("RoundClosed", 0, 0):  # round 0's deadline is over for a late commit
        commit(system, sid, a, 0, 0, "agg0")
    r = c.tx(ses.functions.reportFaulty(sid, 1, 0, 0, d), c.accounts[9])
    assert c.events(ses, "FaultReported", r)[0]["fault"] == MISSING
    with c.reverts("ShardDone", 0):
        commit(system, sid, a, 2, 0, "agg2")


def test_a_lone_garbage_commit_never_finalizes_and_the_honest_are_never_slashed(system, nodes, training):
    """Issue 11's first attack: the Byzantine replica commits garbage at once. Under the old rule it was final
    after the timeout (2/3 of the commits made) and the honest replicas were then slashed for WrongHash."""
    c, ses, reg = system.chain, system.sessions, system.registry
    sid, shards = training
    byz, h1, h2 = shards[0][:3]
    commit(system, sid, byz, 0, 0, "garbage")
    c.mine(ses.functions.roundDeadline(sid, 0).call() - c.block)
    with c.reverts("CommitDeadlinePassed"):
        commit(system, sid, h1, 0, 0, "honest")
    assert ses.functions.finalHash(sid, 0, 0).call() == b"\x00" * 32  # 1 of 3 is no quorum, at any time
    r = c.tx(ses.functions.closeRound(sid, 0, 0), c.accounts[9])
    ev = c.events(ses, "RoundRetried", r)[0]
    assert (ev["round"], ev["shard"], ev["epoch"], ev["deadline"]) == (0, 0, 1, r.blockNumber + COMMIT_TIMEOUT)
    # epoch 0 is closed: the honest replicas that did not commit in it are missing (a provable fault), the
    # garbage commit in an epoch that reached no quorum proves nothing
    with c.reverts("NotFaulty", 0, 0, byz):
        c.tx(ses.functions.reportFaulty(sid, 0, 0, 0, byz), c.accounts[9])
    # epoch 1: garbage first again, then the honest result from both honest replicas
    commit(system, sid, byz, 0, 0, "garbage")
    commit(system, sid, h1, 0, 0, "honest")
    r = commit(system, sid, h2, 0, 0, "honest")
    fin = c.events(ses, "RoundFinalized", r)[0]
    assert (fin["aggregateHash"], fin["votes"], fin["commits"], fin["epoch"]) == (h("honest"), 2, 3, 1)
    assert ses.functions.finalHash(sid, 0, 0).call() == h("honest")
    assert ses.functions.commitAt(sid, 0, 0, 0, byz).call() == h("garbage")
    assert ses.functions.commitOf(sid, 0, 0, h1).call() == h("honest")
    for honest in (h1, h2):
        with c.reverts("NotFaulty", 0, 0, honest):
            c.tx(ses.functions.reportFaulty(sid, 0, 1, 0, honest), c.accounts[9])
    before = [reg.functions.eligibility(x).call()[0] for x in (h1, h2)]
    r = c.tx(ses.functions.reportFaulty(sid, 0, 1, 0, byz), c.accounts[9])
    assert c.events(ses, "FaultReported", r)[0]["fault"] == WRONG_HASH
    assert [reg.functions.eligibility(x).call()[0] for x in (h1, h2)] == before


def test_splits_and_silence_retry_then_abort_and_release_the_stakes(system, nodes, training):
    """Issue 11's second attack: a 3-way split (or a round nobody commits) used to stall forever. Every round
    now ends within MAX_EPOCHS * (COMMIT_TIMEOUT + 1) blocks of its start: final, retried or aborted."""
    c, ses, reg = system.chain, system.sessions, system.registry
    sid, shards = training
    a, b, d = shards[0][:3]
    t0 = ses.functions.getSession(sid).call()[3]
    with c.reverts("TimeoutNotReached", t0 + COMMIT_TIMEOUT):
        c.tx(ses.functions.closeRound(sid, 0, 0), c.accounts[9])
    with c.reverts("WrongRound", 0, 0, 1):
        c.tx(ses.functions.closeRound(sid, 1, 0), c.accounts[9])
    with c.reverts("InvalidShard", 2, 2):
        c.tx(ses.functions.closeRound(sid, 0, 2), c.accounts[9])
    for epoch in range(MAX_EPOCHS):
        if epoch == 0:  # a 3-way split
            for node, label in ((a, "x"), (b, "y"), (d, "z")):
                commit(system, sid, node, 0, 0, label)
        c.mine(ses.functions.roundDeadline(sid, 0).call() - c.block)
        r = c.tx(ses.functions.closeRound(sid, 0, 0), c.accounts[9])
        if epoch < MAX_EPOCHS - 1:
            assert c.events(ses, "RoundRetried", r)[0]["epoch"] == epoch + 1
    ev = c.events(ses, "SessionAborted", r)[0]
    assert (ev["sessionId"], ev["round"], ev["shard"]) == (sid, 0, 0)
    assert r.blockNumber <= t0 + MAX_EPOCHS * (COMMIT_TIMEOUT + 1)
    assert ses.functions.getSession(sid).call()[9] == FAILED
    assert plain(ses.functions.getShard(sid, 1).call())[10] is True  # every shard stops
    with c.reverts("WrongSessionState", sid, FAILED):
        commit(system, sid, shards[1][0], 0, 1, "late")
    with c.reverts("WrongSessionState", sid, FAILED):
        c.tx(ses.functions.closeRound(sid, 0, 0), c.accounts[9])
    # a split epoch proves nothing; silent epochs are provable
    with c.reverts("NotFaulty", 0, 0, a):
        c.tx(ses.functions.reportFaulty(sid, 0, 0, 0, a), c.accounts[9])
    r = c.tx(ses.functions.reportFaulty(sid, 0, 2, 0, a), c.accounts[9])
    assert c.events(ses, "FaultReported", r)[0]["fault"] == MISSING
    # the stakes come back: each member releases its lock, then may exit and withdraw
    member = shards[1][0]
    assert reg.functions.locksOf(member).call() == 1
    r = c.tx(ses.functions.release(sid), member)
    assert c.events(ses, "Released", r)[0]["node"] == member
    assert reg.functions.locksOf(member).call() == 0
    assert plain(ses.functions.assignmentOf(sid, member).call())[3:] == [True, False]
    with c.reverts("AlreadyReleased", sid, member):
        c.tx(ses.functions.release(sid), member)
    with c.reverts("NotAssigned", sid, 0, c.accounts[9]):
        c.tx(ses.functions.release(sid), c.accounts[9])
    c.tx(reg.functions.requestExit(), member)
    c.time_travel(EXIT_DELAY + 1)
    r = c.tx(reg.functions.withdraw(), member)
    assert c.events(reg, "Withdrawn", r)[0]["amount"] == MIN_STAKE


def test_close_round_refusals_once_final_or_done(system, nodes, training):
    c, ses = system.chain, system.sessions
    sid, shards = training
    a, b = shards[0][:2]
    commit(system, sid, a, 0, 0, "agg")
    commit(system, sid, b, 0, 0, "agg")
    c.mine(COMMIT_TIMEOUT + 1)
    with c.reverts("WrongRound", 0, 1, 0):  # round 0 is final: nothing to close
        c.tx(ses.functions.closeRound(sid, 0, 0), c.accounts[9])


def test_stake_is_at_risk_while_a_member(system, nodes, training):
    """Issue 11's third attack: a member could exit, withdraw and keep committing with zero stake; slashed
    nodes kept counting. Now the stake is locked, and a node slashed below the minimum is barred."""
    c, ses, reg = system.chain, system.sessions, system.registry
    sid, shards = training
    a, b, d = shards[0][:3]
    spare = shards[0][3]
    with c.reverts("StakeLocked", d, 1):
        c.tx(reg.functions.requestExit(), d)
    with c.reverts("NotReleasable", sid, TRAINING):
        c.tx(ses.functions.release(sid), d)
    # a spare replica takes no part in rounds: it may take its stake back at once
    c.tx(ses.functions.release(sid), spare)
    assert reg.functions.locksOf(spare).call() == 0
    # d misses round 0 and is slashed: 1 ETH - SLASH < minimum stake, so it is deactivated and barred
    commit(system, sid, a, 0, 0, "agg")
    commit(system, sid, b, 0, 0, "agg")
    c.mine(ses.functions.finalEpoch(sid, 0, 0).call()[1] - c.block)
    c.tx(ses.functions.reportFaulty(sid, 0, 0, 0, d), c.accounts[9])
    assert ses.functions.isBarred(sid, d).call()
    assert reg.functions.eligibility(d).call()[2] == 2  # Exiting
    with c.reverts("NodeBarred", d):
        commit(system, sid, d, 1, 0, "agg1")
    # its remaining stake stays locked (slashable) until the session ended and it released it
    c.time_travel(EXIT_DELAY + 1)
    with c.reverts("StakeLocked", d, 1):
        c.tx(reg.functions.withdraw(), d)
    for rnd_epoch in range(MAX_EPOCHS):  # shard 1 is silent: the session aborts
        c.mine(max(0, ses.functions.roundDeadline(sid, 1).call() - c.block))
        c.tx(ses.functions.closeRound(sid, 0, 1), c.accounts[9])
    assert ses.functions.getSession(sid).call()[9] == FAILED
    c.tx(ses.functions.release(sid), d)
    r = c.tx(reg.functions.withdraw(), d)
    assert c.events(reg, "Withdrawn", r)[0]["amount"] == MIN_STAKE - SLASH


def test_session_completes_when_every_shard_finishes(system, nodes, training):
    c, ses = system.chain, system.sessions
    sid, shards = training
    r = None
    for rnd in range(2):
        for shard in (0, 1):
            for node in shards[shard][:2]:
                r = commit(system, sid, node, rnd, shard, f"agg{rnd}{shard}")
    assert c.events(ses, "SessionCompleted", r)[0]["sessionId"] == sid
    s = ses.functions.getSession(sid).call()
    assert s[9] == COMPLETED and s[7] == 2
    assert [ses.functions.finalHash(sid, 1, k).call() for k in (0, 1)] == [h("agg10"), h("agg11")]
    with c.reverts("WrongSessionState", sid, COMPLETED):
        c.tx(ses.functions.start(sid), c.accounts[9])
    with c.reverts("WrongSessionState", sid, COMPLETED):
        c.tx(ses.functions.closeRound(sid, 2, 1), c.accounts[9])
    for node in shards[0] + shards[1]:
        c.tx(ses.functions.release(sid), node)
        assert system.registry.functions.locksOf(node).call() == 0


def test_quorum_of(system):
    assert [system.sessions.functions.quorumOf(n).call() for n in (1, 2, 3, 4, 5, 6, 7)] == [1, 2, 2, 3, 4, 4, 5]


def test_commit_gas_stays_under_60k(system, nodes, snap):
    """A one-shard session of 4 replicas (quorum 3): the first and an agreeing non-final commit."""
    c, ses = snap, system.sessions
    sid = open_session(system, nodes, layerBounds=[0, 6], shardMemoryMB=[1000], minReplicas=4)
    join_all(system, sid, nodes[:4])
    start(system, sid)
    members = [ses.functions.memberAt(sid, 0, i).call() for i in range(4)]
    first = commit(system, sid, members[0], 0, 0, "agg").gasUsed
    agree = commit(system, sid, members[1], 0, 0, "agg").gasUsed
    assert first < 60_000 and agree < 60_000, (first, agree)


def test_a_node_slashed_elsewhere_is_barred_here_by_anyone(system, nodes, snap):
    """Slashed and deactivated in one session, a node stops counting in its other sessions too: anyone may bar
    it there (the flag lives in its assignment slot, which commit reads anyway: no extra gas per commit)."""
    c, ses, reg = snap, system.sessions, system.registry
    one = dict(layerBounds=[0, 6], shardMemoryMB=[1000], minReplicas=3)
    s1 = open_session(system, nodes, **one)
    join_all(system, s1, nodes[:3])
    s2 = open_session(system, nodes, **one)
    join_all(system, s2, nodes[:3])
    assert reg.functions.locksOf(nodes[0]).call() == 2
    c.mine(ses.functions.getSession(s2).call()[2] - c.block)
    for sid in (s1, s2):
        c.tx(ses.functions.start(sid), c.accounts[0])
    x, y, d = (ses.functions.memberAt(s1, 0, i).call() for i in range(3))
    with c.reverts("NotBarrable", d):
        c.tx(ses.functions.bar(s2, d), c.accounts[9])
    commit(system, s1, x, 0, 0, "agg")
    commit(system, s1, y, 0, 0, "agg")
    commit(system, s1, d, 0, 0, "evil")
    c.tx(ses.functions.reportFaulty(s1, 0, 0, 0, d), c.accounts[9])
    assert ses.functions.isBarred(s1, d).call() and not ses.functions.isBarred(s2, d).call()
    r = c.tx(ses.functions.bar(s2, d), c.accounts[9])
    assert c.events(ses, "Barred", r)[0]["node"] == d
    with c.reverts("NodeBarred", d):
        commit(system, s2, d, 0, 0, "agg")
    with c.reverts("NotBarrable", d):
        c.tx(ses.functions.bar(s2, d), c.accounts[9])


def test_an_abort_by_another_shard_never_makes_an_honest_replica_missing(system, nodes, training):
    """Shard 0 runs out of epochs while shard 1's current epoch is still open: shard 1's replicas lose the rest
    of their window, so not committing in it proves nothing (their earlier, fully elapsed epochs still do)."""
    c, ses = system.chain, system.sessions
    sid, shards = training

    def close(shard):
        c.mine(max(0, ses.functions.roundDeadline(sid, shard).call() - c.block))
        return c.tx(ses.functions.closeRound(sid, 0, shard), c.accounts[9])

    close(0), close(1)          # both to epoch 1; shard 1's epoch starts a block later
    close(0), close(1)          # both to epoch 2; again shard 1 one block later
    r = close(0)                # shard 0 is out of epochs: abort, one block before shard 1's deadline
    assert c.events(ses, "SessionAborted", r)[0]["shard"] == 0
    assert ses.functions.roundDeadline(sid, 1).call() >= r.blockNumber
    c.mine(ses.functions.roundDeadline(sid, 1).call() - c.block + 1)
    honest = shards[1][0]
    with c.reverts("NotFaulty", 0, 1, honest):
        c.tx(ses.functions.reportFaulty(sid, 0, 2, 1, honest), c.accounts[9])
    r = c.tx(ses.functions.reportFaulty(sid, 0, 1, 1, honest), c.accounts[9])  # epoch 1 ran to its deadline
    assert c.events(ses, "FaultReported", r)[0]["fault"] == MISSING
    r = c.tx(ses.functions.reportFaulty(sid, 0, 2, 0, shards[0][0]), c.accounts[9])  # the aborting shard's
    assert c.events(ses, "FaultReported", r)[0]["fault"] == MISSING


def test_an_abort_never_makes_a_slow_replica_of_a_finalized_round_missing(system, nodes, training):
    """Shard 1 finalizes round 0 without its slow third replica, whose late window (until round 0's deadline)
    is then cut by shard 0's abort: that replica is not Missing for round 0."""
    c, ses = system.chain, system.sessions
    sid, shards = training
    for epoch in range(MAX_EPOCHS - 1):
        c.mine(max(0, ses.functions.roundDeadline(sid, 0).call() - c.block))
        c.tx(ses.functions.closeRound(sid, 0, 0), c.accounts[9])
    # shard 1 runs its own round-0 epochs until its last one, then finalizes it early in that epoch
    for epoch in range(MAX_EPOCHS - 1):
        c.mine(max(0, ses.functions.roundDeadline(sid, 1).call() - c.block))
        c.tx(ses.functions.closeRound(sid, 0, 1), c.accounts[9])
    x, y, slow = shards[1][:3]
    commit(system, sid, x, 0, 1, "agg")
    commit(system, sid, y, 0, 1, "agg")
    _, late_until = ses.functions.finalEpoch(sid, 0, 1).call()
    c.mine(max(0, ses.functions.roundDeadline(sid, 0).call() - c.block))
    r = c.tx(ses.functions.closeRound(sid, 0, 0), c.accounts[9])  # shard 0 out of epochs: abort
    assert c.events(ses, "SessionAborted", r) and r.blockNumber <= late_until
    c.mine(max(0, late_until - c.block + 1))
    with c.reverts("NotFaulty", 0, 1, slow):
        c.tx(ses.functions.reportFaulty(sid, 0, MAX_EPOCHS - 1, 1, slow), c.accounts[9])
