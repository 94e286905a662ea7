"""`bsns node ...`: this node's key (`keygen`), its config (`init`), its registration (`register`, `info`), and
setting its chain records aside (`reset`).

``node_app`` is importable as ``coordinator.commands.node.node_app``: the daemon adds `node run` to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from coordinator.commands._chainopts import DeploymentOpt, DevAccountOpt, KeystoreOpt, RpcOpt
from node.errors import BsnsError

node_app = typer.Typer(help="This node: its key, its registration on chain, and running it.", no_args_is_help=True)


@node_app.command("keygen")
def keygen(
    out: Annotated[Optional[Path], typer.Option("--out", "--keystore", envvar="BSNS_KEYSTORE",
                                                help="keystore file to write [default: $BSNS_HOME/keystore.json]")] = None,
    force: Annotated[bool, typer.Option(help="overwrite an existing keystore")] = False,
) -> None:
    """Create a new node key in an encrypted keystore (password from BSNS_KEYSTORE_PASSWORD or a prompt)."""
    from node.chain.keys import create_keystore
    from node.paths import default_keystore

    path = out or default_keystore()
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


@node_app.command("init")
def init(
    config: Annotated[Path, typer.Argument(metavar="NODE.toml", help="the config file to write")],
    dev_account: DevAccountOpt = None,
    keystore: Annotated[Optional[Path], typer.Option("--keystore", help="the node's encrypted key file "
                                                     "(`bsns node keygen`; fund its address first)")] = None,
    name: Annotated[Optional[str], typer.Option(help="node name [default: the file's name without .toml]")] = None,
    listen: Annotated[str, typer.Option(help="libp2p listen address (port 0: any free port)")] = "/ip4/127.0.0.1/tcp/0",
    memory_mb: Annotated[int, typer.Option(min=1, help="memory this node offers for a shard, MB")] = 2048,
    stake: Annotated[Optional[float], typer.Option(help="ETH to stake when the daemon registers itself; "
                                                   "--no-register: register with `bsns node register`")] = 1.0,
    no_register: Annotated[bool, typer.Option("--no-register", help="no [register] section")] = False,
    vote: Annotated[str, typer.Option(help="auto (vote by policy) | manual (leave it to `bsns vote`)")] = "auto",
    force: Annotated[bool, typer.Option(help="overwrite an existing file")] = False,
) -> None:
    """Write a node config for `bsns node run`: its account, p2p address, memory and voting policy. Chain and
    deployment are the ones `bsns chain up` and `bsns deploy` recorded; its records go to $BSNS_HOME/nodes/NAME."""
    import os

    from node.daemon.config import config_text
    from node.paths import nodes_dir, shown

    if config.exists() and not force:
        raise BsnsError(f"{config} exists: pass --force to overwrite it")
    node_name = name or config.stem
    text = config_text(node_name, dev_account=dev_account, keystore=str(keystore) if keystore else None,
                       listen=listen, memory_mb=memory_mb, stake_eth=None if no_register else stake, vote=vote)
    config.parent.mkdir(parents=True, exist_ok=True)
    tmp = config.with_name(config.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, config)
    who = f"dev account {dev_account}" if dev_account is not None else f"keystore {keystore}"
    typer.echo(f"wrote {config}: node {node_name}, {who}, {memory_mb} MB, vote {vote}, records in "
               f"{shown(nodes_dir() / node_name)}")


@node_app.command("reset")
def reset(
    config: Annotated[Path, typer.Option("--config", "-c", help="the node's config file")] = Path("node.toml"),
) -> None:
    """Set this node's chain records aside (journal, watcher, sessions, checkpoints: moved to
    <data_dir>/retired/<time>/, nothing deleted) after its chain or deployment was replaced. The daemon must be
    stopped; its next start begins afresh on the configured deployment."""
    from node.daemon.config import NodeConfig
    from node.daemon.datadir import DataDir
    from node.paths import shown

    cfg = NodeConfig.from_toml(config)
    dest = DataDir(cfg.data_dir, "").set_aside()
    if dest is None:
        typer.echo(f"node {cfg.name}: nothing to set aside in {shown(cfg.data_dir)}")
    else:
        typer.echo(f"node {cfg.name}: chain records moved to {shown(dest)}; the next `bsns node run --config "
                   f"{config}` starts afresh")


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
