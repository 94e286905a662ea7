"""`bsns adapter fetch ID` and `bsns adapter eval ID`: a published adapter from the network.

Both add themselves to ``adapter_app`` (coordinator.commands.adapter); the work is in
``coordinator.remote_adapter``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from coordinator.commands._chainopts import DeploymentOpt, RpcOpt
from coordinator.commands.adapter import adapter_app

SpecDirOpt = Annotated[Optional[Path], typer.Option(
    "--spec-dir", help="folder with <spec hash>.toml, for a contract that does not carry the spec text")]


@adapter_app.command("fetch")
def fetch(
    adapter_id: Annotated[int, typer.Argument(metavar="ID", help="the AdapterRegistry id")],
    out: Annotated[Path, typer.Option("--out", help="output folder")] = Path("adapter"),
    rpc: RpcOpt = None,
    deployment: DeploymentOpt = None,
    spec_dir: SpecDirOpt = None,
) -> None:
    """Download a published adapter from the peers serving it, verify every hash against the chain,
    and write it (one canonical file per shard + PEFT or bsns export)."""
    from coordinator.commands._chainopts import chain_ctx
    from coordinator.remote_adapter import fetch_adapter

    ctx = chain_ctx(rpc, deployment, signer=False)
    got = fetch_adapter(ctx.w3, ctx.deployment, adapter_id, out, spec_dirs=[spec_dir] if spec_dir else [])
    for f, h in zip(got["shards"], got["record"].shard_hashes):
        typer.echo(f"{h}  {f}  (matches the chain)")
    typer.echo(f"{got['spec'].method.name} adapter written to {out} (export: {out / 'export'}, {got['format']} format)")


@adapter_app.command("eval")
def eval_(
    adapter_id: Annotated[int, typer.Argument(metavar="ID", help="the AdapterRegistry id")],
    out: Annotated[Optional[Path], typer.Option("--out", help="where to keep the fetched files "
                                                "[default: a temporary folder]")] = None,
    rpc: RpcOpt = None,
    deployment: DeploymentOpt = None,
    spec_dir: SpecDirOpt = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """Fetch a published adapter and report its accuracy (or perplexity) on the spec's held-back split."""
    import tempfile

    from coordinator.commands._chainopts import chain_ctx
    from coordinator.remote_adapter import fetch_adapter
    from node.train.evaluate import evaluate_adapter

    ctx = chain_ctx(rpc, deployment, signer=False)
    with tempfile.TemporaryDirectory(prefix="bsns-adapter-") as scratch:  # kept only when --out names a folder
        folder = out or Path(scratch)
        got = fetch_adapter(ctx.w3, ctx.deployment, adapter_id, folder, spec_dirs=[spec_dir] if spec_dir else [])
    m = evaluate_adapter(got["spec"], got["state"], device)
    if "accuracy" in m:
        typer.echo(f"adapter {adapter_id}: accuracy {100 * m['accuracy']:.2f}% on {m['examples']} held-back "
                   f"examples (loss {m['loss']:.4f})")
    else:
        typer.echo(f"adapter {adapter_id}: perplexity {m['perplexity']:.2f} on {m['tokens']} held-back tokens")


def register(app: typer.Typer) -> None:
    """The commands live on `adapter_app`, which coordinator.commands.adapter registers."""
