"""`bsns train ...`: the local training baseline (`train local`) and the method comparison (`train compare`).

Both run ``node.train.local.LocalTrainer``; `compare` trains each spec for the same number of steps and
prints (and optionally writes) the markdown table that docs/results.md carries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

train_app = typer.Typer(help="Train on this machine: the single-process reference and baseline.",
                        no_args_is_help=True)

DEFAULT_COMPARE = ("full", "houlsby", "pfeiffer", "lora", "ia3", "prefix", "prompt")


def _set_threads(threads: Optional[int]) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _run(spec_path: Path, steps: Optional[int], device: str, out: Optional[Path], progress: bool,
         train_limit: Optional[int] = None, seed: Optional[int] = None, eval_every: Optional[int] = None):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from coordinator.proposals import shipped_or_local
    from node.job import JobSpec
    from node.train.local import LocalTrainer

    spec = JobSpec.from_toml(shipped_or_local(spec_path))
    console = Console(stderr=True)
    with console.status(f"loading {spec.model.id} and {spec.data.dataset}"):
        trainer = LocalTrainer(spec, steps=steps, device=device, train_limit=train_limit, seed=seed)
    trainable, total = (sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
                        sum(p.numel() for p in trainer.model.parameters()))
    console.print(f"{spec.method.name}: {trainable:,} trainable of {total:,} parameters "
                  f"({100 * trainable / total:.2f}%), {trainer.steps} steps of {spec.training.batch_size} "
                  f"on {trainer.device}")
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not progress) as bar:
        task = bar.add_task(f"train {spec.method.name}", total=trainer.steps, loss=float("nan"))
        result = trainer.run(on_step=lambda step, loss: bar.update(task, advance=1, loss=loss), eval_every=eval_every)
    for point in result.curve:
        console.print(f"  step {point['step']}: {_metric_line_of(point)}")
    if out is not None:
        trainer.save(out, result)
    return result


def _metric_line(result) -> str:
    return _metric_line_of(result.metrics)


def _metric_line_of(m: dict) -> str:
    if "accuracy" in m:
        return f"validation accuracy {m['accuracy']:.4f} ({m['examples']} examples), loss {m['loss']:.4f}"
    return f"validation perplexity {m['perplexity']:.2f} ({m['tokens']} tokens), loss {m['loss']:.4f}"


@train_app.command("local")
def local(
    spec: Path = typer.Argument(..., help="job spec (TOML)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="optimizer steps (default rounds × sync_interval)"),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto (CUDA when present)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write adapter.safetensors + result.json here"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show the progress bar"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="override the spec's training seed (init and batch order)"),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="also evaluate every N steps (learning curve)"),
) -> None:
    """Train the whole model in this process with the spec's method and seed; report validation metrics."""
    _set_threads(threads)
    result = _run(spec, steps, device, out, progress, seed=seed, eval_every=eval_every)
    typer.echo(f"{result.method}: {result.steps} steps in {result.train_seconds:.1f} s, "
               f"final train loss {result.final_train_loss:.4f}, {_metric_line(result)}")
    if result.adapter_hash:
        typer.echo(f"adapter {result.adapter_hash} -> {result.adapter_path}")


def results_table(results: list) -> str:
    """Markdown table of compare results (one row per method)."""
    rows = ["| method | trainable params | trainable % | val accuracy | val loss | train time (s) | s/step |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        acc = r.metrics.get("accuracy")
        acc_s = f"{100 * acc:.2f}" if acc is not None else f"ppl {r.metrics['perplexity']:.2f}"
        rows.append(f"| {r.method} | {r.trainable_params:,} | {r.trainable_percent:.2f} | {acc_s} | "
                    f"{r.metrics['loss']:.4f} | {r.train_seconds:.0f} | {r.train_seconds / r.steps:.2f} |")
    return "\n".join(rows)


@train_app.command("compare")
def compare(
    methods: str = typer.Option(",".join(DEFAULT_COMPARE), "--methods",
                                help="comma-separated methods; spec = SPECS_DIR/minilm-sst2-<method>.toml"),
    steps: int = typer.Option(300, "--steps", help="optimizer steps per method (the same for all)"),
    device: str = typer.Option("auto", "--device"),
    specs_dir: Path = typer.Option(Path("specs"), "--specs-dir"),
    out: Optional[Path] = typer.Option(None, "--out", help="write each method's adapter and result under here"),
    table: Optional[Path] = typer.Option(None, "--table", help="also write the markdown table to this file"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="override the spec's training seed (init and batch order)"),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="also evaluate every N steps (learning curve)"),
) -> None:
    """Train each method for the same steps on the same data and seed; print a markdown table."""
    _set_threads(threads)
    from coordinator.proposals import shipped_or_local
    from node.errors import BsnsError

    names = [m.strip() for m in methods.split(",") if m.strip()]
    paths = [shipped_or_local(specs_dir / f"minilm-sst2-{m}.toml") for m in names]
    for p in paths:
        if not p.exists():
            raise BsnsError(f"no spec for this method: {p}")
    results = []
    for name, p in zip(names, paths):
        r = _run(p, steps, device, out / name if out else None, progress=True, seed=seed, eval_every=eval_every)
        typer.echo(f"{name}: {r.trainable_percent:.2f}% trainable, {_metric_line(r)}, "
                   f"{r.train_seconds:.0f} s", err=True)
        results.append(r)
        if table is not None:  # rewritten after every method, so a long run leaves its rows as it goes
            table.write_text(results_table(results) + _footer(results, steps) + "\n", encoding="utf-8")
    typer.echo(results_table(results) + _footer(results, steps))


def _footer(results: list, steps: int) -> str:
    """The run's conditions: steps, batch, device and machine."""
    import os
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = results[0].device if results else "?"
    where = (torch.cuda.get_device_name(0) if dev == "cuda"
             else f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads")
    batch = results[0].batch_size if results else "?"
    return f"\n\n{steps} steps × batch {batch}, device {dev} ({where}), torch {torch.__version__}"


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
