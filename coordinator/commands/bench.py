"""`bsns bench ...`: each benchmark module in ``coordinator.bench`` adds its own sub-command."""

from __future__ import annotations

import importlib

import typer

BENCH_MODULES = ("gas", "p2p", "session", "fedpeat", "poison", "noniid")

bench_app = typer.Typer(help="Benchmarks: each prints its figure beside a baseline measured in the same run.",
                        no_args_is_help=True)

for _name in BENCH_MODULES:
    try:
        _module = importlib.import_module(f"coordinator.bench.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"coordinator.bench.{_name}":
            raise
        continue
    _module.register(bench_app)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
