"""Dropout on or off while training adapters: the measurement behind the choice in node/train/step.py.

Every bsns trainer keeps its model in eval mode (dropout off), because a pipeline of processes can then
reproduce the whole model exactly. This trains the same spec with dropout off and on (the model in train
mode: MiniLM's 0.1 hidden and attention dropout), same seeds, same batches, and prints the held-back
accuracy of each pair and the mean difference (on - off), so the choice rests on a figure:

    .venv/bin/python scripts/bench_dropout.py --steps 600 --seeds 0,1 --methods lora,houlsby
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run(spec_path: Path, steps: int, seed: int, dropout: bool) -> dict:
    from node.job import JobSpec
    from node.train.local import LocalTrainer

    trainer = LocalTrainer(JobSpec.from_toml(spec_path), steps=steps, seed=seed)
    trainer.model.train(dropout)
    res = trainer.run()
    return {"accuracy": res.metrics["accuracy"], "loss": res.metrics["loss"], "seconds": round(res.train_seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--methods", default="lora,houlsby")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    root = Path(__file__).resolve().parents[1]
    rows = []
    for method in args.methods.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            pair = {d: run(root / "specs" / f"minilm-sst2-{method}.toml", args.steps, seed, d) for d in (False, True)}
            rows.append({"method": method, "seed": seed, "off": pair[False], "on": pair[True]})
            print(f"{method} seed {seed}: off {pair[False]['accuracy']:.4f}  on {pair[True]['accuracy']:.4f}", flush=True)
    print(f"\n| method | seed | dropout off | dropout on | on - off |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['seed']} | {100 * r['off']['accuracy']:.2f} | {100 * r['on']['accuracy']:.2f} | "
              f"{100 * (r['on']['accuracy'] - r['off']['accuracy']):+.2f} |")
    for method in args.methods.split(","):
        d = [r["on"]["accuracy"] - r["off"]["accuracy"] for r in rows if r["method"] == method]
        print(f"{method}: mean on - off {100 * statistics.mean(d):+.2f} points over {len(d)} seeds")
    if args.out:
        args.out.write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
