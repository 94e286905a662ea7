"""`bsns wait nodes N` and `bsns wait proposal ID`: block until the network got somewhere, saying each step.

Both read the chain only (views, once a second), print one line whenever what they see changes, and end with
status 0 when the goal is reached, or one ``error: ...`` line (status 1) when it can no longer be reached (the
proposal was defeated, the session failed) or the timeout passed.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from coordinator.commands._chainopts import DeploymentOpt, RpcOpt
from node.errors import BsnsError

wait_app = typer.Typer(help="Wait for the network: nodes registered, a proposal's job done.", no_args_is_help=True)

TimeoutOpt = Annotated[float, typer.Option(min=1, help="seconds before giving up")]


class WaitError(BsnsError):
    """What was waited for cannot happen any more, or did not happen in time."""


def _follow(what: str, step, timeout: float, poll: float = 1.0):
    """Call ``step()`` -> (done, line, value) until done; print a line when it says something new (its text up to
    the first parenthesis: a countdown alone is no news)."""
    deadline = time.monotonic() + timeout
    last, seen = None, None
    while True:
        done, line, value = step()
        if line and line.split(" (", 1)[0] != seen:
            typer.echo(line)
            seen = line.split(" (", 1)[0]
        last = line or last
        if done:
            return value
        if time.monotonic() > deadline:
            raise WaitError(f"timed out after {timeout:g} s waiting for {what} ({last or 'nothing yet'})")
        time.sleep(poll)


@wait_app.command("nodes")
def nodes(
    count: Annotated[int, typer.Argument(metavar="N", min=1, help="active nodes to wait for")],
    rpc: RpcOpt = None,
    deployment: DeploymentOpt = None,
    timeout: TimeoutOpt = 300,
) -> None:
    """Until N nodes are active in the NodeRegistry (a proposal counts only the nodes registered before it)."""
    from coordinator.commands._chainopts import chain_ctx

    ctx = chain_ctx(rpc, deployment, signer=False)
    registry = ctx.clients().registry

    def step():
        n = registry.active_count()
        return n >= count, f"{n} of {count} nodes active", n

    _follow(f"{count} active nodes", step, timeout)


@wait_app.command("proposal")
def proposal(
    proposal_id: Annotated[int, typer.Argument(metavar="ID")],
    rpc: RpcOpt = None,
    deployment: DeploymentOpt = None,
    timeout: TimeoutOpt = 1800,
) -> None:
    """Until proposal ID passed, its session trained every round and its adapter is published: the vote, the
    join window, each round and the publication, one line each."""
    from coordinator.commands._chainopts import chain_ctx
    from coordinator.refusals import GovernanceRefusal, outcome, unknown_proposal_message
    from node.chain.clients import ProposalState, SessionState
    from node.chain.errors import ContractRevert

    ctx = chain_ctx(rpc, deployment, signer=False)
    c = ctx.clients()
    gov, sessions, adapters = c.governance, c.sessions, c.adapters
    try:
        gov.state(proposal_id)
    except ContractRevert as exc:
        if exc.name == "UnknownProposal":
            raise GovernanceRefusal(unknown_proposal_message(proposal_id, gov)) from None
        raise

    def step():
        clock = ctx.clock()
        st, info = gov.state(proposal_id), gov.proposal_info(proposal_id)
        f, a = gov.proposal_votes(proposal_id)
        if st == ProposalState.PENDING:
            return False, (f"proposal {proposal_id}: voting opens at block {info.vote_start + 1} "
                           f"({clock.wait(info.vote_start + 1 - clock.head)})"), None
        if st == ProposalState.ACTIVE:
            return False, (f"proposal {proposal_id}: voting until block {info.vote_end}: {f} for, {a} against, "
                           f"quorum {info.quorum_weight} ({clock.wait(info.vote_end - clock.head)} left)"), None
        if st in (ProposalState.DEFEATED, ProposalState.CANCELED):
            raise WaitError(f"proposal {proposal_id}: {outcome(proposal_id, gov)}")
        if st == ProposalState.SUCCEEDED:
            return False, (f"proposal {proposal_id}: passed ({f} for, {a} against); waiting for a node to execute "
                           f"it (`bsns execute {proposal_id}`)"), None
        sid = info.session_id
        s = sessions.get_session(sid)
        if s.state == SessionState.JOINING:
            joined = sum(sessions.get_shard(sid, k).joined for k in range(s.num_shards))
            return False, (f"session {sid}: open for joining until block {s.join_deadline}, {joined} joined "
                           f"({clock.wait(s.join_deadline - clock.head)} left)"), None
        if s.state == SessionState.FAILED:
            raise WaitError(f"session {sid} of proposal {proposal_id} failed: fewer than {s.min_replicas} "
                            f"replica{'s' * (s.min_replicas != 1)} per shard joined")
        if s.state == SessionState.TRAINING:
            done = " ".join(f"{sessions.current_round(sid, k)}/{s.rounds}" for k in range(s.num_shards))
            return False, (f"session {sid}: training {s.num_shards} shards x {s.replicas} "
                           f"replica{'s' * (s.replicas != 1)}, rounds final per shard: {done}"), None
        aid = adapters.adapter_of_session(sid)
        if not aid:
            return False, f"session {sid}: completed {s.rounds} rounds; waiting for its adapter to be published", None
        return True, f"adapter {aid} published (session {sid}): `bsns adapter fetch {aid} --out adapter/`", aid

    _follow(f"proposal {proposal_id}'s adapter", step, timeout)


def register(app: typer.Typer) -> None:
    app.add_typer(wait_app, name="wait")
