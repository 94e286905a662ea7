"""FineTuneGovernance: proposal validation, who may vote and when, tally, states, execute once, cancel."""

from __future__ import annotations

import pytest

from node.vocab import JOB_MAX, Aggregation, ServerUpdate

from tests.support.evm import (DEPOSIT, MIN_STAKE, PEER_ID, QUORUM_BPS, VOTING_DELAY, VOTING_PERIOD, as_tuple, deploy_system, h,
                       job_params, plain, propose_args, register, SPEC_TOML)

PENDING, ACTIVE, CANCELED, DEFEATED, SUCCEEDED, EXECUTED = range(6)


def propose(system, sender=None, **overrides):
    c = system.chain
    r = c.tx(system.governance.functions.propose(*propose_args(**overrides)), sender or c.accounts[0], value=DEPOSIT)
    (ev,) = c.events(system.governance, "ProposalCreated", r)
    return ev["proposalId"], r


def vote(system, pid, voter, support=True):
    return system.chain.tx(system.governance.functions.castVote(pid, support), voter)


def open_voting(system, pid):
    """Mine until views see the proposal Active (views run at the latest block, transactions in the next)."""
    c = system.chain
    created = system.governance.functions.proposalInfo(pid).call()[1]
    c.mine(max(0, created + VOTING_DELAY + 1 - c.block))


def end_voting(system, pid):
    c = system.chain
    end = system.governance.functions.proposalInfo(pid).call()[3]
    c.mine(max(0, end - c.block + 1))


@pytest.fixture
def voters(system, snap):
    nodes = snap.accounts[1:5]
    for a in nodes:
        register(system, a)
    return nodes


def test_propose_stores_params_and_snapshots_eligible_weight(system, voters):
    c, gov = system.chain, system.governance
    pid, r = propose(system, sender=c.accounts[9])
    assert pid == 1 and gov.functions.proposalCount().call() == 1
    params = gov.functions.getParams(pid).call()
    assert plain(params) == plain(list(job_params().values()))
    proposer, created, start, end, eligible, quorum, session = gov.functions.proposalInfo(pid).call()
    assert (proposer, created, start, end) == (c.accounts[9], r.blockNumber, r.blockNumber + VOTING_DELAY,
                                               r.blockNumber + VOTING_DELAY + VOTING_PERIOD)
    assert eligible == 4 and quorum == 2 and session == 0  # 50% of 4 nodes
    ev = c.events(gov, "ProposalCreated", r)[0]
    assert ev["specHash"] == job_params()["specHash"] and ev["eligibleWeight"] == 4
    (spec,) = c.events(gov, "ProposalSpec", r)
    assert (spec["proposalId"], spec["specToml"]) == (pid, SPEC_TOML)  # the whole spec, readable from the chain
    assert gov.functions.state(pid).call() == PENDING


def test_registrant_in_the_creation_block_is_not_counted_nor_eligible(system, voters):
    c, gov = system.chain, system.governance
    late = c.accounts[6]
    c.tester.disable_auto_mine_transactions()
    try:
        system.registry.functions.register(PEER_ID, "/a", 100, 0, 0).transact(
            {"from": late, "value": MIN_STAKE, "gas": 600_000})
        h = gov.functions.propose(*propose_args()).transact({"from": c.accounts[0], "gas": 2_000_000, "value": DEPOSIT})
        c.mine()
    finally:
        c.tester.enable_auto_mine_transactions()
    r = c.w3.eth.get_transaction_receipt(h)
    assert r.status == 1
    assert system.registry.functions.registeredAtBlock(late).call() == r.blockNumber
    assert gov.functions.proposalInfo(1).call()[4] == 4  # the four registered earlier, not the fifth
    open_voting(system, 1)
    with c.reverts("NotEligible", late, 1):
        vote(system, 1, late)
    assert not gov.functions.canVote(1, late).call()
    assert gov.functions.canVote(1, voters[0]).call()


def test_vote_window_membership_and_once_each(system, voters):
    c, gov = system.chain, system.governance
    pid, _ = propose(system)
    vote_start = gov.functions.proposalInfo(pid).call()[2]
    with c.reverts("VotingNotStarted", pid, vote_start + 1):  # Pending, not closed: votes count from the next block
        vote(system, pid, voters[0])                            # (this one lands in the last block of the delay)
    open_voting(system, pid)
    assert gov.functions.state(pid).call() == ACTIVE
    with c.reverts("NotEligible", c.accounts[7], pid):  # never registered
        vote(system, pid, c.accounts[7])
    register(system, c.accounts[8])  # registered after the proposal: a late registrant
    with c.reverts("NotEligible", c.accounts[8], pid):
        vote(system, pid, c.accounts[8])
    c.tx(system.registry.functions.requestExit(), voters[3])  # an exiting node no longer votes
    with c.reverts("NotEligible", voters[3], pid):
        vote(system, pid, voters[3])

    r = vote(system, pid, voters[0], True)
    ev = c.events(gov, "VoteCast", r)[0]
    assert (ev["voter"], ev["proposalId"], ev["support"], ev["weight"]) == (voters[0], pid, True, 1)
    with c.reverts("AlreadyVoted", voters[0], pid):
        vote(system, pid, voters[0], False)
    vote(system, pid, voters[1], False)
    assert list(gov.functions.proposalVotes(pid).call()) == [1, 1]
    assert gov.functions.receiptOf(pid, voters[0]).call() == 2
    assert gov.functions.receiptOf(pid, voters[1]).call() == 1
    assert gov.functions.hasVoted(pid, voters[1]).call() and not gov.functions.hasVoted(pid, voters[2]).call()
    end_voting(system, pid)
    with c.reverts("VotingClosed", pid, DEFEATED):  # 1 for of 2 cast is below the 60% threshold
        vote(system, pid, voters[2])
    with c.reverts("UnknownProposal", 99):
        vote(system, 99, voters[2])
    with c.reverts("UnknownProposal", 99):
        gov.functions.state(99).call()


def test_last_block_of_the_window_still_counts(system, voters):
    c, gov = system.chain, system.governance
    pid, _ = propose(system)
    end = gov.functions.proposalInfo(pid).call()[3]
    c.mine(end - c.block - 1)  # the next transaction lands in block `end`
    r = vote(system, pid, voters[0])
    assert r.blockNumber == end
    with c.reverts("VotingClosed", pid, DEFEATED):  # one block later; 1 vote is below the quorum of 2
        vote(system, pid, voters[1])


@pytest.mark.parametrize("votes,expected", [
    ((True,), DEFEATED),  # 1 of 4 voted: below the 50% quorum
    ((True, False, False), DEFEATED),  # quorum, but 33% for < 60% threshold
    ((True, True, False), SUCCEEDED),  # 67% for
    ((False, False), DEFEATED),  # quorum with no vote for
])
def test_outcome_follows_quorum_and_threshold(system, voters, votes, expected):
    gov = system.governance
    pid, _ = propose(system)
    open_voting(system, pid)
    for a, support in zip(voters, votes):
        vote(system, pid, a, support)
    assert gov.functions.state(pid).call() == ACTIVE
    end_voting(system, pid)
    assert gov.functions.state(pid).call() == expected


def test_execute_opens_a_session_once(system, voters):
    c, gov, ses = system.chain, system.governance, system.sessions
    pid, _ = propose(system)
    with c.reverts("NotSucceeded", pid, PENDING):
        c.tx(gov.functions.execute(pid), c.accounts[0])
    open_voting(system, pid)
    for a in voters[:3]:
        vote(system, pid, a)
    with c.reverts("NotSucceeded", pid, ACTIVE):
        c.tx(gov.functions.execute(pid), c.accounts[0])
    end_voting(system, pid)
    r = c.tx(gov.functions.execute(pid), c.accounts[9])
    ev = c.events(gov, "ProposalExecuted", r)[0]
    sid = ev["sessionId"]
    assert sid == 1 and gov.functions.proposalInfo(pid).call()[6] == sid
    assert gov.functions.state(pid).call() == EXECUTED
    s = ses.functions.getSession(sid).call()
    assert s[0] == pid and s[4] == 2 and s[8] == job_params()["rounds"] and s[6] == job_params()["minReplicas"]
    assert ses.functions.sessionOfProposal(pid).call() == sid
    with c.reverts("NotSucceeded", pid, EXECUTED):
        c.tx(gov.functions.execute(pid), c.accounts[0])
    assert ses.functions.sessionCount().call() == 1


def test_defeated_proposal_cannot_execute(system, voters):
    c, gov = system.chain, system.governance
    pid, _ = propose(system)
    end_voting(system, pid)
    with c.reverts("NotSucceeded", pid, DEFEATED):
        c.tx(gov.functions.execute(pid), c.accounts[0])


def test_cancel_by_proposer_only_before_the_end(system, voters):
    c, gov = system.chain, system.governance
    proposer = c.accounts[9]
    pid, _ = propose(system, sender=proposer)
    with c.reverts("NotProposer", c.accounts[0], proposer):
        c.tx(gov.functions.cancel(pid), c.accounts[0])
    r = c.tx(gov.functions.cancel(pid), proposer)
    assert c.events(gov, "ProposalCanceled", r)[0]["proposalId"] == pid
    assert gov.functions.state(pid).call() == CANCELED
    open_voting(system, pid)
    with c.reverts("VotingClosed", pid, CANCELED):
        vote(system, pid, voters[0])
    with c.reverts("CannotCancel", pid, CANCELED):
        c.tx(gov.functions.cancel(pid), proposer)
    with c.reverts("NotSucceeded", pid, CANCELED):
        c.tx(gov.functions.execute(pid), proposer)
    # an Active proposal can be canceled; an ended one cannot
    pid2, _ = propose(system, sender=proposer)
    open_voting(system, pid2)
    vote(system, pid2, voters[0])
    c.tx(gov.functions.cancel(pid2), proposer)
    pid3, _ = propose(system, sender=proposer)
    end_voting(system, pid3)
    with c.reverts("CannotCancel", pid3, DEFEATED):
        c.tx(gov.functions.cancel(pid3), proposer)


BAD_PARAMS = [
    ("baseModel", {"baseModel": ""}),
    ("baseModel", {"baseModel": "x" * 257}),
    ("baseModelHash", {"baseModelHash": b"\x00" * 32}),
    ("dataset", {"dataset": ""}),
    ("datasetHash", {"datasetHash": b"\x00" * 32}),
    ("task", {"task": ""}),
    ("method", {"method": ""}),
    ("methodConfigHash", {"methodConfigHash": b"\x00" * 32}),
    ("layerBounds", {"layerBounds": [0], "shardMemoryMB": []}),
    ("layerBounds", {"layerBounds": [1, 3, 6]}),
    ("layerBounds", {"layerBounds": [0, 3, 3]}),
    ("layerBounds", {"layerBounds": list(range(66)), "shardMemoryMB": [1] * 65}),
    ("shardMemoryMB", {"shardMemoryMB": [1000]}),
    ("shardMemoryMB", {"shardMemoryMB": [1000, 0]}),
    ("distribution", {"distribution": 3}),
    ("distributionParam", {"distribution": 1, "distributionParam": 0}),
    ("syncInterval", {"syncInterval": 0}),
    ("rounds", {"rounds": 0}),
    ("aggregation", {"aggregation": len(Aggregation)}),  # the first code past the word list
    ("serverUpdate", {"serverUpdate": len(ServerUpdate)}),
    ("minReplicas", {"minReplicas": 0}),
    ("minReplicas", {"minReplicas": 1025}),
    ("learningRateE9", {"learningRateE9": 0}),
    # over node.vocab.JOB_MAX, which the spec validator applies: a proposal sent around the validator
    ("rounds", {"rounds": JOB_MAX["rounds"] + 1}),
    ("syncInterval", {"syncInterval": JOB_MAX["syncInterval"] + 1}),
    ("learningRateE9", {"learningRateE9": JOB_MAX["learningRateE9"] + 1}),
    ("seed", {"seed": JOB_MAX["seed"] + 1}),
    ("specHash", {"specHash": b"\x00" * 32}),
]


def test_propose_refuses_each_bad_field_by_name(system, voters):
    c, gov = system.chain, system.governance
    for field, bad in BAD_PARAMS:
        with c.reverts("InvalidParam", field):
            gov.functions.propose(*propose_args(**bad)).call({"from": c.accounts[0], "value": DEPOSIT})
    # the boundary values are accepted: 64 shards, iid with no parameter
    ok = job_params(layerBounds=list(range(65)), shardMemoryMB=[1] * 64, distribution=0, distributionParam=0,
                    **JOB_MAX)  # and every JOB_MAX bound itself
    assert gov.functions.propose(as_tuple(ok), SPEC_TOML).call({"from": c.accounts[0], "value": DEPOSIT}) == 1
    assert gov.functions.proposalCount().call() == 0  # nothing was stored by the refusals


def test_propose_checks_the_spec_text_against_its_hash(system, voters):
    c, gov = system.chain, system.governance
    tampered = SPEC_TOML.replace("sst2", "imdb")
    with c.reverts("SpecHashMismatch", job_params()["specHash"], h(tampered)):
        gov.functions.propose(*propose_args(spec=tampered)).call({"from": c.accounts[0], "value": DEPOSIT})
    with c.reverts("InvalidParam", "specToml"):
        gov.functions.propose(*propose_args(spec="")).call({"from": c.accounts[0], "value": DEPOSIT})
    big = "#" * 32_769
    with c.reverts("InvalidParam", "specToml"):
        gov.functions.propose(*propose_args(spec=big, specHash=h(big))).call({"from": c.accounts[0], "value": DEPOSIT})


def test_propose_needs_eligible_voters(chain, system, snap):
    with chain.reverts("NoEligibleVoters"):
        propose(system)


def test_constructor_rejects_bad_config(system, snap):
    c = snap
    reg, ses = system.registry.address, system.sessions.address
    for args, field in [((reg, ses, 0, 0, 5000, 5000, False, DEPOSIT), "votingPeriodBlocks"),
                        ((reg, ses, 0, 5, 10001, 5000, False, DEPOSIT), "quorumBps"),
                        ((reg, ses, 0, 5, 5000, 0, False, DEPOSIT), "thresholdBps"),
                        (("0x" + "00" * 20, ses, 0, 5, 5000, 5000, False, DEPOSIT), "registry"),
                        # free proposals only on the dev chain (31337); eth-tester's chain is another
                        ((reg, ses, 0, 5, 5000, 5000, False, 0), "proposalDeposit")]:
        with c.reverts("InvalidConfig", field):
            c.deploy("FineTuneGovernance", *args)


def test_stake_weighted_votes(chain):
    c = chain
    sid = c.tester.take_snapshot()
    try:
        s = deploy_system(c, weight_by_stake=True, quorum_bps=QUORUM_BPS, threshold_bps=5000)
        whale, a, b = c.accounts[1:4]
        register(s, whale, stake=5 * MIN_STAKE)
        register(s, a)
        register(s, b)
        pid, _ = propose(s)
        assert plain(s.governance.functions.proposalInfo(pid).call()[4:6]) == [7 * MIN_STAKE, 7 * MIN_STAKE // 2]
        open_voting(s, pid)
        r = vote(s, pid, a, True)
        assert c.events(s.governance, "VoteCast", r)[0]["weight"] == MIN_STAKE
        vote(s, pid, b, True)
        vote(s, pid, whale, False)
        assert list(s.governance.functions.proposalVotes(pid).call()) == [2 * MIN_STAKE, 5 * MIN_STAKE]
        end_voting(s, pid)
        # two nodes for, but the stake against outweighs them
        assert s.governance.functions.state(pid).call() == DEFEATED
    finally:
        c.tester.revert_to_snapshot(sid)


# -- the proposal deposit -----------------------------------------------------------------------------

def test_propose_takes_exactly_the_deposit(system, voters):
    c, gov = system.chain, system.governance
    assert gov.functions.proposalDeposit().call() == DEPOSIT
    for sent in (0, DEPOSIT - 1, DEPOSIT + 1):  # free, short, and overpaid (the surplus would be stuck)
        with c.reverts("WrongDeposit", sent, DEPOSIT):
            gov.functions.propose(*propose_args()).call({"from": c.accounts[0], "value": sent})
    pid, _ = propose(system)
    assert gov.functions.depositOf(pid).call() == DEPOSIT == c.w3.eth.get_balance(gov.address)


def _settle(system, pid, caller=None):
    c, gov = system.chain, system.governance
    return c.tx(gov.functions.settleDeposit(pid), caller or c.accounts[0])


def test_spam_nobody_votes_on_forfeits_its_deposit(system, voters):
    """The attack deposits answer: proposals that cost nothing flood the voters. One nobody votes on pays."""
    c, gov = system.chain, system.governance
    spammer = c.accounts[9]
    pid, _ = propose(system, sender=spammer)
    with c.reverts("DepositNotSettleable", pid, PENDING):  # not before the vote is over
        _settle(system, pid, spammer)
    open_voting(system, pid)
    with c.reverts("DepositNotSettleable", pid, ACTIVE):
        _settle(system, pid, spammer)
    vote(system, pid, voters[0], True)  # one of four votes: the quorum is two
    end_voting(system, pid)
    before = c.w3.eth.get_balance(spammer)
    r = _settle(system, pid)
    assert c.events(gov, "DepositForfeited", r) == [{"proposalId": pid, "amount": DEPOSIT}]
    assert c.w3.eth.get_balance(spammer) == before  # nothing back
    assert gov.functions.forfeitedDeposits().call() == DEPOSIT == c.w3.eth.get_balance(gov.address)
    assert gov.functions.depositOf(pid).call() == 0
    with c.reverts("NoDeposit", pid):  # once only
        _settle(system, pid, spammer)


def test_a_proposal_that_reaches_quorum_gets_its_deposit_back_whatever_the_outcome(system, voters):
    c, gov = system.chain, system.governance
    proposer = c.accounts[9]
    passed, _ = propose(system, sender=proposer)
    rejected, _ = propose(system, sender=proposer)
    open_voting(system, rejected)
    for v in voters[:2]:
        vote(system, passed, v, True)
        vote(system, rejected, v, False)  # quorum reached, threshold not: Defeated, but it was considered
    end_voting(system, rejected)
    c.tx(gov.functions.execute(passed), c.accounts[0])
    assert [gov.functions.state(p).call() for p in (passed, rejected)] == [EXECUTED, DEFEATED]
    before = c.w3.eth.get_balance(proposer)
    for pid in (passed, rejected):  # anyone may settle; the deposit goes to the proposer
        r = _settle(system, pid)
        assert c.events(gov, "DepositReturned", r) == [{"proposalId": pid, "proposer": proposer, "amount": DEPOSIT}]
    assert c.w3.eth.get_balance(proposer) == before + 2 * DEPOSIT
    assert c.w3.eth.get_balance(gov.address) == 0 and gov.functions.forfeitedDeposits().call() == 0


def test_a_canceled_proposal_forfeits_its_deposit_even_with_votes(system, voters):
    """Propose, gather a quorum, cancel before the end: still no refund (cancel is not a free way out)."""
    c, gov = system.chain, system.governance
    proposer = c.accounts[9]
    pid, _ = propose(system, sender=proposer)
    open_voting(system, pid)
    for v in voters:
        vote(system, pid, v, True)
    c.tx(gov.functions.cancel(pid), proposer)
    r = _settle(system, pid)
    assert c.events(gov, "DepositForfeited", r) == [{"proposalId": pid, "amount": DEPOSIT}]


def test_a_zero_quorum_still_needs_a_vote_to_return_the_deposit(chain):
    c = chain
    sid = c.tester.take_snapshot()
    try:
        s = deploy_system(c, quorum_bps=0)
        register(s, c.accounts[1])
        pid, _ = propose(s)
        end_voting(s, pid)
        r = _settle(s, pid)
        assert c.events(s.governance, "DepositForfeited", r) == [{"proposalId": pid, "amount": DEPOSIT}]
    finally:
        c.tester.revert_to_snapshot(sid)
