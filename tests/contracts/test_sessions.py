"""TrainingSessions: open only by governance, capacity-aware assignment, start, commits and finalization
(2/3 of replicas, or of the committers after a timeout), late commits, faults and slashing, completion."""

from __future__ import annotations

import pytest

from tests.support.evm import COMMIT_TIMEOUT, JOIN_WINDOW, SLASH, VOTING_DELAY, VOTING_PERIOD, h, \
    plain, propose_args, register

JOINING, TRAINING, COMPLETED, FAILED = 1, 2, 3, 4
WRONG_HASH, MISSING = 1, 2
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
    r = c.tx(gov.functions.propose(*propose_args(**overrides)), c.accounts[0])
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
        _, shard, replica = ses.functions.assignmentOf(sid, a).call()
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


def test_join_assigns_fitting_shard_with_fewest_replicas(system, nodes, snap):
    c, ses = snap, system.sessions
    sid = open_session(system, nodes)
    assert ses.functions.getSession(sid).call()[9] == JOINING
    got = []
    for a in nodes[:4]:
        r = c.tx(ses.functions.join(sid), a)
        ev = c.events(ses, "Joined", r)[0]
        got.append((ev["shard"], ev["replica"]))
    # 4096 -> shard 0 (tie, lowest index); 1500 fits shard 0 only; then shard 1 twice (fewest replicas)
    assert got == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert plain(ses.functions.assignmentOf(sid, nodes[1]).call()) == [True, 0, 1]
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


def test_two_thirds_finalize_then_late_commit_and_faults(system, nodes, training):
    c, ses, reg = system.chain, system.sessions, system.registry
    sid, shards = training
    a, b, d = shards[0][:3]
    r = commit(system, sid, a, 0, 0, "agg0")
    ev = c.events(ses, "Committed", r)[0]
    assert (ev["node"], ev["round"], ev["shard"], ev["aggregateHash"], ev["localUpdateHash"]) == \
        (a, 0, 0, h("agg0"), h("local" + a))
    assert ses.functions.votesFor(sid, 0, 0, h("agg0")).call() == 1
    assert ses.functions.commitOf(sid, 0, 0, a).call() == h("agg0")
    assert ses.functions.finalHash(sid, 0, 0).call() == b"\x00" * 32
    with c.reverts("RoundNotFinal", 0, 0):
        c.tx(ses.functions.reportFaulty(sid, 0, 0, b), c.accounts[9])
    # the second identical hash is ceil(2*3/3) = 2 votes: final inside this commit
    r = commit(system, sid, b, 0, 0, "agg0")
    fin = c.events(ses, "RoundFinalized", r)[0]
    assert (fin["round"], fin["shard"], fin["aggregateHash"], fin["votes"], fin["commits"]) == (0, 0, h("agg0"), 2, 2)
    assert ses.functions.finalHash(sid, 0, 0).call() == h("agg0")
    assert ses.functions.currentRound(sid, 0).call() == 1 and ses.functions.currentRound(sid, 1).call() == 0
    # d is slow: its late commit for round 0 is recorded (not counted) within the grace
    commit(system, sid, d, 0, 0, "bad0")
    assert ses.functions.commitOf(sid, 0, 0, d).call() == h("bad0")
    assert ses.functions.finalHash(sid, 0, 0).call() == h("agg0")
    # faults: honest nodes are not faulty; d's different hash is, once
    with c.reverts("NotFaulty", 0, 0, a):
        c.tx(ses.functions.reportFaulty(sid, 0, 0, a), c.accounts[9])
    stake_before = reg.functions.eligibility(d).call()[0]
    r = c.tx(ses.functions.reportFaulty(sid, 0, 0, d), c.accounts[9])
    ev = c.events(ses, "FaultReported", r)[0]
    assert (ev["node"], ev["fault"], ev["slashed"], ev["reporter"]) == (d, WRONG_HASH, SLASH, c.accounts[9])
    assert reg.functions.eligibility(d).call()[0] == stake_before - SLASH
    assert ses.functions.faultReported(sid, 0, 0, d).call()
    with c.reverts("AlreadyReported", 0, 0, d):
        c.tx(ses.functions.reportFaulty(sid, 0, 0, d), c.accounts[9])
    with c.reverts("NotAssigned", sid, 1, d):
        c.tx(ses.functions.reportFaulty(sid, 0, 1, d), c.accounts[9])

    # round 1: d is down; a and b finalize; d is reported missing only after the grace
    commit(system, sid, a, 1, 0, "agg1")
    r = commit(system, sid, b, 1, 0, "agg1")
    assert c.events(ses, "ShardCompleted", r)[0]["shard"] == 0
    final_block = r.blockNumber
    with c.reverts("GracePeriod", final_block + COMMIT_TIMEOUT):
        c.tx(ses.functions.reportFaulty(sid, 1, 0, d), c.accounts[9])
    c.mine(final_block + COMMIT_TIMEOUT - c.block)
    with c.reverts("RoundClosed", 1, 0):  # the grace is over for a late commit too
        commit(system, sid, d, 1, 0, "agg1")
    r = c.tx(ses.functions.reportFaulty(sid, 1, 0, d), c.accounts[9])
    assert c.events(ses, "FaultReported", r)[0]["fault"] == MISSING
    with c.reverts("ShardDone", 0):
        commit(system, sid, a, 2, 0, "agg2")


def test_dissenting_first_hash_does_not_block_the_majority(system, nodes, training):
    c, ses = system.chain, system.sessions
    sid, shards = training
    x, y1, y2 = shards[1]
    commit(system, sid, x, 0, 1, "wrong")
    r = commit(system, sid, y1, 0, 1, "right")
    assert not c.events(ses, "RoundFinalized", r)
    assert ses.functions.votesFor(sid, 0, 1, h("wrong")).call() == 1
    assert ses.functions.votesFor(sid, 0, 1, h("right")).call() == 1
    r = commit(system, sid, y2, 0, 1, "right")
    fin = c.events(ses, "RoundFinalized", r)[0]
    assert (fin["aggregateHash"], fin["votes"], fin["commits"]) == (h("right"), 2, 3)
    assert ses.functions.finalHash(sid, 0, 1).call() == h("right")
    r = c.tx(ses.functions.reportFaulty(sid, 0, 1, x), c.accounts[9])
    assert c.events(ses, "FaultReported", r)[0]["fault"] == WRONG_HASH


def test_finalize_after_timeout_uses_the_committers(system, nodes, training):
    c, ses = system.chain, system.sessions
    sid, shards = training
    a, b, d = shards[0][:3]
    with c.reverts("NoCommits", 0, 0):
        c.tx(ses.functions.finalizeAfterTimeout(sid, 0, 0), c.accounts[9])
    with c.reverts("InvalidShard", 2, 2):
        c.tx(ses.functions.finalizeAfterTimeout(sid, 0, 2), c.accounts[9])
    with c.reverts("WrongRound", 0, 0, 1):
        c.tx(ses.functions.finalizeAfterTimeout(sid, 1, 0), c.accounts[9])
    r = commit(system, sid, a, 0, 0, "h1")
    until = r.blockNumber + COMMIT_TIMEOUT
    commit(system, sid, b, 0, 0, "h2")  # a split: 1 vote each, leader h1
    with c.reverts("TimeoutNotReached", until):
        c.tx(ses.functions.finalizeAfterTimeout(sid, 0, 0), c.accounts[9])
    c.mine(until - c.block)
    with c.reverts("NoQuorum", 1, 2):  # ceil(2*2/3) = 2 identical needed among the 2 committers
        c.tx(ses.functions.finalizeAfterTimeout(sid, 0, 0), c.accounts[9])
    # shard 1: one replica committed, the other two are down: after the timeout it is final alone
    e = shards[1][0]
    r = commit(system, sid, e, 0, 1, "solo")
    c.mine(r.blockNumber + COMMIT_TIMEOUT - c.block)
    r = c.tx(ses.functions.finalizeAfterTimeout(sid, 0, 1), c.accounts[9])
    fin = c.events(ses, "RoundFinalized", r)[0]
    assert (fin["aggregateHash"], fin["votes"], fin["commits"]) == (h("solo"), 1, 1)
    assert ses.functions.currentRound(sid, 1).call() == 1
    with c.reverts("WrongRound", 1, 1, 0):
        c.tx(ses.functions.finalizeAfterTimeout(sid, 0, 1), c.accounts[9])


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
    with c.reverts("ShardDone", 1):
        c.tx(ses.functions.finalizeAfterTimeout(sid, 2, 1), c.accounts[9])


def test_quorum_of(system):
    assert [system.sessions.functions.quorumOf(n).call() for n in (1, 2, 3, 4, 5, 6, 7)] == [1, 2, 2, 3, 4, 4, 5]


def test_withdrawn_node_is_recorded_but_not_slashed(system, nodes, training):
    from tests.support.evm import EXIT_DELAY

    c, ses, reg = system.chain, system.sessions, system.registry
    sid, shards = training
    a, b, d = shards[0][:3]
    commit(system, sid, a, 0, 0, "agg")
    commit(system, sid, d, 0, 0, "evil")
    commit(system, sid, b, 0, 0, "agg")
    c.tx(reg.functions.requestExit(), d)
    c.time_travel(EXIT_DELAY + 1)
    c.tx(reg.functions.withdraw(), d)
    assert reg.functions.eligibility(d).call()[0] == 0
    r = c.tx(ses.functions.reportFaulty(sid, 0, 0, d), c.accounts[9])
    ev = c.events(ses, "FaultReported", r)[0]
    assert (ev["fault"], ev["slashed"]) == (WRONG_HASH, 0)
    assert reg.functions.slashedBalance().call() == 0
