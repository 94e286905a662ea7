"""`bsns bench fedpeat`: what an emulator saves a device, against tuning the full model, in one run.

For each retention: seconds per training step, measured training memory and download size on the emulator,
printed beside the same figures for the same adapters on the full model (the baseline).
"""

from __future__ import annotations

import typer


def register(bench_app: typer.Typer) -> None:
    @bench_app.command("fedpeat")
    def bench_fedpeat(
        retentions: str = typer.Option("0.25,0.5,0.75", help="emulator retentions to measure"),
        steps: int = typer.Option(10, help="timed training steps per model (after one warm-up step)"),
        batch_size: int = typer.Option(16),
        max_length: int = typer.Option(48),
        threads: int = typer.Option(1),
    ) -> None:
        """Step time, device memory and download size: emulator vs full model (same adapters, same batches)."""
        import os
        import time

        import torch

        from coordinator.fedpeat.workload import Workload, WorkloadConfig
        from node.errors import BsnsError

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        torch.set_num_threads(threads)
        try:
            rs = [float(x) for x in retentions.split(",")]
        except ValueError:
            raise BsnsError(f"retentions must be comma-separated numbers, got {retentions!r}") from None
        work = Workload.load(WorkloadConfig(train_limit=max(400, batch_size * (steps + 1)), eval_size=8,
                                            max_length=max_length, batch_size=batch_size))
        idx = list(range(len(work.train_set)))

        def measure(model):
            work.train(model, idx, 1, seed=1)
            t = time.perf_counter()
            work.train(model, idx, steps, seed=2)
            return (time.perf_counter() - t) / steps, work.training_memory(model)

        full_bytes = sum(4 * t.numel() for t in work.base.state_dict().values())
        base_s, base_mem = measure(work.adapted_full_model())
        typer.echo(f"{'retention':>9} {'step s':>8} {'full step s':>11} {'memory MB':>10} {'full MB':>8} "
                   f"{'download MB':>11} {'full MB':>8}")
        for r in rs:
            model, emu = work.adapted_emulator(r)
            s, mem = measure(model)
            typer.echo(f"{r:9.2f} {s:8.3f} {base_s:11.3f} {mem / 1e6:10.1f} {base_mem / 1e6:8.1f} "
                       f"{emu.num_bytes() / 1e6:11.1f} {full_bytes / 1e6:8.1f}")
