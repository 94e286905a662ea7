"""Reproduce docs/fedpeat.md: the Offsite-Tuning plug-in table and the controller against the baselines.

    .venv/bin/python scripts/bench_fedpeat.py --out docs/fedpeat            # the figures in the doc
    .venv/bin/python scripts/bench_fedpeat.py --steps 20 --rounds 2 ...     # a quick smoke run

Steps: (1) offsite table at each retention; (2) real FedPEAT runs at each retention option, whose loss curves
fit the environment; (3) PPO trained in that environment; (4) PPO, fixed retention, random selection and
Fed-FT run for real on the same devices; JSON results and a plot under --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/fedpeat")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=300, help="training steps for the offsite table")
    ap.add_argument("--retentions", default="0.25,0.5,0.75")
    ap.add_argument("--distill-steps", type=int, default=0)
    ap.add_argument("--rule", default="uniform", choices=["uniform", "importance"], help="which middle layers stay")
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--local-steps", type=int, default=10)
    ap.add_argument("--timesteps", type=int, default=20000, help="PPO training steps in the fitted environment")
    ap.add_argument("--train-limit", type=int, default=8000)
    ap.add_argument("--eval-size", type=int, default=872)
    ap.add_argument("--max-length", type=int, default=48)
    ap.add_argument("--skip-offsite", action="store_true")
    ap.add_argument("--skip-controller", action="store_true", help="only the offsite table")
    ap.add_argument("--fit-from", default=None, help="reuse the real fit runs of an earlier fit.json (refit, no rerun)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from coordinator.fedpeat.policies import FixedPolicy, PPOPolicy, RandomPolicy
    from coordinator.fedpeat.ppo import evaluate_in_env, save_controller, train_controller
    from coordinator.fedpeat.experiments import compare, fit_loss_model, offsite_table, plot_compare, save_json
    from coordinator.fedpeat.harness import RunConfig, device_profile
    from coordinator.fedpeat.workload import Workload, WorkloadConfig

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log = lambda m: print(f"[{time.time() - t0:7.1f}s] {m}", flush=True)  # noqa: E731
    work = Workload.load(WorkloadConfig(train_limit=a.train_limit, eval_size=a.eval_size, max_length=a.max_length,
                                        distill_steps=a.distill_steps, rule=a.rule, seed=a.seed))
    if not a.skip_offsite:
        table = offsite_table(work, [float(x) for x in a.retentions.split(",")], a.steps, log=log)
        save_json(table, out / "offsite.json")
    if a.skip_controller:
        log("done")
        return
    base = RunConfig(devices=a.devices, rounds=a.rounds, local_steps=a.local_steps, seed=a.seed)
    if a.fit_from:
        import json

        from coordinator.fedpeat.env import LossModel

        runs = {float(r): h for r, h in json.loads(Path(a.fit_from).read_text())["runs"].items()}
        loss_model = LossModel.fit({r: [x["loss"] for x in h] for r, h in runs.items()})
        log(f"refitted from the real runs in {a.fit_from}")
    else:
        loss_model, runs = fit_loss_model(work, base, log=log)
    log("fitted " + ", ".join(f"r={r}: a={x:.3f} L*={p:.4f}" for r, x, p in
                              zip(loss_model.retentions, loss_model.rate, loss_model.plateau)))
    save_json({"loss_model": loss_model.to_dict(), "runs": runs}, out / "fit.json")
    profile = device_profile(work, base)
    from coordinator.fedpeat.harness import partitions

    profile.data_weights = [float(len(p)) for p in partitions(work, base)[:base.devices]]
    log(f"training PPO for {a.timesteps} steps")
    ppo = train_controller(profile, loss_model, rounds=a.rounds, timesteps=a.timesteps, seed=a.seed)
    save_controller(ppo, profile, loss_model, a.rounds, out / "controller")
    in_env = {name: evaluate_in_env(s, profile, loss_model, rounds=a.rounds) for name, s in
              (("ppo", PPOPolicy(ppo, base.options)), ("fixed", FixedPolicy(base.retention, base.devices)),
               ("random", RandomPolicy(base.options, base.devices, base.random_p)))}
    log(f"in the fitted environment: {in_env}")
    results = compare(work, base, ppo, log=log)
    save_json({"results": results, "in_env": in_env, "profile": profile.__dict__}, out / "compare.json")
    plot_compare(results, out / "compare.png")
    print(f"{'strategy':8} {'final acc':>9} {'bytes moved':>14} {'peak mem (MB)':>14} {'tx time (s)':>12}")
    for name, res in results.items():
        print(f"{name:8} {res['final_accuracy']:9.4f} {res['total_bytes']:14d} {res['peak_device_memory'] / 1e6:14.1f} "
              f"{res['transmission_s']:12.1f}")
    log("done")


if __name__ == "__main__":
    main()
