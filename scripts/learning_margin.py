"""How much a short training run beats the untrained adapter, over seeds: where the learning tests' margins come from.

For a spec and a step count, trains with each seed (``node.train.local.LocalTrainer``, whole model, one process)
and scores the seeded initial adapter and the trained one on the held-back split; prints each seed's gain in
accuracy points and their minimum, mean and standard deviation. A test's margin is set below the minimum gain
seen here, so the test fails when training stops helping, not when a seed is unlucky:

    .venv/bin/python scripts/learning_margin.py specs/minilm-sst2-lora.toml --steps 40 --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def gains(spec_path: Path, steps: int, seeds: list[int], overrides: dict, train_limit: int | None) -> list[float]:
    from node.job import JobSpec
    from node.train.evaluate import evaluate
    from node.train.local import LocalTrainer

    spec = JobSpec.from_toml(spec_path)
    for section, fields in overrides.items():
        spec = spec.model_copy(update={section: getattr(spec, section).model_copy(update=fields)})
    out = []
    for seed in seeds:
        trainer = LocalTrainer(spec, steps=steps, seed=seed, train_limit=train_limit)
        before = evaluate(trainer.model, trainer.data.val, trainer.data.task, trainer.device)["accuracy"]
        after = trainer.run().metrics["accuracy"]
        out.append(100 * (after - before))
        print(f"seed {seed}: {100 * before:.1f}% -> {100 * after:.1f}% (+{100 * (after - before):.1f} points)",
              flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", type=Path)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--validation-size", type=int, default=None)
    ap.add_argument("--max-seq-len", type=int, default=None)
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    overrides = {"training": {}, "data": {}}
    if args.batch_size:
        overrides["training"]["batch_size"] = args.batch_size
        overrides["training"]["micro_batches"] = 1
    if args.validation_size:
        overrides["data"]["validation_size"] = args.validation_size
    if args.max_seq_len:
        overrides["data"]["max_seq_len"] = args.max_seq_len
    g = gains(args.spec, args.steps, [int(s) for s in args.seeds.split(",")], overrides, args.train_limit)
    sd = statistics.stdev(g) if len(g) > 1 else 0.0
    print(f"gain in points over {len(g)} seeds: min {min(g):.1f}, mean {statistics.mean(g):.1f}, sd {sd:.1f}")


if __name__ == "__main__":
    main()
