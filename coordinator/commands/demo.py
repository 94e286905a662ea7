"""`bsns demo`: the main job end to end on this machine (coordinator.demo does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def demo(
    workdir: Annotated[Optional[Path], typer.Option(help="folder for the chain, node state and logs "
                                                         "[default: a new temporary folder]")] = None,
    rounds: Annotated[int, typer.Option(min=3, help="sync rounds")] = 4,
    sync_interval: Annotated[int, typer.Option(min=1, help="training steps between syncs")] = 30,
    batch_size: Annotated[int, typer.Option(min=2, help="examples per step and replica")] = 16,
    max_seq_len: Annotated[int, typer.Option(min=8, help="tokens per sentence")] = 48,
) -> None:
    """Start anvil, deploy, run 4 node daemons (2 shards x 2 replicas) on MiniLM + SST-2 with Houlsby
    adapters for several sync rounds, publish the adapter, and print the summary."""
    from coordinator.demo import run_demo

    run_demo(workdir, rounds=rounds, sync_interval=sync_interval, batch_size=batch_size, max_seq_len=max_seq_len)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
