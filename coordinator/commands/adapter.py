"""`bsns adapter ...`: utilities on local adapter files (hash, export, merge).

An adapter file is the canonical safetensors bytes that `bsns train local --out` and the daemons
write; a whole adapter of a sharded job is given as one file per shard. The spec names the base model,
task and method the adapter belongs to. Other command modules may add sub-commands to ``adapter_app``
(e.g. fetching an adapter from peers by its hash).
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

adapter_app = typer.Typer(help="Adapter files: hash, export (Hugging Face PEFT or bsns format), merge.",
                          no_args_is_help=True)


def _load_all(spec_path: Path, files: List[Path]):
    from coordinator.proposals import shipped_or_local
    from node.job import JobSpec
    from node.train.adapter_state import load_adapter, merged_state

    spec = JobSpec.from_toml(shipped_or_local(spec_path))
    return spec, merged_state([load_adapter(f) for f in files])


@adapter_app.command("hash")
def hash_(files: List[Path] = typer.Argument(..., help="adapter files (canonical safetensors)")) -> None:
    """Print each file's adapter hash (keccak-256 of its canonical bytes, the value committed on chain)."""
    from node.train.adapter_state import file_adapter_hash

    for f in files:
        typer.echo(f"{file_adapter_hash(f)}  {f}")


@adapter_app.command("export")
def export(
    spec: Path = typer.Argument(..., help="the job spec the adapter was trained from"),
    files: List[Path] = typer.Argument(..., help="adapter file(s), one per shard"),
    out: Path = typer.Option(..., "--out", help="output directory"),
    fmt: str = typer.Option("auto", "--format",
                            help="peft (LoRA, IA3), bsns (any method) or auto (peft when possible)"),
) -> None:
    """Export a whole adapter: PEFT format (loads with PeftModel.from_pretrained) or the bsns format."""
    from node.errors import BsnsError
    from node.train import export as E
    from node.tuners import get_method

    job, state = _load_all(spec, files)
    if fmt == "auto":
        fmt = "peft" if get_method(job.method.name).exports_to_peft else "bsns"
    if fmt == "peft":
        E.export_peft(job, state, out)
    elif fmt == "bsns":
        E.export_bsns(job, state, out)
    else:
        raise BsnsError(f"unknown export format {fmt!r}; expected peft, bsns or auto")
    typer.echo(f"{fmt} adapter ({job.method.name}) written to {out}")


@adapter_app.command("merge")
def merge(
    spec: Path = typer.Argument(..., help="the job spec the adapter was trained from"),
    files: List[Path] = typer.Argument(..., help="adapter file(s), one per shard"),
    out: Path = typer.Option(..., "--out", help="output directory (a transformers model)"),
) -> None:
    """Fold a LoRA/IA3 adapter into the base weights and save a plain transformers model."""
    from node.train import export as E

    job, state = _load_all(spec, files)
    E.export_merged(job, state, out)
    typer.echo(f"merged model ({job.method.name} folded into {job.model.id}) written to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(adapter_app, name="adapter")
