"""`bsns node run`: adds the daemon command to the `node` group (node.daemon does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from coordinator.commands.node import node_app


@node_app.command("run")
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="the node's config file (node.toml)")] = Path("node.toml"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="also log every training step")] = False,
) -> None:
    """Run this node: watch the chain, vote, join sessions, train its shard, sync and commit."""
    from node.daemon.daemon import run_daemon

    run_daemon(config, verbose=verbose)


def register(app: typer.Typer) -> None:
    """The command lives on `node_app`, which coordinator.commands.node registers."""
