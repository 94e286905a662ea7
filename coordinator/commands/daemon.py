"""`bsns node run`: adds the daemon command to the `node` group (node.daemon does the work)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from coordinator.commands.node import node_app


class LogLevel(str, Enum):  # the names of node.daemon.logs.LEVELS
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


@node_app.command("run")
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="the node's config file (node.toml)")] = Path("node.toml"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="also log every training step")] = False,
    log_level: Annotated[LogLevel, typer.Option(
        "--log-level", case_sensitive=False,
        help="least severe level on stderr; debug adds the libraries' own lines (libp2p, web3, ...)")] = LogLevel.info,
) -> None:
    """Run this node: watch the chain, vote, join sessions, train its shard, sync and commit. Logs: one line per
    event on stderr, JSON lines in <data_dir>/daemon.jsonl."""
    from node.daemon.daemon import run_daemon

    run_daemon(config, verbose=verbose, log_level=log_level.value)


def register(app: typer.Typer) -> None:
    """The command lives on `node_app`, which coordinator.commands.node registers."""
