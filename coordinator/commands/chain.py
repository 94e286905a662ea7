"""`bsns chain up|down|status` (the local anvil chain) and `bsns deploy` (the five contracts)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from coordinator.commands._chainopts import DevAccountOpt, KeystoreOpt, RpcOpt

chain_app = typer.Typer(help="The local development chain (anvil from node_modules).", no_args_is_help=True)


@chain_app.command("up")
def up(port: Annotated[int, typer.Option(envvar="BSNS_CHAIN_PORT", help="port on 127.0.0.1")] = 8545,
       block_time: Annotated[Optional[float], typer.Option(
           min=0.01, help="seconds per block [default: 1]")] = None,
       on_demand: Annotated[bool, typer.Option(
           "--on-demand", help="mine a block only when a transaction arrives (windows counted in blocks then "
                               "stand still between transactions)")] = False,
       ) -> None:
    """Start anvil detached (a block every second, state saved in $BSNS_HOME), or report the running one.
    Later commands find it there without --rpc."""
    from coordinator import localchain
    from node.paths import chain_record, shown

    if on_demand and block_time is not None:
        raise localchain.LocalChainError("--on-demand mines only per transaction; leave out --block-time with it")
    bt = None if on_demand else (block_time or localchain.DEFAULT_BLOCK_TIME)
    info, started = localchain.up(port=port, block_time=bt)
    if started:
        typer.echo(f"chain started at {info.url} (pid {info.pid}, chain id {localchain.CHAIN_ID}, {info.mining}; "
                   f"state {shown(info.state_file)})")
    else:
        typer.echo(f"chain already running: {info.url} (pid {info.pid}, {info.mining})")
    typer.echo(f"later commands use it: recorded in {shown(chain_record())}")


@chain_app.command("down")
def down() -> None:
    """Stop the chain started by `bsns chain up` (its state is saved for the next `up`)."""
    from coordinator import localchain

    info = localchain.down()
    typer.echo("no chain running" if info is None else f"stopped chain at {info.url} (pid {info.pid}); its state "
                                                       f"is kept for the next `bsns chain up`")


@chain_app.command("status")
def status(rpc: RpcOpt = None) -> None:
    """Show the local chain process and what the RPC endpoint in use reports."""
    from coordinator import localchain
    from node.chain.rpc import connect, rpc_url

    info = localchain.status()
    typer.echo("local chain: " + ("not running" if info is None else f"{info.url} (pid {info.pid}, {info.mining})"))
    w3 = connect(rpc)
    typer.echo(f"rpc {rpc_url(rpc)}: chain id {w3.eth.chain_id}, block {w3.eth.block_number}")


def deploy_cmd(
    rpc: RpcOpt = None,
    keystore: KeystoreOpt = None,
    dev_account: DevAccountOpt = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "--deployment", envvar="BSNS_DEPLOYMENT",
        help="where to write the deployment [default: $BSNS_HOME/deployments/<chain id>.json, where later commands "
             "look]")] = None,
    min_stake: Annotated[str, typer.Option(help="minimum node stake, in wei or with a unit (e.g. '1 ether')")] = "1 ether",
    exit_delay: Annotated[int, typer.Option(help="seconds between requestExit and withdraw")] = 3600,
    voting_delay: Annotated[int, typer.Option(help="blocks from propose to the start of voting")] = 1,
    voting_period: Annotated[int, typer.Option(help="blocks the vote stays open")] = 20,
    quorum_bps: Annotated[int, typer.Option(help="quorum, basis points of the eligible weight")] = 5000,
    threshold_bps: Annotated[int, typer.Option(help="share of 'for' among cast votes to pass, basis points")] = 5000,
    weight_by_stake: Annotated[bool, typer.Option(help="weigh votes by stake instead of one node one vote")] = False,
    proposal_deposit: Annotated[str, typer.Option(
        help="what each proposal pays, returned if the proposal reaches quorum (0 only on the dev chain)")] = "0.1 ether",
    join_window: Annotated[int, typer.Option(help="blocks a session stays open for joining")] = 20,
    commit_timeout: Annotated[int, typer.Option(help="blocks each attempt of a round takes commits, counted from the round's start (must hold its training and sync)")] = 50,
    slash_amount: Annotated[Optional[str], typer.Option(help="stake slashed per faulty commit (default: contract's)")] = None,
) -> None:
    """Deploy NodeRegistry, TrainingSessions, FineTuneGovernance, AdapterRegistry and FedPeatLedger, wired together."""
    from coordinator.commands._chainopts import connect, load_key, make_sender
    from coordinator.deploy import DeployParams, deploy, parse_amount

    params = DeployParams.make(min_stake=parse_amount(min_stake), exit_delay_seconds=exit_delay,
                          voting_delay_blocks=voting_delay, voting_period_blocks=voting_period,
                          quorum_bps=quorum_bps, threshold_bps=threshold_bps, weight_by_stake=weight_by_stake,
                          proposal_deposit=parse_amount(proposal_deposit),
                          join_window_blocks=join_window, commit_timeout_blocks=commit_timeout,
                          slash_amount=parse_amount(slash_amount) if slash_amount else None)
    from node.chain.deployment import default_path
    from node.chain.rpc import rpc_url
    from node.paths import shown

    w3 = connect(rpc)  # after validating the parameters: a bad value fails before any connection
    key = load_key(w3, keystore, dev_account)
    dep = deploy(w3, make_sender(w3, key), params)
    path = dep.save(out)
    for name, addr in dep.addresses.items():
        typer.echo(f"{name:20s} {addr}")
    typer.echo(f"deployed at block {dep.deploy_block} on chain {dep.chain_id} ({rpc_url(rpc)}); wrote {shown(path)}")
    if out is not None and path.resolve() != default_path(dep.chain_id).resolve():
        typer.echo(f"later commands need --deployment {shown(path)} (or BSNS_DEPLOYMENT) to use it")


def register(app: typer.Typer) -> None:
    app.add_typer(chain_app, name="chain")
    app.command("deploy")(deploy_cmd)
