"""`bsns bench poison`: validation accuracy when one replica per shard poisons every round, per aggregation rule,
beside the clean run of the same rule and the unscreened FedAvg of announced weights (how sync worked before).

In-process at small size, so it finishes in minutes on two cores: MiniLM's first ``--frozen`` layers are a
frozen prefix whose outputs are computed once; the trained shard(s) are the remaining layers with LoRA and the
classifier head, built by ``node.train.build`` and stepped by ``node.train.step`` exactly as a pipeline's last
stage is. Each replica trains ``--interval`` steps per round on its part of the deterministic partition
(``node.train.partition``) from the round's global adapter, with its own optimizer state, and every shard's
round is aggregated by ``node.train.screen.screened_aggregate``: the very function the daemon's sync runs.
With ``--shards 2`` the trained layers are split in two shards whose updates are aggregated separately, and a
different replica poisons each.

Attacks (one replica per shard, every round): ``sign-flip-x10`` (the update's direction reversed and scaled
ten times), ``gaussian`` (noise of twice the replica's honest update norm: passes the norm screen),
``lying-count`` (announces 10^15 samples with its update's sign flipped), ``nan``, ``stale`` (resends its own
honest update of the previous round; in round 0 the unchanged start), ``copy`` (resends another replica's update
of this round).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import typer

RULES = ("fedavg", "median", "trimmed-mean", "geometric-median", "norm-clip")
BEFORE = "fedavg-announced"  # no screening, weights as announced: the sync before issue 12
LIE = 10**15


LORA_QV = ("lora", '{ r = 8, alpha = 16.0, target_modules = ["query", "value"] }')


def _spec(seq: int, val: int, lr: float, seed: int, method: tuple[str, str] = LORA_QV):
    """The demo's spec (``coordinator.demo.demo_spec_text``: one home for the job the project measures) with the
    given method (name, config; LoRA on query/value by default), the trimmed mean's fraction for 3-4 replicas, and
    this bench's sizes."""
    from coordinator.demo import demo_spec_text
    from node.job import JobSpec

    return JobSpec.from_text(demo_spec_text(
        max_seq_len=seq, validation_size=val, learning_rate=lr, seed=seed, rounds=1, sync_interval=1, batch_size=16,
        micro_batches=1,
        method=method[0], method_config=method[1],
        aggregation="trimmed-mean", trim_fraction=0.34))


# -- attacks: (honest states this round by replica, the attacker, the round's start, its last submission) -> state
def _delta(s, g, scale):
    return {k: g[k] + scale * (s[k] - g[k]) for k in g}


def _gaussian(rnd, honest, who, start, last):
    import torch

    d = {k: honest[who][k] - start[k] for k in start}
    norm = sum(float((v.double() ** 2).sum()) for v in d.values()) ** 0.5
    gen = torch.Generator().manual_seed(1000 + rnd)
    noise = {k: torch.randn(v.shape, generator=gen) for k, v in start.items()}
    nnorm = sum(float((v.double() ** 2).sum()) for v in noise.values()) ** 0.5
    return {k: start[k] + noise[k] * (2.0 * norm / nnorm) for k in start}


def _nan(rnd, honest, who, start, last):
    out = {k: v.clone() for k, v in honest[who].items()}
    next(iter(out.values())).view(-1)[0] = float("nan")
    return out


ATTACKS: dict[str, Callable] = {
    "clean": lambda rnd, honest, who, start, last: honest[who],
    "sign-flip-x10": lambda rnd, honest, who, start, last: _delta(honest[who], start, -10.0),
    "gaussian": _gaussian,
    "lying-count": lambda rnd, honest, who, start, last: _delta(honest[who], start, -1.0),
    "nan": _nan,
    "stale": lambda rnd, honest, who, start, last: start if last is None else last,
    "copy": lambda rnd, honest, who, start, last: honest[(who + 1) % len(honest)],
}


class Setup:
    """The frozen prefix's outputs, the trained shard model, the partition and the shards' key groups."""

    def __init__(self, *, replicas: int, shards: int, frozen: int, train_limit: int, val: int, seq: int,
                 lr: float, seed: int, distribution: str = "iid", alpha: float = 0.5,
                 method: tuple[str, str] = LORA_QV, min_size: int = 1) -> None:
        import torch

        from node.train.build import build_data, build_model
        from node.train.partition import partition
        from node.tuners import adapter_state_dict

        self.spec = _spec(seq, val, lr, seed, method)
        self.replicas, self.shards, self.seq = replicas, shards, seq
        data = build_data(self.spec, train_limit=train_limit)
        prefix = build_model(self.spec, 0, frozen)
        self.train = self._features(prefix, data.train)
        self.val = self._features(prefix, data.val)
        del prefix
        self.model = build_model(self.spec, frozen, 6)
        self.init = {k: v.detach().clone() for k, v in adapter_state_dict(self.model).items()}
        self.parts = partition(list(data.train.targets) if distribution == "dirichlet" else len(data.train), replicas,
                               distribution, seed=seed, dataset_hash="0x" + "00" * 32, alpha=alpha,
                               min_size=min_size)
        layers = list(range(frozen, 6))
        cut = layers[: len(layers) // shards] if shards > 1 else layers

        def shard_of(key: str) -> int:
            m = re.search(r"layers\.(\d+)\.", key)
            return 0 if shards == 1 or (m and int(m.group(1)) in cut) else 1

        self.keys = [[k for k in sorted(self.init) if shard_of(k) == s] for s in range(shards)]
        self.opt_lr = lr
        torch.manual_seed(seed)

    def _features(self, prefix, tset):
        import torch

        from node.train import data as D

        hs, ms, ys = [], [], []
        with torch.no_grad():
            for idx in D.eval_batches(len(tset), 128):
                b = tset.collate(idx)
                h = prefix(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
                pad = self.seq - h.shape[1]
                hs.append(torch.nn.functional.pad(h, (0, 0, 0, pad)))
                ms.append(torch.nn.functional.pad(b["attention_mask"], (0, pad)))
                ys.append(b["labels"])
        return torch.cat(hs), torch.cat(ms), torch.cat(ys)

    def accuracy(self, state) -> float:
        import torch

        from node.tuners import load_adapter_state_dict

        load_adapter_state_dict(self.model, state)
        h, m, y = self.val
        with torch.no_grad():
            correct = 0
            for i in range(0, len(y), 256):
                logits = self.model(hidden_states=h[i:i + 256], attention_mask=m[i:i + 256])
                correct += int((logits.argmax(-1) == y[i:i + 256]).sum())
        return 100.0 * correct / len(y)


def run_one(st: Setup, rule: str, attack: str, rounds: int, interval: int, batch: int) -> tuple[float, int]:
    """(validation accuracy after ``rounds`` rounds with ``attack`` by one replica per shard, aggregated by ``rule``;
    how many honest updates the screen refused: its false positives)."""
    import torch

    from node.train import data as D
    from node.train.adapter_state import canonical_bytes, state_from_bytes
    from node.train.aggregate import fedavg, rule_for
    from node.train.screen import screened_aggregate
    from node.train.step import begin_step, finish_step, loss_fn, lr_at, make_optimizer
    from node.tuners import adapter_state_dict, load_adapter_state_dict

    n, total = st.replicas, rounds * interval
    counts = [len(p) for p in st.parts]
    attackers = [(n - 1 - s) % n for s in range(st.shards)]  # a different replica poisons each shard
    rule_obj = rule_for(st.spec.training.model_copy(update={"aggregation": rule if rule != BEFORE else "fedavg"}))
    glob = {k: v.clone() for k, v in st.init.items()}
    opts = [make_optimizer(st.model, st.opt_lr) for _ in range(n)]
    last: list[dict | None] = [None] * st.shards
    honest_refused = 0
    h, m, y = st.train
    for rnd in range(rounds):
        honest = {}
        for r in range(n):
            load_adapter_state_dict(st.model, glob)
            order = D.batch_indices(len(st.parts[r]), batch, st.spec.training.seed + r, interval,
                                    start_step=rnd * interval)
            for i in range(interval):
                idx = torch.tensor([st.parts[r][j] for j in next(order)])
                begin_step(opts[r], lr_at(rnd * interval + i, total, st.opt_lr))
                logits = st.model(hidden_states=h[idx], attention_mask=m[idx])
                loss_fn(logits, {"labels": y[idx]}, "sequence-classification").backward()
                finish_step(opts[r])
            honest[r] = {k: v.detach().clone() for k, v in adapter_state_dict(st.model).items()}
        new = {}
        for s, keys in enumerate(st.keys):
            part = {r: {k: honest[r][k] for k in keys} for r in range(n)}
            start = {k: glob[k] for k in keys}
            who = attackers[s]
            sent = dict(part)
            sent[who] = ATTACKS[attack](rnd, part, who, start, last[s])
            last[s] = part[who]  # "stale" resends this: its own honest update of the round before
            if rule == BEFORE:
                weights = [LIE if (attack == "lying-count" and r == who) else counts[r] for r in range(n)]
                new.update(fedavg([sent[r] for r in range(n)], weights))
            else:
                data, refused = screened_aggregate({r: canonical_bytes(sent[r]) for r in range(n)},
                                                   canonical_bytes(start), rule_obj, counts.__getitem__)
                new.update(state_from_bytes(data))
                # a copied pair counts once, as its lower replica's: when that is the copier, the victim's identical
                # update is the one refused (by design: the content is kept); any other honest refusal is a false positive
                victim = (who + 1) % n if attack == "copy" else None
                honest_refused += sum(1 for r in refused if r != who and r != victim)
        glob = new
    return st.accuracy(glob), honest_refused


def register(bench_app: typer.Typer) -> None:
    @bench_app.command("poison")
    def bench_poison(
        replicas: int = typer.Option(4, min=3, max=16, help="replicas per shard"),
        shards: int = typer.Option(1, min=1, max=2, help="shards the trained layers are split into"),
        rounds: int = typer.Option(8, min=1, max=100),
        interval: int = typer.Option(5, min=1, max=100, help="local steps per round (the sync interval)"),
        batch_size: int = typer.Option(16, min=1, max=256),
        frozen: int = typer.Option(5, min=0, max=5, help="MiniLM layers run once as a frozen prefix "
                                                                  "(the trained shards share the rest)"),
        train_limit: int = typer.Option(2000, min=100, max=60000),
        validation: int = typer.Option(872, min=100, max=5000, help="held-back examples the accuracy is on"),
        max_length: int = typer.Option(16, min=8, max=128),
        learning_rate: float = typer.Option(5e-3),
        seed: int = typer.Option(0),
        attacks: str = typer.Option(",".join(ATTACKS), help="comma-separated, from: " + ", ".join(ATTACKS)),
        rules: str = typer.Option(",".join((BEFORE, *RULES)), help="comma-separated aggregation rules"),
        threads: int = typer.Option(1),
    ) -> None:
        """Accuracy under one poisoning replica per shard, per rule, beside each rule's clean run."""
        import os

        import torch

        from node.errors import BsnsError

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        torch.set_num_threads(threads)
        atk = [a.strip() for a in attacks.split(",") if a.strip()]
        rls = [r.strip() for r in rules.split(",") if r.strip()]
        for a in atk:
            if a not in ATTACKS:
                raise BsnsError(f"unknown attack {a!r}; known: {', '.join(ATTACKS)}")
        for r in rls:
            if r not in (BEFORE, *RULES):
                raise BsnsError(f"unknown rule {r!r}; known: {', '.join((BEFORE, *RULES))}")
        if 6 - frozen < shards:
            raise BsnsError(f"--shards {shards} needs at least {shards} trained layers: --frozen {6 - shards} or less")
        if "clean" not in atk:
            atk.insert(0, "clean")
        t0 = time.perf_counter()
        st = Setup(replicas=replicas, shards=shards, frozen=frozen, train_limit=train_limit, val=validation,
                   seq=max_length, lr=learning_rate, seed=seed)
        typer.echo(f"{shards} shard(s) x {replicas} replicas, {rounds} rounds x {interval} steps, batch "
                   f"{batch_size}, {len(st.val[2])} validation examples; set-up {time.perf_counter() - t0:.0f} s",
                   err=True)
        acc: dict[tuple[str, str], float] = {}
        false_pos = 0
        for r in rls:
            for a in atk:
                t = time.perf_counter()
                acc[(r, a)], fp = run_one(st, r, a, rounds, interval, batch_size)
                false_pos += fp
                typer.echo(f"  {r:17s} {a:14s} {acc[(r, a)]:6.2f}  honest updates refused {fp}  "
                           f"({time.perf_counter() - t:.0f} s)", err=True)
        typer.echo("| attack | " + " | ".join(rls) + " |")
        typer.echo("|---|" + "---:|" * len(rls))
        for a in atk:
            cells = [f"{acc[(r, a)]:.2f}" + ("" if a == "clean" else f" ({acc[(r, a)] - acc[(r, 'clean')]:+.2f})")
                     for r in rls]
            typer.echo(f"| {a} | " + " | ".join(cells) + " |")
        typer.echo(f"\naccuracy (%) on {len(st.val[2])} held-back SST-2 examples; (change vs the same rule's clean "
                   f"run); honest updates the screen refused in all runs: {false_pos}; "
                   f"{time.perf_counter() - t0:.0f} s in all", err=True)
