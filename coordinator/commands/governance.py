"""`bsns propose`, `bsns vote`, `bsns proposals`, `bsns execute`, `bsns cancel`, `bsns settle-deposit`:
fine-tuning governance.

`propose` validates the spec (the field at fault is named) and fills in the model-weights and data
hashes from the files *before* connecting or sending anything; it pays the contract's proposal deposit and says
how much, and `settle-deposit` gets it back once the vote reached quorum (or forfeits it). A refusal says what is true, with the time to
wait (coordinator.refusals): a vote before voting opens is not sent, and the contract's own refusals (found by
the gas estimate, before anything is sent) come with the proposal's state and window.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from coordinator.commands._chainopts import DeploymentOpt, DevAccountOpt, KeystoreOpt, ProposalIdArg, RpcOpt


class Choice(str, Enum):
    for_ = "for"
    against = "against"


def propose(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.toml", help="the job spec")],
    rpc: RpcOpt = None,
    keystore: KeystoreOpt = None,
    dev_account: DevAccountOpt = None,
    deployment: DeploymentOpt = None,
) -> None:
    """Propose a fine-tuning job from a TOML spec (validated before anything is sent)."""
    from coordinator.commands._chainopts import chain_ctx
    from coordinator.proposals import prepare_spec
    from coordinator.refusals import GovernanceRefusal, explain_revert
    from node.chain.errors import ContractRevert
    from node.paths import shown, specs_dir

    spec = prepare_spec(spec_path)
    ctx = chain_ctx(rpc, deployment, keystore, dev_account)
    c = ctx.clients()
    try:
        result, pid = c.governance.propose(spec.to_chain_params(), spec.toml_text)
    except ContractRevert as exc:
        raise GovernanceRefusal(explain_revert(exc, c.governance, c.registry, 0, None, ctx.clock())) from None
    gov = c.governance
    saved = specs_dir() / f"{spec.spec_hash()}.toml"
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(spec.toml_text)
    info = gov.proposal_info(pid)
    clock = ctx.clock()
    typer.echo(f"proposal {pid} created in block {result.block_number}: spec {spec.spec_hash()} (saved to {shown(saved)})")
    typer.echo(f"paid a deposit of {ether(gov.deposit_of(pid))}: `bsns settle-deposit {pid}` returns it after the vote "
               f"if the proposal reached quorum (it is forfeited otherwise)")
    typer.echo(f"voting from block {info.vote_start + 1} to {info.vote_end} (opens in "
               f"{clock.wait(info.vote_start + 1 - clock.head)}); {info.eligible_weight} eligible, quorum "
               f"{info.quorum_weight}")


def vote(
    proposal_id: ProposalIdArg,
    choice: Annotated[Choice, typer.Argument(metavar="for|against", case_sensitive=False)],
    rpc: RpcOpt = None,
    keystore: KeystoreOpt = None,
    dev_account: DevAccountOpt = None,
    deployment: DeploymentOpt = None,
) -> None:
    """Vote for or against a proposal (registered nodes only, inside the voting window)."""
    from coordinator.commands._chainopts import chain_ctx
    from coordinator.refusals import GovernanceRefusal, explain_revert, vote_not_open
    from node.chain.errors import ContractRevert

    ctx = chain_ctx(rpc, deployment, keystore, dev_account)
    c = ctx.clients()
    gov, voter, clock = c.governance, ctx.key.address, ctx.clock()
    try:
        why = vote_not_open(gov, proposal_id, clock)
        if why:
            raise GovernanceRefusal(why)
        result = gov.cast_vote(proposal_id, choice == Choice.for_)
    except ContractRevert as exc:
        raise GovernanceRefusal(explain_revert(exc, gov, c.registry, proposal_id, voter, clock)) from None
    f, a = gov.proposal_votes(proposal_id)
    info = gov.proposal_info(proposal_id)
    typer.echo(f"voted {choice.value} on proposal {proposal_id} in block {result.block_number} "
               f"(for {f}, against {a}); quorum {info.quorum_weight}, the vote ends with block {info.vote_end}")


def proposals(rpc: RpcOpt = None, deployment: DeploymentOpt = None) -> None:
    """List proposals: state, votes, deadline, spec hash, method."""
    from rich.console import Console
    from rich.table import Table

    from coordinator.commands._chainopts import chain_ctx

    ctx = chain_ctx(rpc, deployment, signer=False)
    rows = ctx.clients().governance.proposals()
    head = ctx.w3.eth.block_number
    table = Table(title=f"proposals (chain {ctx.deployment.chain_id}, block {head})")
    for col in ("id", "state", "for", "against", "quorum", "deadline block", "spec hash", "method", "session"):
        table.add_column(col, justify="right" if col in ("id", "for", "against", "quorum", "deadline block") else "left")
    for p in rows:
        table.add_row(str(p.id), p.state.name.capitalize(), str(p.for_votes), str(p.against_votes),
                      str(p.info.quorum_weight), str(p.info.vote_end), p.params.spec_hash[:18] + "…",
                      p.params.method, str(p.info.session_id or "-"))
    if not rows:
        typer.echo("no proposals yet")
        return
    Console(width=140).print(table)


def execute(
    proposal_id: ProposalIdArg,
    rpc: RpcOpt = None,
    keystore: KeystoreOpt = None,
    dev_account: DevAccountOpt = None,
    deployment: DeploymentOpt = None,
) -> None:
    """Execute a Succeeded proposal: opens its training session (once)."""
    from coordinator.commands._chainopts import chain_ctx
    from coordinator.refusals import GovernanceRefusal, explain_revert
    from node.chain.errors import ContractRevert

    ctx = chain_ctx(rpc, deployment, keystore, dev_account)
    c = ctx.clients()
    gov, clock = c.governance, ctx.clock()
    try:
        result, session_id = gov.execute(proposal_id)
    except ContractRevert as exc:  # the estimate runs it first: nothing was sent
        raise GovernanceRefusal(explain_revert(exc, gov, c.registry, proposal_id, None, clock)) from None
    typer.echo(f"proposal {proposal_id} executed in block {result.block_number}: session {session_id} opened")


def cancel(
    proposal_id: ProposalIdArg,
    rpc: RpcOpt = None,
    keystore: KeystoreOpt = None,
    dev_account: DevAccountOpt = None,
    deployment: DeploymentOpt = None,
) -> None:
    """Cancel your own proposal before its vote ends."""
    from coordinator.commands._chainopts import chain_ctx

    ctx = chain_ctx(rpc, deployment, keystore, dev_account)
    result = ctx.clients().governance.cancel(proposal_id)
    typer.echo(f"proposal {proposal_id} canceled in block {result.block_number}")


def settle_deposit(
    proposal_id: ProposalIdArg,
    rpc: RpcOpt = None,
    keystore: KeystoreOpt = None,
    dev_account: DevAccountOpt = None,
    deployment: DeploymentOpt = None,
) -> None:
    """After the vote: return a proposal's deposit to its proposer if it reached quorum, else forfeit it (anyone may call)."""
    from coordinator.commands._chainopts import chain_ctx
    from coordinator.refusals import GovernanceRefusal, explain_revert
    from node.chain.errors import ContractRevert

    ctx = chain_ctx(rpc, deployment, keystore, dev_account)
    c = ctx.clients()
    gov = c.governance
    try:
        result, (what, amount) = gov.settle_deposit(proposal_id)
    except ContractRevert as exc:
        raise GovernanceRefusal(explain_revert(exc, gov, c.registry, proposal_id, None, ctx.clock())) from None
    to = f" to {gov.proposal_info(proposal_id).proposer}" if what == "returned" else " (it stays in the contract)"
    typer.echo(f"deposit of proposal {proposal_id} {what} in block {result.block_number}: {ether(amount)}{to}")


def ether(wei: int) -> str:
    from web3 import Web3

    return f"{Web3.from_wei(wei, 'ether').normalize():f} ETH ({wei} wei)"


def register(app: typer.Typer) -> None:
    app.command("propose")(propose)
    app.command("vote")(vote)
    app.command("proposals")(proposals)
    app.command("execute")(execute)
    app.command("cancel")(cancel)
    app.command("settle-deposit")(settle_deposit)
