"""`bsns status`: the network from the chain (nodes, proposals, sessions, rounds per shard) and, with
``--config node.toml``, this node's own records (its sessions, rounds, latest loss) from its state folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from coordinator.commands._chainopts import DeploymentOpt, RpcOpt


def status(
    rpc: RpcOpt = None,
    deployment: DeploymentOpt = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="a node.toml: also show that node's "
                                                   "local records")] = None,
) -> None:
    """Show nodes, proposals, sessions and rounds per shard from the chain, and a node's latest loss."""
    from rich.console import Console
    from rich.table import Table

    from coordinator.commands._chainopts import chain_ctx

    from node.paths import shown

    if config is not None and (rpc is None or deployment is None):
        from node.daemon.config import NodeConfig

        cfg = NodeConfig.from_toml(config)
        rpc = rpc or cfg.chain.rpc
        deployment = deployment or cfg.deployment_path
    ctx = chain_ctx(rpc, deployment, signer=False)
    c = ctx.clients()
    con = Console()
    clock = ctx.clock()
    pace = ("a block per transaction" if clock.seconds_per_block is None else
            f"{clock.seconds_per_block:g} s blocks" if clock.seconds_per_block > 0 else "block time unknown")
    d = ctx.deployment
    typer.echo(f"chain {ctx.rpc} (chain id {ctx.w3.eth.chain_id}, block {clock.head}, {pace})")
    typer.echo(f"deployment {shown(d.path)} (deployed in block {d.deploy_block})")

    t = Table(title=f"nodes (chain {ctx.w3.eth.chain_id}, block {clock.head})")
    for col in ("address", "status", "peer id", "address announced", "memory MB", "stake (ETH)", "locked by"):
        t.add_column(col)
    for addr in c.registry.nodes():
        n = c.registry.get_node(addr)
        locks = c.registry.locks_of(addr)  # open sessions holding the stake (no exit or withdrawal until 0)
        t.add_row(addr, n.status.name.lower(), n.peer_id[:16] + "…", n.announce_addr, str(n.memory_mb),
                  f"{n.stake / 1e18:g}", f"{locks} session{'s' if locks != 1 else ''}" if locks else "-")
    con.print(t)

    t = Table(title="proposals")
    for col in ("id", "state", "for", "against", "method", "model", "rounds", "session"):
        t.add_column(col)
    for p in c.governance.proposals():
        t.add_row(str(p.id), p.state.name.lower(), str(p.for_votes), str(p.against_votes), p.params.method,
                  p.params.base_model, str(p.params.rounds), str(p.info.session_id or "-"))
    con.print(t)

    t = Table(title="sessions")
    for col in ("id", "proposal", "state", "replicas", "rounds done per shard", "retries", "adapter"):
        t.add_column(col)
    for sid in range(1, c.sessions.session_count() + 1):
        s = c.sessions.get_session(sid)
        shards = [c.sessions.get_shard(sid, k) for k in range(s.num_shards)]
        # a round that reached no quorum by its deadline is retried in a new epoch (at most MAX_EPOCHS)
        retries = " ".join(f"shard {k}: round {sh.round} epoch {sh.epoch}" for k, sh in enumerate(shards) if sh.epoch)
        t.add_row(str(sid), str(s.proposal_id), s.state.name.lower(), str(s.replicas),
                  " ".join(f"{sh.round}/{s.rounds}" for sh in shards), retries or "-",
                  str(c.adapters.adapter_of_session(sid) or "-"))
    con.print(t)

    if config is not None:
        _local(con, config)


def _local(con, config: Path) -> None:
    from rich.table import Table

    from node.daemon.config import NodeConfig
    from node.daemon.state import StateStore

    cfg = NodeConfig.from_toml(config)
    if not (cfg.data_dir / "state.sqlite").exists():
        con.print(f"node {cfg.name}: no local state in {cfg.data_dir} yet")
        return
    st = StateStore(cfg.data_dir)
    try:
        t = Table(title=f"node {cfg.name}: local records ({cfg.data_dir})")
        for col in ("session", "status", "shard", "replica", "rounds final", "latest loss", "last step"):
            t.add_column(col)
        for s in st.sessions():
            rounds = st.rounds(s["session_id"])
            losses = st.losses(s["session_id"])
            t.add_row(str(s["session_id"]), s["status"], str(s["shard"]), str(s["replica"]),
                      str(sum(1 for r in rounds if r["status"] == "final")),
                      f"{losses[-1]['loss']:.4f}" if losses else "-", str(losses[-1]["step"]) if losses else "-")
        con.print(t)
    finally:
        st.close()


def register(app: typer.Typer) -> None:
    app.command("status")(status)
