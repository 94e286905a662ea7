"""FedPEAT rounds, for real: devices tune adapters on their emulators, the server aggregates and plugs them in.

The three cases of the paper are options of one run:
- case 1: each device its own emulator; its retention (and whether it takes part) comes from a participation
  policy (``coordinator.fedpeat.policies``: fixed, per-device list, random, or the PPO controller);
- case 2: one shared emulator for every device (by default retention 1.0: the model's frozen part as is);
- case 3: no emulator: plain federated PEFT with the same adapters on the full model.
``strategy="fedft"`` is the federated full fine-tuning baseline (every weight trained and exchanged).
The model owner's server can train on its own partition and join the average (``server_participates``).

Each round: the participation policy's choices pass the hard memory guard; each chosen device fetches its emulator if it
does not hold that one (an emulator exchange), gets the global adapter (renamed to its emulator's layers),
trains ``local_steps`` on its partition, and returns its adapter in the full model's naming; FedAvg
(``node.train.aggregate.fedavg``, weights = partition sizes) makes the new global adapter, which is scored
plugged into the full model. Bytes moved, measured device memory and the choices go into a per-round record
whose keccak-256 is kept locally until the chain records it (see docs/fedpeat.md).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from coordinator.fedpeat.env import ChannelModel, DeviceProfile, RewardWeights, feasible, observation
from coordinator.fedpeat.workload import FedPEATError, Workload


class RunConfig(BaseModel):
    case: Literal[1, 2, 3] = 1
    strategy: str = "fixed"                               # a participation policy (policies.py), or "fedft"
    devices: int = Field(4, ge=1, le=64)
    rounds: int = Field(6, ge=1)
    local_steps: int = Field(10, ge=1)
    retention: float = Field(0.5, ge=0.0, le=1.0)        # the fixed strategy's retention (case 1)
    shared_retention: float = Field(1.0, ge=0.0, le=1.0)  # case 2's one emulator (1.0: the frozen part as is)
    device_retentions: list[float] | None = None          # strategy "list"
    options: list[float] = [0.25, 0.5, 0.75, 1.0]        # what random / ppo choose from
    device_max_retention: list[float] | None = None       # memory class of each device (cycled); None = options
    server_participates: bool = False
    distribution: Literal["iid", "dirichlet"] = "iid"
    alpha: float = Field(0.5, gt=0.0)
    random_p: float = Field(0.5, ge=0.0, le=1.0)
    fedft_lr: float = 5e-5
    seed: int = 0

    @field_validator("options")
    @classmethod
    def _options(cls, v):
        if not v or any(not 0.0 <= r <= 1.0 for r in v):
            raise ValueError("retention options must be a non-empty list of numbers in [0, 1]")
        return sorted(set(v))

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v):
        from coordinator.fedpeat.policies import policy_names

        if v not in (*policy_names(), "fedft"):
            raise ValueError(f"unknown strategy {v!r}; expected one of {', '.join((*policy_names(), 'fedft'))}")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.case == 2 and self.shared_retention not in self.options:
            raise ValueError(f"case 2's shared retention {self.shared_retention} must be one of the options {self.options}")
        if self.strategy == "fixed" and self.case == 1 and self.retention not in self.options:
            raise ValueError(f"fixed retention {self.retention} must be one of the options {self.options}")
        if self.strategy == "list":
            if not self.device_retentions or len(self.device_retentions) != self.devices:
                raise ValueError(f"strategy 'list' needs device_retentions with one retention per device ({self.devices})")
            if any(r not in self.options for r in self.device_retentions):
                raise ValueError(f"device retentions must be among the options {self.options}")
        return self


def record_hash(record: dict) -> str:
    """keccak-256 of a record's canonical JSON (sorted keys, no spaces)."""
    from node.hashing import keccak_hex

    return keccak_hex(json.dumps(record, sort_keys=True, separators=(",", ":")).encode())


def plan_hash(record: dict) -> str:
    """The hash of a round's plan alone (what the controller chose, before any outcome): the value meant for
    the chain with the round (docs/fedpeat.md, "What the contracts need")."""
    plan = {"round": record["round"], "case": record["case"], "strategy": record["strategy"],
            "choices": [{"device": c["device"], "retention": c["retention"], "emulator": c.get("emulator")}
                        for c in record["choices"]]}
    return record_hash(plan)


def device_profile(work: Workload, cfg: RunConfig) -> DeviceProfile:
    """Measured memory needs and sizes per retention, and each device's capacity from its memory class."""
    from node.train.adapter_state import canonical_bytes

    need, ebytes = {}, {}
    adapter_bytes = 0
    for r in cfg.options:
        model, emu = work.adapted_emulator(r)
        need[r] = work.training_memory(model, key=("emu", r))
        ebytes[r] = emu.num_bytes()
        adapter_bytes = len(canonical_bytes(work.adapter_state(model)))
    classes = cfg.device_max_retention or cfg.options
    caps = []
    for i in range(cfg.devices):
        r = classes[i % len(classes)]
        if r not in need:
            raise FedPEATError(f"device memory class {r} is not one of the retention options {cfg.options}")
        # halfway between what its class needs and what the next class needs: r fits, the next does not
        bigger = [need[o] for o in cfg.options if o > r]
        caps.append(int((need[r] + bigger[0]) / 2) if bigger else int(need[r] * 1.1))
    return DeviceProfile(capacities=caps, data_weights=[1.0] * cfg.devices, options=list(cfg.options),
                         memory_need=need, emulator_bytes=ebytes, adapter_bytes=adapter_bytes)


def partitions(work: Workload, cfg: RunConfig) -> list[list[int]]:
    from node.train.data import file_hash, SST2_PATH
    from node.train.partition import partition

    parts_n = cfg.devices + (1 if cfg.server_participates else 0)
    labels = work.train_set.targets
    return partition(labels, parts_n, cfg.distribution, seed=cfg.seed, dataset_hash=file_hash(SST2_PATH),
                     alpha=cfg.alpha, min_size=work.cfg.batch_size)


def policy_for(cfg: RunConfig, controller_dir=None):
    """The participation policy a run config names (case 2: every device on the one shared emulator)."""
    from coordinator.fedpeat.policies import PolicySettings, make_policy

    if cfg.case == 2:
        return make_policy("fixed", PolicySettings(cfg.devices, tuple(cfg.options), retention=cfg.shared_retention))
    return make_policy(cfg.strategy, PolicySettings(
        cfg.devices, tuple(cfg.options), retention=cfg.retention, random_p=cfg.random_p, controller_dir=controller_dir,
        device_retentions=tuple(cfg.device_retentions) if cfg.device_retentions else None))


def run_fedpeat(work: Workload, cfg: RunConfig, strategy=None, record_path: str | Path | None = None,
                log=None, on_round=None) -> dict:
    """Run ``cfg.rounds`` real rounds; returns per-round records and totals (bytes, peak memory, accuracy).

    ``on_round(record)`` is called with each round's record before the next round starts (the chain
    recorder, coordinator.fedpeat.onchain, puts its plan on chain there); an exception from it stops the run."""
    from node.emulator import emulator_to_full, full_to_emulator
    from node.train.adapter_state import adapter_hash, canonical_bytes
    from node.train.aggregate import fedavg

    log = log or (lambda msg: None)
    profile = device_profile(work, cfg)
    parts = partitions(work, cfg)
    profile.data_weights = [float(len(p)) for p in parts[:cfg.devices]]
    channel = ChannelModel()
    rng = np.random.default_rng(cfg.seed)
    fedft = cfg.strategy == "fedft"

    if strategy is None and not (fedft or cfg.case == 3):  # those train every device on the full model
        strategy = policy_for(cfg)

    # the global model the server holds; devices in case 3 and Fed-FT hold a copy of the full model
    if fedft:
        server_model = work.full_model()
        for p in server_model.parameters():
            p.requires_grad_(True)
        global_state = {k: v.detach().clone() for k, v in server_model.state_dict().items()}
        full_bytes = len(canonical_bytes(global_state))
        mem_full = work.training_memory(server_model, key=("fedft",))
    else:
        server_model = work.adapted_full_model()
        global_state = work.adapter_state(server_model)
        full_bytes = sum(4 * t.numel() for t in work.base.state_dict().values())
        mem_full = work.training_memory(server_model, key=("full-adapted",))
    adapter_nbytes = len(canonical_bytes(global_state)) if not fedft else full_bytes

    def score(state):
        if fedft:
            server_model.load_state_dict(state)
        else:
            work.load_adapter_state(server_model, state)
        return work.evaluate(server_model)

    device_models: dict = {}
    held = [None] * cfg.devices
    exchanges = [0] * cfg.devices
    first = score(global_state)
    history = [{"round": 0, **first}]
    log(f"round 0: loss {first['loss']:.4f} acc {first['accuracy']:.4f}")
    records, total_bytes, peak_mem, total_time = [], 0, 0, 0.0
    out = Path(record_path) if record_path else None
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("")
    for t in range(1, cfg.rounds + 1):
        started = time.time()
        gains = channel.sample_gains(cfg.devices, rng)
        if fedft or cfg.case == 3:
            choices = [1.0] * cfg.devices
        else:
            obs = observation(profile, gains, exchanges, history[-1]["loss"], history[0]["loss"], t - 1, cfg.rounds,
                              RewardWeights().exchange_allowance)
            wanted = strategy.choose(obs, rng)
            if cfg.case == 2 and any(r is not None and r != cfg.shared_retention for r in wanted):
                raise FedPEATError("case 2 shares one emulator: every device must use the same retention")
            # one shared emulator (case 2): a device it does not fit sits out rather than getting another one
            choices = feasible(wanted, profile, [cfg.shared_retention] if cfg.case == 2 else None)
        states, weights, round_bytes, round_time, entries = [], [], 0, 0.0, []
        for i, r in enumerate(choices):
            if r is None:
                entries.append({"device": i, "retention": None})
                continue
            nbytes = 2 * adapter_nbytes
            if fedft:
                model, manifest, mem, tag = server_model, None, mem_full, "full"
                model.load_state_dict(global_state)
            elif cfg.case == 3:
                key = "full"
                if key not in device_models:
                    device_models[key] = work.adapted_full_model()
                model, manifest, mem, tag = device_models[key], None, mem_full, "full"
                work.load_adapter_state(model, global_state)
            else:
                if r not in device_models:
                    device_models[r] = work.adapted_emulator(r)
                model, emu = device_models[r]
                manifest, mem, tag = emu.manifest, work.training_memory(model, key=("emu", r)), emu.hash()
                work.load_adapter_state(model, full_to_emulator(global_state, manifest))
            if held[i] != tag:  # the device fetches the model it trains against (Fed-FT's travels every round)
                held[i] = tag
                exchanges[i] += 1
                if not fedft:
                    nbytes += full_bytes if manifest is None else emu.num_bytes()
            seed = cfg.seed * 100003 + t * 101 + i
            lr = cfg.fedft_lr if fedft else None
            losses = work.train(model, parts[i], cfg.local_steps, seed=seed, lr=lr)
            if fedft:
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                state = work.adapter_state(model)
                if manifest is not None:
                    state = emulator_to_full(state, manifest)
            states.append(state)
            weights.append(len(parts[i]))
            round_bytes += nbytes
            round_time = max(round_time, nbytes / channel.rate_bytes_per_s(i, gains[i]))
            peak_mem = max(peak_mem, mem)
            entries.append({"device": i, "retention": r, "emulator": tag, "train_loss": float(np.mean(losses)),
                            "bytes": nbytes, "memory": mem, "capacity": profile.capacities[i],
                            "update": adapter_hash(state) if not fedft else None})
        if cfg.server_participates:
            if fedft:
                server_model.load_state_dict(global_state)
            else:
                work.load_adapter_state(server_model, global_state)
            work.train(server_model, parts[-1], cfg.local_steps, seed=cfg.seed * 100003 + t * 101 + 99,
                       lr=cfg.fedft_lr if fedft else None)
            states.append(work.adapter_state(server_model) if not fedft else
                          {k: v.detach().clone() for k, v in server_model.state_dict().items()})
            weights.append(len(parts[-1]))
            entries.append({"device": "server", "retention": 1.0, "emulator": "full"})
        if states:
            global_state = fedavg(states, weights)
            if fedft:  # integer buffers (position ids) must not be averaged into floats
                for k, v in server_model.state_dict().items():
                    if not v.is_floating_point():
                        global_state[k] = v.clone()
        metrics = score(global_state)
        history.append({"round": t, **metrics})
        total_bytes += round_bytes
        total_time += round_time
        record = {"round": t, "case": cfg.case, "strategy": getattr(strategy, "name", cfg.strategy) if not fedft else "fedft",
                  "choices": entries, "global_adapter": adapter_hash(global_state) if not fedft else None,
                  "eval_loss": metrics["loss"], "eval_accuracy": metrics["accuracy"], "bytes": round_bytes,
                  "transmission_s": round_time}
        record["plan_hash"] = plan_hash(record)
        record["record_hash"] = record_hash(record)
        records.append(record)
        if out:
            with out.open("a") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
        if on_round is not None:
            on_round(record)
        log(f"round {t}: choices {[e['retention'] for e in entries]} loss {metrics['loss']:.4f} "
            f"acc {metrics['accuracy']:.4f} bytes {round_bytes} ({time.time() - started:.1f}s)")
    return {"config": cfg.model_dump(), "strategy": "fedft" if fedft else getattr(strategy, "name", cfg.strategy),
            "history": history, "records": records, "final_accuracy": history[-1]["accuracy"],
            "final_loss": history[-1]["loss"], "total_bytes": total_bytes, "peak_device_memory": peak_mem,
            "transmission_s": total_time, "exchanges": exchanges, "capacities": profile.capacities,
            "global_state": global_state}
