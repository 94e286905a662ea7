"""The experiments of docs/fedpeat.md: Offsite-Tuning's plug-in table and the controller against the baselines.

- ``offsite_table``: for each retention, adapters trained on the emulator, scored on the emulator itself and
  plugged into the full model; and the same adapters trained on the full model (one run, same steps, seed,
  data and evaluation split).
- ``fit_loss_model``: real FedPEAT runs at each retention with every device able to hold it; their
  validation-loss curves are what ``env.LossModel`` is fitted to.
- ``compare``: the PPO controller, fixed retention with all devices, random selection and Fed-FT in one
  run on the same devices and data; final accuracy, bytes moved, peak device memory; a plot.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from coordinator.fedpeat.env import LossModel
from coordinator.fedpeat.harness import RunConfig, device_profile, run_fedpeat
from coordinator.fedpeat.workload import Workload


def offsite_table(work: Workload, retentions: list[float], steps: int, log=print) -> dict:
    from node.emulator import emulator_to_full

    indices = list(range(len(work.train_set)))
    seed = work.cfg.seed + 17
    rows = []
    for r in retentions:
        started = time.time()
        model, emu = work.adapted_emulator(r)
        losses = work.train(model, indices, steps, seed=seed)
        on_emu = work.evaluate(model)
        full = work.adapted_full_model()
        work.load_adapter_state(full, emulator_to_full(work.adapter_state(model), emu.manifest))
        plugged = work.evaluate(full)
        rows.append({"retention": r, "kept_layers": list(emu.manifest.kept_layers), "emulator_hash": emu.hash(),
                     "emulator_bytes": emu.num_bytes(), "distill_steps": emu.manifest.distill_steps,
                     "emulator_accuracy": on_emu["accuracy"], "plugin_accuracy": plugged["accuracy"],
                     "emulator_loss": on_emu["loss"], "plugin_loss": plugged["loss"], "final_train_loss": losses[-1]})
        log(f"retention {r}: emulator {on_emu['accuracy']:.4f} plug-in {plugged['accuracy']:.4f} ({time.time() - started:.0f}s)")
    full = work.adapted_full_model()
    work.train(full, indices, steps, seed=seed)
    ft = work.evaluate(full)
    log(f"full model: {ft['accuracy']:.4f}")
    zero = work.evaluate(work.adapted_full_model())
    return {"rows": rows, "full_accuracy": ft["accuracy"], "full_loss": ft["loss"], "untrained_accuracy": zero["accuracy"],
            "steps": steps, "workload": work.cfg.__dict__}


def fit_loss_model(work: Workload, base: RunConfig, log=print) -> tuple[LossModel, dict]:
    """One real run per retention option, every device of the largest memory class; fit the loss model."""
    curves, runs = {}, {}
    for r in base.options:
        cfg = base.model_copy(update={"case": 1, "strategy": "fixed", "retention": r,
                                      "device_max_retention": [max(base.options)]})
        log(f"fit run at retention {r}")
        res = run_fedpeat(work, cfg, log=log)
        curves[r] = [h["loss"] for h in res["history"]]
        runs[r] = res["history"]
    return LossModel.fit(curves), runs


def compare(work: Workload, base: RunConfig, ppo_model, log=print) -> dict:
    """The controller and the three baselines on the same devices and data."""
    from coordinator.fedpeat.policies import PPOPolicy

    results = {}
    plans = [
        ("ppo", base.model_copy(update={"case": 1, "strategy": "ppo"}), PPOPolicy(ppo_model, base.options)),
        ("fixed", base.model_copy(update={"case": 1, "strategy": "fixed"}), None),
        ("random", base.model_copy(update={"case": 1, "strategy": "random"}), None),
        ("fedft", base.model_copy(update={"strategy": "fedft"}), None),
    ]
    for name, cfg, strategy in plans:
        log(f"compare: {name}")
        started = time.time()
        res = run_fedpeat(work, cfg, strategy=strategy, log=log)
        res.pop("global_state")
        res["wall_s"] = time.time() - started
        results[name] = res
    return results


def plot_compare(results: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for name, res in results.items():
        rounds = [h["round"] for h in res["history"]]
        axes[0].plot(rounds, [h["accuracy"] for h in res["history"]], marker="o", label=name)
    axes[0].set_xlabel("round")
    axes[0].set_ylabel("validation accuracy (full model)")
    axes[0].legend()
    names = list(results)
    axes[1].bar(names, [results[n]["total_bytes"] / 1e6 for n in names], color="tab:orange")
    axes[1].set_ylabel("total bytes moved (MB)")
    axes[2].bar(names, [results[n]["peak_device_memory"] / 1e6 for n in names], color="tab:green")
    axes[2].set_ylabel("peak device memory (MB, measured)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_json(obj, path: str | Path) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


__all__ = ["compare", "device_profile", "fit_loss_model", "offsite_table", "plot_compare", "save_json"]
