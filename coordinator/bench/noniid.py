"""`bsns bench noniid`: a federated session's validation accuracy on a label-skewed (Dirichlet) or contiguous
partition, beside centralised training on the same total examples, from one run.

In-process at small size (as ``bsns bench poison``, whose ``Setup`` it reuses): MiniLM's first ``--frozen`` layers
are a frozen prefix whose outputs are computed once; the rest is one shard with the adapter and the classifier head,
built by ``node.train.build`` and stepped by ``node.train.step``. Each replica trains ``--interval`` steps per round
on its part of the deterministic partition (``node.train.partition``) from the round's global adapter, keeping its
own optimizer moments across rounds as a daemon does, and each round is aggregated by
``node.train.screen.screened_aggregate`` with the registered aggregation rule and server update
(``node.train.server``): the functions the daemon's sync runs. The centralised baseline trains one model for
``replicas x rounds x interval`` steps of the same batch size: the same number of examples in total.

``--variants`` names the federated runs to compare (``VARIANTS``): the diagnosis of issue 19 (docs/results.md,
"Non-IID") is these runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import typer

from coordinator.bench.poison import Setup

LORA_ALL = ("lora", '{ r = 8, alpha = 16.0, target_modules = ["query", "key", "value", "dense"] }')
HOULSBY = ("houlsby", "{ bottleneck_size = 32 }")
METHODS = {"lora": LORA_ALL, "houlsby": HOULSBY}


@dataclass(frozen=True)
class Variant:
    """One federated configuration: the weighting, the server update, the optimizer moments across rounds."""

    weighting: str = "samples"    # "samples": FedAvg by partition size; "equal": every kept replica alike
    server: str = "none"          # a node.train.server name
    moments: str = "keep"         # "keep": a replica's AdamW moments carry across rounds; "reset": fresh each round
    interval_div: int = 1         # local steps per round divided by this, rounds multiplied (same total steps)
    loss: str = "plain"           # "balanced": logits shifted by log of the replica's label prior in training
                                  # (logit adjustment, Menon et al. 2021; FedLC, Zhang et al. 2022)


VARIANTS: dict[str, Variant] = {
    "fedavg": Variant(),
    "equal": Variant(weighting="equal"),
    "reset": Variant(moments="reset"),
    "equal-reset": Variant(weighting="equal", moments="reset"),
    "short": Variant(interval_div=3),
    "equal-short": Variant(weighting="equal", interval_div=3),
    "balanced": Variant(loss="balanced"),
    "equal-balanced": Variant(weighting="equal", loss="balanced"),
    "fedavgm": Variant(server="fedavgm"),
    "equal-fedavgm": Variant(weighting="equal", server="fedavgm"),
}


def _train_local(st: Setup, model_state, parts: list[int], opt, steps: int, batch: int, seed: int, start_step: int,
                 total_steps: int, shift=None):
    import torch

    from node.train import data as D
    from node.train.step import begin_step, finish_step, loss_fn, lr_at
    from node.tuners import adapter_state_dict, load_adapter_state_dict

    load_adapter_state_dict(st.model, model_state)
    h, m, y = st.train
    order = D.batch_indices(len(parts), batch, seed, steps, start_step=start_step)
    for i in range(steps):
        idx = torch.tensor([parts[j] for j in next(order)])
        begin_step(opt, lr_at(start_step + i, total_steps, st.opt_lr))
        logits = st.model(hidden_states=h[idx], attention_mask=m[idx])
        if shift is not None:
            logits = logits + shift
        loss_fn(logits, {"labels": y[idx]}, "sequence-classification").backward()
        finish_step(opt)
    return {k: v.detach().clone() for k, v in adapter_state_dict(st.model).items()}


def _log_prior(labels, classes: int = 2):
    """log of a replica's label frequencies, add-one smoothed (a class it never sees is rare, not impossible)."""
    import torch

    counts = torch.bincount(labels, minlength=classes).double() + 1.0
    return torch.log(counts / counts.sum()).float()


def centralised(st: Setup, steps: int, batch: int) -> float:
    """Accuracy of one model trained ``steps`` steps on the whole training set (the baseline)."""
    from node.train.step import make_optimizer

    opt = make_optimizer(st.model, st.opt_lr)
    everything = [i for p in st.parts for i in p]
    everything.sort()
    state = _train_local(st, st.init, everything, opt, steps, batch, st.spec.training.seed, 0, steps)
    return st.accuracy(state)


def federated(st: Setup, v: Variant, rounds: int, interval: int, batch: int, trace=None) -> float:
    """Accuracy of the final aggregate of a session run as ``v`` says; ``trace(round, locals, aggregate)`` gets each
    round's accuracies (of every replica's local adapter and of the aggregate) when given."""
    from node.train.adapter_state import canonical_bytes, state_from_bytes
    from node.train.aggregate import rule_for
    from node.train.screen import screened_aggregate
    from node.train.server import server_update_for
    from node.train.step import make_optimizer

    n = st.replicas
    interval, rounds = interval // v.interval_div, rounds * v.interval_div
    total = rounds * interval
    counts = [len(p) for p in st.parts]
    weight = counts.__getitem__ if v.weighting == "samples" else (lambda r: 1)
    rule = rule_for(st.spec.training.model_copy(update={"aggregation": "fedavg"}))
    server = server_update_for(v.server)
    opts = [make_optimizer(st.model, st.opt_lr) for _ in range(n)]
    shifts = [_log_prior(st.train[2][p]) if v.loss == "balanced" else None for p in st.parts]
    history = [canonical_bytes(st.init)]  # the finals so far: what a server update may read
    for rnd in range(rounds):
        glob = state_from_bytes(history[-1])
        local = {}
        for r in range(n):
            if v.moments == "reset":
                opts[r] = make_optimizer(st.model, st.opt_lr)
            local[r] = _train_local(st, glob, st.parts[r], opts[r], interval, batch, st.spec.training.seed + r,
                                    rnd * interval, total, shifts[r])
        mean, _refused = screened_aggregate({r: canonical_bytes(local[r]) for r in range(n)}, history[-1], rule,
                                            weight)
        history.append(server.apply(mean, history))
        if trace is not None:
            trace(rnd, [st.accuracy(local[r]) for r in range(n)], st.accuracy(state_from_bytes(history[-1])))
    return st.accuracy(state_from_bytes(history[-1]))


def register(bench_app: typer.Typer) -> None:
    @bench_app.command("noniid")
    def bench_noniid(
        distribution: str = typer.Option("dirichlet", help="iid, dirichlet or contiguous"),
        alpha: float = typer.Option(0.5, min=0.001, help="Dirichlet concentration"),
        replicas: int = typer.Option(4, min=2, max=16),
        rounds: int = typer.Option(6, min=1, max=100),
        interval: int = typer.Option(30, min=1, max=300, help="local steps per round (the sync interval)"),
        batch_size: int = typer.Option(16, min=1, max=256),
        method: str = typer.Option("lora", help="lora (r 8 on query/key/value/dense) or houlsby"),
        frozen: int = typer.Option(4, min=0, max=5, help="MiniLM layers run once as a frozen prefix"),
        train_limit: int = typer.Option(8000, min=100, max=67000),
        validation: int = typer.Option(872, min=100, max=5000),
        max_length: int = typer.Option(32, min=8, max=128),
        learning_rate: float = typer.Option(2e-3),
        seeds: str = typer.Option("0,1,2", help="comma-separated session seeds (partition and batches)"),
        variants: str = typer.Option(",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS)),
        per_round: bool = typer.Option(False, help="print each round's local and aggregate accuracies"),
        threads: int = typer.Option(1),
    ) -> None:
        """Federated accuracy on a skewed partition per variant, beside centralised training of the same examples."""
        import os
        import statistics

        import torch

        from node.errors import BsnsError

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        torch.set_num_threads(threads)
        vs = [x.strip() for x in variants.split(",") if x.strip()]
        for x in vs:
            if x not in VARIANTS:
                raise BsnsError(f"unknown variant {x!r}; known: {', '.join(VARIANTS)}")
        if method not in METHODS:
            raise BsnsError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        t0 = time.perf_counter()
        acc: dict[str, list[float]] = {"centralised": [], **{x: [] for x in vs}}
        for seed in seed_list:
            st = Setup(replicas=replicas, shards=1, frozen=frozen, train_limit=train_limit, val=validation,
                       seq=max_length, lr=learning_rate, seed=seed, distribution=distribution, alpha=alpha,
                       method=METHODS[method], min_size=batch_size)
            ys = st.train[2]
            skew = ", ".join(f"{len(p)} ({100.0 * float(ys[p].float().mean()):.0f}% pos)" for p in st.parts)
            typer.echo(f"seed {seed}: parts {skew}; untrained {st.accuracy(st.init):.2f}", err=True)
            acc["centralised"].append(centralised(st, replicas * rounds * interval, batch_size))
            typer.echo(f"  centralised {acc['centralised'][-1]:.2f}", err=True)
            for x in vs:
                t = time.perf_counter()

                def trace(rnd, loc, agg):
                    typer.echo(f"    round {rnd}: locals " + " ".join(f"{a:.1f}" for a in loc) + f"  aggregate {agg:.1f}",
                               err=True)

                acc[x].append(federated(st, VARIANTS[x], rounds, interval, batch_size, trace if per_round else None))
                typer.echo(f"  {x:14s} {acc[x][-1]:6.2f}  ({time.perf_counter() - t:.0f} s)", err=True)
        base = statistics.mean(acc["centralised"])
        typer.echo(f"| run | accuracy (mean of {len(seed_list)} seeds) | per seed | vs centralised |")
        typer.echo("|---|---:|---|---:|")
        for x, a in acc.items():
            m = statistics.mean(a)
            typer.echo(f"| {x} | {m:.2f} | {' '.join(f'{v:.2f}' for v in a)} | "
                       f"{'' if x == 'centralised' else f'{m - base:+.2f}'} |")
        typer.echo(f"\n{distribution}{f' alpha={alpha:g}' if distribution == 'dirichlet' else ''}, {replicas} replicas, "
                   f"{method}, {rounds} rounds x {interval} steps x batch {batch_size}; centralised "
                   f"{replicas * rounds * interval} steps; {time.perf_counter() - t0:.0f} s", err=True)
