"""The FedPEAT controller of a live session: per ledger round, observe the global adapter, choose, guard, record.

``bsns fedpeat control --session ID`` runs this on the model owner's machine with the controller account,
while the session's daemons train (docs/fedpeat.md, "Run by the daemons"). It owns the per-round control loop:

1. **check** (before any model is loaded, nothing sent): the deployment has a FedPeatLedger, the session
   exists and is open, its spec (read from the chain, checked against the proposal's spec hash) has a
   ``[fedpeat]`` table, this account is the session's controller, no round has a plan yet, and the local
   model's weights hash is the proposal's base model hash;
2. **prepare**: build the spec's emulators with ``node.emulator.spec.emulator_for_spec`` (the hashes the
   daemons compute), register and attach them (``ChainRecorder``), measure each retention's training memory
   (``Workload.training_memory``), wait for the join window to close, and read the devices: device i is
   replica i of the one shard, its capacity the memory its node registered in the NodeRegistry (or a memory
   class from ``device_classes``);
3. **each ledger round t** (1-based; session round ``t - 1`` obeys it): the observation's loss is the global
   adapter's validation loss on the full model (round 1: the fresh adapter; later: the final aggregate of
   session round ``t - 2``, fetched by hash from the session's daemons and refused unless its keccak-256 is
   the chain's final hash); the strategy chooses; the hard memory guard (``env.feasible``) applies; the plan
   (``runner.plan_hash`` format) is recorded on chain and appended to the JSON-lines record;
4. **end**: wait for the last round's final aggregate and score it plugged into the full model.

Chain access goes through the ``node.chain`` clients (or objects with the same methods, in unit tests); the
model side through a ``SpecModels`` (``RealSpecModels`` here, a small fake in tests); adapters through a
``fetch(peer, hash, timeout) -> bytes`` over the session's peers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from node.errors import BsnsError

MB = 1_000_000  # NodeRegistry.memoryMB counts decimal megabytes (as every memory figure in docs/fedpeat.md)


class ControlError(BsnsError):
    """The controller cannot run, or cannot go on with, this session."""


@dataclass(frozen=True)
class Device:
    """Replica ``replica`` of the session's one shard, run by the node at ``address``."""

    replica: int
    address: str
    memory_mb: int
    peer_id: str = ""
    addr: str = ""


class SpecModels(Protocol):
    """What the controller needs of the spec's model: emulators, their measured needs, and scoring."""

    emulators: dict[float, Any]         # retention -> node.emulator.Emulator (hash(), manifest, num_bytes())
    memory_need: dict[float, int]       # measured training bytes at each retention
    adapter_bytes: int

    def initial_state(self) -> dict: ...

    def evaluate(self, state: dict) -> dict: ...   # {"loss", "accuracy"} of the full model with this adapter


def emulator_retentions(fp) -> list[float]:
    """Which emulators a session needs: every option (case 1: the guard may fall back to any smaller one),
    the shared one (case 2), the full frozen model (case 3: retention 1.0, an emulator keeping every layer)."""
    if fp.case == 2:
        return [float(fp.shared_retention)]
    if fp.case == 3:
        return [1.0]
    return [float(r) for r in fp.options]


def plan_record(t: int, case: int, strategy: str, choices: list, emulators: dict[float, str], extra: dict) -> dict:
    """The round's record: the plan (what ``runner.plan_hash`` covers) plus what the controller observed."""
    from coordinator.fedpeat.harness import plan_hash, record_hash

    entries = []
    for i, r in enumerate(choices):
        entries.append({"device": i, "retention": None} if r is None else
                       {"device": i, "retention": float(r), "emulator": emulators[float(r)]})
    rec = {"round": t, "case": case, "strategy": strategy, "choices": entries, **extra}
    rec["plan_hash"] = plan_hash(rec)
    rec["record_hash"] = record_hash(rec)
    return rec


def capacities_from_classes(classes: list[float], n: int, options: list[float], need: dict[float, int]) -> list[int]:
    """Device i's capacity from its memory class (cycled): room halfway between what its class needs and what
    the next option needs (the runner's rule), so the class fits and the next one does not."""
    caps = []
    for i in range(n):
        r = float(classes[i % len(classes)])
        if r not in need:
            raise ControlError(f"device memory class {r} is not one of the spec's retention options {options}")
        bigger = [need[o] for o in options if o > r]
        caps.append(int((need[r] + bigger[0]) / 2) if bigger else int(need[r] * 1.1))
    return caps


@dataclass
class Controller:
    """One session's controller. ``clients``: ``node.chain.clients.Clients`` with a sender (the controller's)."""

    clients: Any
    session_id: int
    strategy_name: str = "fixed"
    retention: float | None = None             # fixed: default the largest option
    device_retentions: list[float] | None = None
    controller_dir: Path | None = None          # ppo
    device_classes: list[float] | None = None  # override the registered memory with memory classes
    random_p: float = 0.5
    seed: int = 0
    record_path: Path | None = None
    log: Callable[[str], None] = lambda msg: None
    poll: float = 1.0
    round_timeout: float = 900.0                # per wait for a round's finality (or the join window)
    fetch_timeout: float = 60.0
    models_factory: Callable[[Any], SpecModels] | None = None
    fetch: Callable[[Device, str, float], bytes] | None = None
    spec: Any = None
    recorder: Any = None
    records: list = field(default_factory=list)

    # -- 1. refusals before any model is loaded --------------------------------------------------------
    def check(self):
        """The spec of an open FedPEAT session that this account controls and that has no plans yet."""
        from coordinator.fedpeat.onchain import ChainRecorder, FedPeatChainError
        from coordinator.remote_adapter import spec_text_of
        from node.chain.clients import SessionState
        from node.job import JobSpec

        from coordinator.fedpeat.policies import policy_names

        if self.strategy_name not in policy_names():
            raise ControlError(f"unknown strategy {self.strategy_name!r} ({', '.join(policy_names())})")
        try:
            self.recorder = ChainRecorder.from_clients(self.clients, self.session_id, log=self.log)
        except FedPeatChainError as exc:
            raise ControlError(str(exc)) from None
        info = self.clients.sessions.get_session(self.session_id)
        if info.state == SessionState.NONE:
            raise ControlError(f"session {self.session_id} does not exist")
        if info.state not in (SessionState.JOINING, SessionState.TRAINING):
            raise ControlError(f"session {self.session_id} is {info.state.name.lower()}: it can no longer be controlled")
        text = spec_text_of(self.clients.governance, info.proposal_id)
        params = self.clients.governance.get_params(info.proposal_id)
        spec = JobSpec.from_text(text, source=f"proposal {info.proposal_id}")
        spec.check_against_chain(params.as_chain_dict())
        if spec.fedpeat is None:
            raise ControlError(f"session {self.session_id} is not a FedPEAT job (its spec has no [fedpeat] table)")
        me = self.recorder.ledger.sender.address
        controller = self.recorder.ledger.controller_of(self.session_id)
        if controller.lower() != me.lower():
            raise ControlError(f"account {me} is not the controller of session {self.session_id} ({controller}): "
                               f"use the proposer's account or have it set this one")
        recorded = [t for t in range(1, info.rounds + 1) if self.recorder.ledger.plan_hash_of(self.session_id, t)]
        if recorded:
            raise ControlError(f"session {self.session_id} already has plans for rounds {recorded}")
        fp = spec.fedpeat
        if self.strategy_name == "fixed" and self.retention is not None and float(self.retention) not in fp.options:
            raise ControlError(f"fixed retention {self.retention} is not one of the spec's options {fp.options}")
        if self.strategy_name == "list":
            if not self.device_retentions or any(float(r) not in fp.options for r in self.device_retentions):
                raise ControlError(f"strategy list needs --device-retentions among the spec's options {fp.options}")
        if self.strategy_name == "ppo" and self.controller_dir is None:
            raise ControlError("strategy ppo needs --controller DIR (bsns fedpeat train-controller)")
        if fp.case == 3 and 1.0 not in fp.options:
            raise ControlError(f"session {self.session_id} is case 3 (the full model) but its fedpeat.options "
                               f"{fp.options} lack 1.0")
        if spec.task.kind != "sequence-classification":
            raise ControlError(f"the FedPEAT controller measures memory and scores on a classification head; "
                               f"session {self.session_id} is a {spec.task.kind} job")
        if self.device_classes and any(float(r) not in fp.options for r in self.device_classes):
            raise ControlError(f"device classes must be among the spec's options {fp.options}")
        from node.model import weights_hash

        # the emulators this machine builds and attaches must be of the session's model, byte for byte
        local = weights_hash(spec.model.id)
        if local != params.base_model_hash:
            raise ControlError(f"the local model {spec.model.id!r} (weights {local}) is not session {self.session_id}'s "
                               f"base model ({params.base_model_hash})")
        self.recorder.base_model_hash = params.base_model_hash
        self.spec = spec
        return spec

    # -- 2. emulators, memory, devices ------------------------------------------------------------------
    def attach(self, models: SpecModels) -> None:
        fp = self.spec.fedpeat
        self.recorder.attach_built([(r, models.emulators[r]) for r in emulator_retentions(fp)], fp.k)

    def wait_training(self):
        """Block until the join window has closed and the session trains (members are final then)."""
        from node.chain.clients import SessionState

        def ready():
            info = self.clients.sessions.get_session(self.session_id)
            if info.state in (SessionState.COMPLETED, SessionState.FAILED):
                raise ControlError(f"session {self.session_id} is {info.state.name.lower()} before its first plan")
            return info if info.state == SessionState.TRAINING else None

        return self._wait("the session to start training", ready)

    def devices(self) -> list[Device]:
        s, reg = self.clients.sessions, self.clients.registry
        out = []
        for rep in range(s.get_shard(self.session_id, 0).joined):
            addr = s.member_at(self.session_id, 0, rep)
            node = reg.get_node(addr)
            out.append(Device(rep, addr, int(node.memory_mb), node.peer_id, node.announce_addr))
        if not out:
            raise ControlError(f"session {self.session_id} has no members")
        return out

    def profile(self, models: SpecModels, devices: list[Device]):
        from coordinator.fedpeat.env import DeviceProfile

        fp = self.spec.fedpeat
        opts = list(fp.options)
        need = {r: int(models.memory_need[r]) for r in models.memory_need}
        if self.device_classes:
            caps = capacities_from_classes(self.device_classes, len(devices), opts, need)
        else:
            caps = [d.memory_mb * MB for d in devices]
        usable = sorted(need)
        return DeviceProfile(capacities=caps, data_weights=[1.0] * len(devices), options=usable, memory_need=need,
                             emulator_bytes={r: models.emulators[r].num_bytes() for r in usable},
                             adapter_bytes=int(models.adapter_bytes))

    def make_strategy(self, n: int, options: list[float]):
        """The participation policy for ``n`` devices (cases 2 and 3: every device on the one emulator)."""
        from coordinator.fedpeat.policies import PolicySettings, make_policy
        from coordinator.fedpeat.workload import FedPEATError

        fp = self.spec.fedpeat
        if fp.case in (2, 3):
            fixed = float(fp.shared_retention) if fp.case == 2 else 1.0
            return make_policy("fixed", PolicySettings(n, tuple(options), retention=fixed))
        try:
            return make_policy(self.strategy_name, PolicySettings(
                n, tuple(options), retention=self.retention, random_p=self.random_p, controller_dir=self.controller_dir,
                device_retentions=tuple(float(r) for r in self.device_retentions) if self.device_retentions else None))
        except FedPEATError as exc:
            raise ControlError(str(exc)) from None

    # -- 3. the global adapter of a finished session round ------------------------------------------------
    def final_adapter(self, session_round: int, devices: list[Device]) -> tuple[str, dict]:
        """The final aggregate of ``session_round``: waits for finality, fetches it by hash, verifies it."""
        from node.chain.clients import SessionState
        from node.hashing import keccak_hex
        from node.train.adapter_state import state_from_bytes

        def final():
            h = self.clients.sessions.final_hash(self.session_id, session_round, 0)
            if h is None and self.clients.sessions.get_session(self.session_id).state == SessionState.FAILED:
                raise ControlError(f"session {self.session_id} failed before round {session_round} was final")
            return h

        h = self._wait(f"session round {session_round} to be final", final)
        errors = []
        for d in devices:
            try:
                data = self.fetch(d, h, self.fetch_timeout)
            except Exception as exc:  # noqa: BLE001 - another member may serve it
                errors.append(f"replica {d.replica}: {str(exc).splitlines()[0][:120]}")
                continue
            got = keccak_hex(data)
            if got != h.lower():
                # the chain's final hash is the only aggregate a controller observes; anything else is refused
                errors.append(f"replica {d.replica} sent bytes hashing to {got}, not the chain's {h}")
                self.log(f"refused the aggregate of round {session_round} from replica {d.replica}: hash {got}")
                continue
            try:
                return h, state_from_bytes(data)
            except BsnsError as exc:
                errors.append(f"replica {d.replica}: {exc}")
        raise ControlError(f"no member of session {self.session_id} served the final adapter {h} of round "
                           f"{session_round}: {'; '.join(errors) or 'no members'}")

    def _wait(self, what: str, cond):
        deadline = time.monotonic() + self.round_timeout
        while True:
            got = cond()
            if got is not None:
                return got
            if time.monotonic() > deadline:
                raise ControlError(f"timed out after {self.round_timeout:.0f}s waiting for {what} "
                                   f"(session {self.session_id})")
            time.sleep(self.poll)

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self) -> dict:
        spec = self.spec if self.spec is not None else self.check()
        fp = spec.fedpeat
        if self.models_factory is None:
            self.models_factory = RealSpecModels.build
        models = self.models_factory(spec)
        self.attach(models)
        info = self.wait_training()
        devices = self.devices()
        own = None
        if self.fetch is None:
            from coordinator.remote_adapter import PeerFetcher

            own = PeerFetcher()
            self.fetch = lambda device, h, timeout: own.fetch(device.peer_id, device.addr, h, timeout)
        try:
            return self._loop(fp, models, info.rounds, devices)
        finally:
            if own is not None:
                own.close()

    def _loop(self, fp, models: SpecModels, rounds: int, devices: list[Device]) -> dict:
        from coordinator.fedpeat.env import ChannelModel, RewardWeights, feasible, observation

        profile = self.profile(models, devices)
        options = profile.options
        strategy = self.make_strategy(len(devices), options)
        allowed = [float(fp.shared_retention)] if fp.case == 2 else [1.0] if fp.case == 3 else None
        hashes = {r: models.emulators[r].hash() for r in models.emulators}
        self.log(f"session {self.session_id}: {len(devices)} devices, capacities "
                 f"{[round(c / MB, 1) for c in profile.capacities]} MB, needs "
                 f"{ {r: round(v / MB, 1) for r, v in profile.memory_need.items()} } MB")

        channel, rng = ChannelModel(), np.random.default_rng(self.seed)
        exchanges, held = [0] * len(devices), [None] * len(devices)
        first = models.evaluate(models.initial_state())
        out = Path(self.record_path) if self.record_path else None
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("")
        for t in range(1, rounds + 1):
            if t == 1:
                metrics, observed = first, None
            else:
                observed, state = self.final_adapter(t - 2, devices)
                metrics = models.evaluate(state)
            gains = channel.sample_gains(len(devices), rng)
            obs = observation(profile, gains, exchanges, metrics["loss"], first["loss"], t - 1, rounds,
                              RewardWeights().exchange_allowance)
            wanted = strategy.choose(obs, rng)
            choices = feasible(wanted, profile, allowed)
            for i, r in enumerate(choices):
                if r is not None and held[i] != r:
                    held[i], exchanges[i] = r, exchanges[i] + 1
            rec = plan_record(t, fp.case, strategy.name, choices, hashes, {
                "observed_adapter": observed, "eval_loss": metrics["loss"], "eval_accuracy": metrics["accuracy"],
                "wanted": [None if r is None else float(r) for r in wanted],
                "capacities": profile.capacities, "needs": {str(r): v for r, v in profile.memory_need.items()},
                "devices": [d.address for d in devices]})
            self.recorder.record(rec)
            self.records.append(rec)
            if out:
                with out.open("a") as fh:
                    fh.write(json.dumps(rec, sort_keys=True) + "\n")
            self.log(f"round {t}: loss {metrics['loss']:.4f} acc {metrics['accuracy']:.4f} -> plan "
                     f"{[c['retention'] for c in rec['choices']]} ({rec['plan_hash'][:18]}…)")
        final_hash, state = self.final_adapter(rounds - 1, devices)
        final = models.evaluate(state)
        self.log(f"final adapter {final_hash}: accuracy {final['accuracy']:.4f} loss {final['loss']:.4f}")
        return {"session": self.session_id, "rounds": rounds, "devices": [d.address for d in devices],
                "records": self.records, "initial": first, "final": final, "final_adapter": final_hash,
                "exchanges": exchanges, "capacities": profile.capacities}


# -- the real pieces -----------------------------------------------------------------------------------------

@dataclass
class RealSpecModels:
    """The spec's emulators (``emulator_for_spec``), the full model with the spec's adapters (``adapt``: the
    daemons' initial adapter), the validation split, and the measured training memory of each emulator with
    its adapters (``Workload.training_memory``, at the spec's batch size and sequence length)."""

    work: Any
    emulators: dict
    memory_need: dict
    adapter_bytes: int
    full: Any
    initial: dict

    @classmethod
    def build(cls, spec, eval_size: int | None = None) -> "RealSpecModels":
        from coordinator.fedpeat.workload import Workload
        from node.train.adapter_state import canonical_bytes

        work = Workload.from_spec(spec, eval_size=eval_size)
        emulators, need, adapter_bytes = {}, {}, 0
        for r in spec.fedpeat.options:
            model, emu = work.adapted_emulator(float(r))
            emulators[float(r)] = emu
            need[float(r)] = work.training_memory(model, key=("emu", float(r)))
            adapter_bytes = len(canonical_bytes(work.adapter_state(model)))
            del model
        full = work.adapted_full_model()
        return cls(work, emulators, need, adapter_bytes, full, work.adapter_state(full))

    def initial_state(self) -> dict:
        return self.initial

    def evaluate(self, state: dict) -> dict:
        from node.train.evaluate import evaluate

        self.work.load_adapter_state(self.full, state)
        dev = str(next(self.full.parameters()).device)
        m = evaluate(self.full, self.work.val_set, self.work.spec.task.kind, dev)
        return {"loss": float(m["loss"]), "accuracy": float(m.get("accuracy", float("nan")))}
