"""`bsns fedpeat ...`: build emulators, run FedPEAT rounds (cases 1-3, Fed-FT), fit and train the controller, and
control a FedPEAT session that the daemons run (`control`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from coordinator.commands._chainopts import DeploymentOpt, DevAccountOpt, KeystoreOpt, RpcOpt
from node.errors import BsnsError

fedpeat_app = typer.Typer(help="FedPEAT: emulator-assisted federated tuning and its adaptive (PPO) controller.",
                          no_args_is_help=True)


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BsnsError(f"{what} must be comma-separated numbers, got {text!r}") from None


def _workload(model: str, train_limit: int, eval_size: int, max_length: int, distill_steps: int, rule: str, seed: int,
              threads: int, method: str = "lora"):
    import torch

    from coordinator.fedpeat.workload import Workload, WorkloadConfig

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(threads)
    from node.tuners import get_method, method_names
    from node.vocab import EmulatorRule

    EmulatorRule.parse(rule)
    if not get_method(method).layer_local:
        raise BsnsError(f"PEFT method {method!r} cannot be trained on an emulator "
                        f"(supported: {', '.join(method_names(layer_local=True))})")
    return Workload.load(WorkloadConfig(model=model, train_limit=train_limit, eval_size=eval_size, max_length=max_length,
                                        distill_steps=distill_steps, rule=rule, seed=seed, method=method))


def _run_config(**kw):
    from pydantic import ValidationError

    from coordinator.fedpeat.harness import RunConfig

    try:
        return RunConfig(**{k: v for k, v in kw.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise BsnsError(f"invalid FedPEAT option {where}: {msg}" if where else f"invalid FedPEAT options: {msg}") from None


ModelOpt = typer.Option("", help="model path or hub id (default: all-MiniLM-L6-v2 from its PyPI package)")


@fedpeat_app.command("emulator")
def emulator_cmd(
    retention: float = typer.Option(..., help="fraction of the frozen middle layers kept, in [0, 1]"),
    k: int = typer.Option(1, help="adapter-bearing layers kept at each end"),
    rule: str = typer.Option("uniform", help="which middle layers stay: uniform | importance"),
    distill_steps: int = typer.Option(0, help="distil the kept middle on unlabelled SST-2 text for this many steps"),
    out: Path = typer.Option(..., help="directory for emulator.safetensors + manifest.json"),
    model: str = ModelOpt,
    threads: int = typer.Option(1),
) -> None:
    """Build an emulator, store it by content hash and print the hash."""
    from node.emulator import save_emulator

    work = _workload(model, 400, 8, 48, distill_steps, rule, 0, threads)
    work.cfg.k = k
    emu = work.emulator(retention)
    digest = save_emulator(emu, out)
    full = sum(4 * t.numel() for t in work.base.state_dict().values())
    typer.echo(json.dumps({"hash": digest, "kept_layers": list(emu.manifest.kept_layers),
                           "adapter_layers": list(emu.manifest.adapter_layers), "retention": retention,
                           "emulator_bytes": emu.num_bytes(), "full_bytes": full, "dir": str(out)}, indent=1))


@fedpeat_app.command("run")
def run_cmd(
    case: int = typer.Option(1, help="1: an emulator per device, 2: one shared emulator, 3: no emulator (full model)"),
    strategy: str = typer.Option("fixed", help="case 1: fixed | list | random | ppo; fedft = federated full fine-tuning"),
    devices: int = typer.Option(4),
    rounds: int = typer.Option(6),
    local_steps: int = typer.Option(10),
    retention: float = typer.Option(0.5, help="the fixed strategy's retention"),
    shared_retention: float = typer.Option(1.0, help="case 2's shared emulator"),
    device_retentions: Optional[str] = typer.Option(None, help="strategy list: one retention per device, comma-separated"),
    options: str = typer.Option("0.25,0.5,0.75,1.0", help="retentions the controller and random selection choose from"),
    device_classes: Optional[str] = typer.Option(None, help="each device's largest retention that fits its memory"),
    server: bool = typer.Option(False, help="the model owner's server trains on its own data too"),
    controller: Optional[Path] = typer.Option(None, help="trained controller directory (strategy ppo)"),
    record: Optional[Path] = typer.Option(None, help="write the per-round records (JSON lines, with keccak hashes)"),
    out: Optional[Path] = typer.Option(None, help="write the run's summary as JSON"),
    train_limit: int = typer.Option(8000),
    eval_size: int = typer.Option(872),
    max_length: int = typer.Option(48),
    distill_steps: int = typer.Option(0),
    rule: str = typer.Option("uniform", help="which middle layers the emulators keep: uniform | importance"),
    method: str = typer.Option("lora", help="PEFT method on the adapter layers: lora | houlsby | pfeiffer | ia3"),
    seed: int = typer.Option(0),
    model: str = ModelOpt,
    threads: int = typer.Option(1),
    session: Optional[int] = typer.Option(None, help="record the emulators and each round's plan in this session "
                                                     "(FedPeatLedger; needs an account: the session's controller)"),
    rpc: RpcOpt = None,
    keystore: KeystoreOpt = None,
    dev_account: DevAccountOpt = None,
    deployment: DeploymentOpt = None,
) -> None:
    """Run FedPEAT rounds for real and print accuracy, bytes moved and peak device memory."""
    from coordinator.fedpeat.experiments import save_json
    from coordinator.fedpeat.harness import run_fedpeat

    cfg = _run_config(case=case, strategy=strategy, devices=devices, rounds=rounds, local_steps=local_steps,
                      retention=retention, shared_retention=shared_retention,
                      device_retentions=_floats(device_retentions, "device retentions"),
                      options=_floats(options, "options"), device_max_retention=_floats(device_classes, "device classes"),
                      server_participates=server, seed=seed)
    from coordinator.fedpeat.harness import policy_for

    strat = None if cfg.strategy == "fedft" else policy_for(cfg, controller)
    chain = None
    if session is not None:  # every chain refusal happens here, before the model is even loaded
        from coordinator.commands._chainopts import chain_ctx
        from coordinator.fedpeat.onchain import ChainRecorder

        chain = ChainRecorder.from_clients(chain_ctx(rpc, deployment, keystore, dev_account).clients(), session,
                                           log=typer.echo)
        chain.check(cfg, model or "minilm")
    work = _workload(model, train_limit, eval_size, max_length, distill_steps, rule, seed, threads, method)
    if chain is not None:
        chain.attach_emulators(work, cfg)
    res = run_fedpeat(work, cfg, strategy=strat, record_path=record, log=typer.echo,
                      on_round=chain.record if chain is not None else None)
    res.pop("global_state")
    if chain is not None:
        typer.echo(f"session {session}: {len(chain.emulators)} emulator(s) attached, {len(chain.plans)} round plan(s) "
                   f"recorded on chain")
    typer.echo(f"final accuracy {res['final_accuracy']:.4f}  bytes moved {res['total_bytes']}  "
               f"peak device memory {res['peak_device_memory']}  transmission {res['transmission_s']:.1f}s")
    if out:
        save_json(res, out)


@fedpeat_app.command("verify-plans")
def verify_plans_cmd(
    record: Path = typer.Option(..., help="the round records a run wrote (--record, JSON lines)"),
    session: int = typer.Option(..., help="the session the run was recorded in"),
    rpc: RpcOpt = None,
    deployment: DeploymentOpt = None,
) -> None:
    """Check each round's plan hash in a local record against the one on chain (exit 1 on any difference)."""
    from coordinator.commands._chainopts import chain_ctx
    from coordinator.fedpeat.onchain import ChainRecorder, load_records, verify_plans

    records = load_records(record)
    ledger = ChainRecorder.from_clients(chain_ctx(rpc, deployment, signer=False).clients(), session).ledger
    problems = verify_plans(ledger, session, records)
    if problems:
        raise BsnsError(f"{len(problems)} of {len(records)} round plans differ from session {session}: {problems[0]}")
    typer.echo(f"{len(records)} round plans match session {session} on chain")


@fedpeat_app.command("control")
def control_cmd(
    session: int = typer.Option(..., help="the FedPEAT session to control (its spec has a fedpeat table)"),
    strategy: str = typer.Option("fixed", help="fixed | list | random | ppo (case 1; cases 2 and 3 are fixed by the spec)"),
    retention: Optional[float] = typer.Option(None, help="the fixed strategy's retention [default: the largest option]"),
    device_retentions: Optional[str] = typer.Option(None, help="strategy list: one retention per device, comma-separated"),
    controller: Optional[Path] = typer.Option(None, help="trained controller directory (strategy ppo)"),
    device_classes: Optional[str] = typer.Option(None, help="override each device's registered memory with a memory "
                                                            "class: its largest retention that fits, comma-separated"),
    random_p: float = typer.Option(0.5, help="strategy random: probability that a device takes part"),
    record: Optional[Path] = typer.Option(None, help="write each round's plan record (JSON lines; bsns fedpeat verify-plans)"),
    out: Optional[Path] = typer.Option(None, help="write the run's summary as JSON"),
    eval_size: Optional[int] = typer.Option(None, help="score on the first N validation sentences [default: all]"),
    round_timeout: float = typer.Option(900.0, help="seconds to wait for the session to start or a round to be final"),
    poll: float = typer.Option(1.0, help="seconds between chain polls"),
    seed: int = typer.Option(0, help="seed of the channel samples and the random strategy"),
    threads: int = typer.Option(1),
    rpc: RpcOpt = None,
    keystore: KeystoreOpt = None,
    dev_account: DevAccountOpt = None,
    deployment: DeploymentOpt = None,
) -> None:
    """Control a FedPEAT session run by the daemons: attach the spec's emulators, record each round's plan."""
    from coordinator.commands._chainopts import chain_ctx
    from coordinator.fedpeat.control import Controller, RealSpecModels
    from coordinator.fedpeat.experiments import save_json

    ctl = Controller(chain_ctx(rpc, deployment, keystore, dev_account).clients(), session, strategy_name=strategy,
                     retention=retention, device_retentions=_floats(device_retentions, "device retentions"),
                     controller_dir=controller, device_classes=_floats(device_classes, "device classes"),
                     random_p=random_p, seed=seed, record_path=record, log=typer.echo, poll=poll,
                     round_timeout=round_timeout,
                     models_factory=lambda spec: RealSpecModels.build(spec, eval_size=eval_size))
    ctl.check()  # every refusal before the model is loaded
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(threads)
    res = ctl.run()
    typer.echo(f"session {session}: {len(res['records'])} round plan(s) recorded; final accuracy "
               f"{res['final']['accuracy']:.4f} (loss {res['final']['loss']:.4f}, adapter {res['final_adapter']})")
    if out:
        save_json(res, out)


@fedpeat_app.command("fit")
def fit_cmd(
    out: Path = typer.Option(..., help="JSON file for the fitted loss model and the runs behind it"),
    devices: int = typer.Option(4),
    rounds: int = typer.Option(8),
    local_steps: int = typer.Option(10),
    options: str = typer.Option("0.25,0.5,0.75,1.0"),
    train_limit: int = typer.Option(8000),
    eval_size: int = typer.Option(872),
    seed: int = typer.Option(0),
    model: str = ModelOpt,
    threads: int = typer.Option(1),
) -> None:
    """Fit the environment's loss-vs-retention model from real runs at each retention."""
    from coordinator.fedpeat.experiments import fit_loss_model, save_json

    cfg = _run_config(devices=devices, rounds=rounds, local_steps=local_steps, options=_floats(options, "options"), seed=seed)
    work = _workload(model, train_limit, eval_size, 48, 0, "uniform", seed, threads)
    lm, runs = fit_loss_model(work, cfg, log=typer.echo)
    save_json({"loss_model": lm.to_dict(), "runs": runs}, out)
    for r, a, p in zip(lm.retentions, lm.rate, lm.plateau):
        typer.echo(f"retention {r}: rate {a:.3f} plateau {p:.4f}")


@fedpeat_app.command("train-controller")
def train_controller_cmd(
    fit: Path = typer.Option(..., help="the JSON written by `bsns fedpeat fit`"),
    out: Path = typer.Option(..., help="directory for the controller (ppo.zip + controller.json)"),
    devices: int = typer.Option(4),
    rounds: int = typer.Option(8),
    options: str = typer.Option("0.25,0.5,0.75,1.0"),
    device_classes: Optional[str] = typer.Option(None),
    timesteps: int = typer.Option(20000),
    seed: int = typer.Option(0),
    model: str = ModelOpt,
    threads: int = typer.Option(1),
) -> None:
    """Train the PPO controller in the environment fitted from real runs; compare it there with the baselines."""
    from coordinator.fedpeat.policies import FixedPolicy, PPOPolicy, RandomPolicy
    from coordinator.fedpeat.ppo import evaluate_in_env, save_controller, train_controller
    from coordinator.fedpeat.env import LossModel
    from coordinator.fedpeat.harness import device_profile, partitions

    try:
        lm = LossModel.from_dict(json.loads(fit.read_text())["loss_model"])
    except (OSError, ValueError, KeyError) as exc:
        raise BsnsError(f"cannot read the fitted loss model {fit}: {exc}") from None
    cfg = _run_config(devices=devices, rounds=rounds, options=_floats(options, "options"),
                      device_max_retention=_floats(device_classes, "device classes"), seed=seed)
    work = _workload(model, 8000, 8, 48, 0, "uniform", seed, threads)
    profile = device_profile(work, cfg)
    profile.data_weights = [float(len(p)) for p in partitions(work, cfg)[:cfg.devices]]
    ppo = train_controller(profile, lm, rounds=rounds, timesteps=timesteps, seed=seed)
    save_controller(ppo, profile, lm, rounds, out)
    for name, s in (("ppo", PPOPolicy(ppo, cfg.options)), ("fixed", FixedPolicy(cfg.retention, cfg.devices)),
                    ("random", RandomPolicy(cfg.options, cfg.devices, cfg.random_p))):
        r = evaluate_in_env(s, profile, lm, rounds=rounds)
        typer.echo(f"{name:7} reward {r['reward']:9.3f}  modelled final loss {r['final_loss']:.4f}")


def register(app: typer.Typer) -> None:
    app.add_typer(fedpeat_app, name="fedpeat")
