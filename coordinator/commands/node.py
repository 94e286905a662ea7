"""`bsns node ...`: this node's key (`keygen`), its registration (`register`, `info`).

``node_app`` is importable as ``coordinator.commands.node.node_app``: the daemon adds `node run` to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from coordinator.commands._chainopts import DeploymentOpt, DevAccountOpt, KeystoreOpt, RpcOpt

node_app = typer.Typer(help="This node: its key, its registration on chain, and running it.", no_args_is_help=True)


@node_app.command("keygen")
def keygen(
    out: Annotated[Optional[Path], typer.Option("--out", "--keystore", envvar="BSNS_KEYSTORE",
                                                help="keystore file to write [default: .bsns/keystore.json]")] = None,
    force: Annotated[bool, typer.Option(help="overwrite an existing keystore")] = False,
) -> None:
    """Create a new node key in an encrypted keystore (password from BSNS_KEYSTORE_PASSWORD or a prompt)."""
    from coordinator.commands._chainopts import home
    from node.chain.keys import create_keystore

    path = out or home() / "keystore.json"
    key = create_keystore(path, overwrite=force)
    typer.echo(f"address  {key.address}")
    typer.echo(f"peer id  {_peer_id(key.private_key)}")
    typer.echo(f"keystore {path}")


def _peer_id(private_key: bytes) -> str:
    from node.p2p.identity import peer_id_from_private_key

    return peer_id_from_private_key(private_key)


@node_app.command("register")
def register_node(
    rpc: RpcOpt = None,
    keystore: KeystoreOpt = None,
    dev_account: DevAccountOpt = None,
    deployment: DeploymentOpt = None,
    announce: Annotated[str, typer.Option(help="multiaddr peers dial, e.g. /ip4/10.0.0.5/tcp/4001")] = "/ip4/127.0.0.1/tcp/4001",
    memory_mb: Annotated[int, typer.Option(help="memory this node offers for a shard, MB")] = 4096,
    device: Annotated[str, typer.Option(help="cpu | cuda | mps")] = "cpu",
    throughput: Annotated[int, typer.Option(help="measured throughput (tokens/s)")] = 1000,
    stake: Annotated[Optional[str], typer.Option(help="stake to lock, wei or e.g. '2 ether' [default: the minimum]")] = None,
) -> None:
    """Register this node in the NodeRegistry: stake, peer id (from the same key), address and capacity."""
    from coordinator.commands._chainopts import chain_ctx
    from coordinator.deploy import parse_amount
    from node.chain.clients import device_kind_code

    ctx = chain_ctx(rpc, deployment, keystore, dev_account)
    c = ctx.clients()
    kind = device_kind_code(device)
    value = parse_amount(stake) if stake else c.registry.min_stake()
    peer = _peer_id(ctx.key.private_key)
    result = c.registry.register(peer, announce, memory_mb, kind, throughput, stake=value)
    typer.echo(f"registered {ctx.key.address} (peer {peer}) with stake {value} wei in block {result.block_number}")


@node_app.command("info")
def info(
    address: Annotated[Optional[str], typer.Argument(help="node address [default: this node's]")] = None,
    rpc: RpcOpt = None,
    keystore: KeystoreOpt = None,
    dev_account: DevAccountOpt = None,
    deployment: DeploymentOpt = None,
) -> None:
    """Show a node's registration."""
    from coordinator.commands._chainopts import chain_ctx, load_key

    ctx = chain_ctx(rpc, deployment, signer=False)
    if address is None:
        address = load_key(ctx.w3, keystore, dev_account).address
    n = ctx.clients().registry.get_node(address)
    for k, v in n.__dict__.items():
        typer.echo(f"{k:18s} {v.name.lower() if hasattr(v, 'name') else v}")


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
