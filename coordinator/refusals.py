"""What is true when governance refuses a vote or an execution, with the time to wait.

Before a vote the CLI reads the proposal's window with a view call (``vote_not_open``): a vote that would land
before voting opens is not sent, and the user reads ``voting on proposal 1 opens at block 16 (the chain is at
14; about 2 s at 1 s blocks)`` instead of the contract's ``VotingClosed(1, 0)``. Any other refusal comes from the
contract itself (the sender's gas estimate runs the call first, so nothing is sent) and is explained by
``explain_revert``: the contract's answer, then what is true, built from the error's arguments and fresh views
(``FineTuneGovernance reverted: NotSucceeded(1, 1): proposal 1 can be executed once its vote ends with block 36
(...)``). The messages are the ``*_message`` functions, keyed by error name, so the error the contract is to get
(``VotingNotStarted(id, startsAt)``) already has its own.
"""

from __future__ import annotations

from node.chain.clients import ProposalState
from node.chain.errors import ContractRevert
from node.errors import BsnsError


class GovernanceRefusal(BsnsError):
    """A governance action that the contract would refuse now; the message says why and what to do."""


# -- the messages ------------------------------------------------------------------------------------

def voting_opens_message(pid: int, opens_at: int, clock) -> str:
    return (f"voting on proposal {pid} opens at block {opens_at} (the chain is at {clock.head}; "
            f"{clock.wait(opens_at - clock.head)})")


def voting_closed_message(pid: int, gov, clock) -> str:
    st, info = gov.state(pid), gov.proposal_info(pid)
    if st == ProposalState.CANCELED:
        return f"proposal {pid} was canceled"
    if st in (ProposalState.PENDING, ProposalState.ACTIVE):  # the last block of the vote is the chain's head
        f, a = gov.proposal_votes(pid)
        return (f"voting on proposal {pid} ends with block {info.vote_end}, the chain's head: a vote sent now "
                f"lands too late ({f} for, {a} against)")
    return f"voting on proposal {pid} closed at block {info.vote_end} (the chain is at {clock.head}): " \
           f"{outcome(pid, gov)}"


def outcome(pid: int, gov) -> str:
    """How a closed vote ended, with the figures that decided it."""
    st, info = gov.state(pid), gov.proposal_info(pid)
    f, a = gov.proposal_votes(pid)
    if st == ProposalState.EXECUTED:
        return f"it passed ({f} for, {a} against) and was executed: session {info.session_id}"
    if st == ProposalState.SUCCEEDED:
        return f"it passed ({f} for, {a} against, quorum {info.quorum_weight}); `bsns execute {pid}` opens its session"
    if st == ProposalState.CANCELED:
        return "it was canceled"
    if f + a < info.quorum_weight:
        return (f"it was defeated: {f + a} vote{'s' * (f + a != 1)} cast, the quorum is {info.quorum_weight} of "
                f"{info.eligible_weight} eligible")
    return f"it was defeated: {f} for, {a} against"


def not_eligible_message(pid: int, voter: str, gov, registry) -> str:
    from node.chain.clients import NodeStatus

    info = gov.proposal_info(pid)
    e = registry.eligibility(voter)
    if e.status != NodeStatus.ACTIVE:
        return (f"{voter} cannot vote on proposal {pid}: it is not an active node (`bsns node register`, or a "
                f"daemon's [register])")
    return (f"{voter} cannot vote on proposal {pid}: it registered in block {e.registered_block}, and only nodes "
            f"registered before the proposal's block {info.created_block} vote on it")


def unknown_proposal_message(pid: int, gov) -> str:
    n = gov.proposal_count()
    return f"there is no proposal {pid} on this deployment ({'none yet' if n == 0 else f'proposals 1 to {n}'})"


# -- the check before sending, and reverts ----------------------------------------------------------

def vote_not_open(gov, pid: int, clock) -> str | None:
    """Why a vote sent now would land before voting opens, or None. The contract answers such a vote with
    ``VotingClosed(id, Pending)``, which reads as if it were over; this says when it opens instead."""
    info = gov.proposal_info(pid)  # reverts UnknownProposal for an id never proposed
    # the transaction runs in the next block: votes count in blocks vote_start+1 .. vote_end
    if clock.head + 1 <= info.vote_start:
        return voting_opens_message(pid, info.vote_start + 1, clock)
    return None


def execute_truth(gov, pid: int, clock) -> str | None:
    """What keeps proposal ``pid`` from being executed now, or None."""
    st = gov.state(pid)
    info = gov.proposal_info(pid)
    if st in (ProposalState.PENDING, ProposalState.ACTIVE) or clock.head + 1 <= info.vote_end:
        return (f"proposal {pid} can be executed after block {info.vote_end}, when its vote ends (the chain is at "
                f"{clock.head}; {clock.wait(info.vote_end + 1 - clock.head)})")
    if st == ProposalState.EXECUTED:
        return f"proposal {pid} was already executed: session {info.session_id}"
    if st in (ProposalState.DEFEATED, ProposalState.CANCELED):
        return outcome(pid, gov)
    return None


def explain_revert(exc: ContractRevert, gov, registry, pid: int, voter: str | None, clock) -> str:
    """``<the contract's answer>: <what is true>``, the truth built from the error's arguments and fresh views.
    An answer that says it all already (``AlreadyVoted(voter, id)``) stays as it is."""
    from coordinator.chainclock import ChainClock

    fresh = ChainClock(gov.w3.eth.block_number, clock.seconds_per_block)

    def closed():
        return vote_not_open(gov, pid, fresh) or voting_closed_message(pid, gov, fresh)

    truths = {
        # VotingNotStarted(id, startsAt), which the contract is to get: startsAt is the block it names
        "VotingNotStarted": lambda: voting_opens_message(int(exc.args[0]), int(exc.args[1]), fresh),
        "VotingClosed": closed,
        "NotSucceeded": lambda: execute_truth(gov, pid, fresh),
        "NotEligible": lambda: not_eligible_message(pid, voter, gov, registry) if voter else None,
        "UnknownProposal": lambda: unknown_proposal_message(pid, gov),
        "DepositNotSettleable": lambda: (f"the deposit of proposal {pid} can be settled after block "
                                         f"{gov.proposal_info(pid).vote_end}, when its vote ends"),
        "NoDeposit": lambda: f"proposal {pid} holds no deposit: it was settled already, or none was paid",
        "NoEligibleVoters": lambda: ("no node is registered yet, so nobody could vote on it: start the nodes "
                                     "(`bsns node run`) and `bsns wait nodes N` first"),
    }
    truth = truths[exc.name]() if exc.name in truths else None
    return f"{exc}: {truth}" if truth else str(exc)
