"""The FedPEAT controller's per-round loop (coordinator.fedpeat.control) against an in-memory chain.

The fake chain has the methods of the node.chain clients the loop uses; when a plan for ledger round t is
recorded, the fake "daemons" finish session round t - 1 (a final hash on chain, the aggregate served by the
members). The model side is a small fake with measured-looking memory needs, so these tests check the loop's
behaviour (order, guard, refusals, verification) in well under a second each; the real model, daemons and
anvil are in tests/e2e/test_fedpeat_control.py.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from coordinator.fedpeat.control import MB, ControlError, Controller, Device
from coordinator.fedpeat.harness import plan_hash, record_hash
from node.chain.clients import SessionState
from node.job import JobSpec
from node.train.adapter_state import adapter_hash, canonical_bytes

ROOT = Path(__file__).resolve().parents[2]
ME, OTHER = "0x" + "aa" * 20, "0x" + "bb" * 20
NEED = {0.25: 100 * MB, 0.5: 120 * MB, 0.75: 140 * MB, 1.0: 160 * MB}


@functools.lru_cache(maxsize=1)
def local_weights() -> str:
    """The local MiniLM's weights hash, as a proposal of it carries (the controller checks it)."""
    from node.model import weights_hash

    return weights_hash("minilm")


def spec_text(fedpeat: bool = True, rounds: int = 3, case: int = 1, weights: str | None = None) -> str:
    text = (ROOT / "specs" / "minilm-sst2-fedpeat.toml").read_text()
    text = text.replace("rounds = 10", f"rounds = {rounds}").replace("case = 1", f"case = {case}")
    if not fedpeat:
        text = text[:text.index("[fedpeat]")]
    spec = JobSpec.from_text(text).with_hashes(weights_hash=weights or local_weights(), data_hash="0x" + "22" * 32)
    return spec.toml_text


def state_of(x: float) -> dict:
    return {"layers.0.w": torch.full((4,), float(x))}


@dataclass
class FakeChain:
    """Sessions, governance, registry and FedPeatLedger clients in one object (the loop only reads attributes)."""

    text: str
    memory_mb: list[int]
    controller: str = ME
    state: SessionState = SessionState.TRAINING
    plans: dict = field(default_factory=dict)          # round -> (plan hash, bps)
    plan_order: list = field(default_factory=list)
    finals: dict = field(default_factory=dict)         # session round -> hash
    blobs: dict = field(default_factory=dict)          # hash -> bytes
    registered: dict = field(default_factory=dict)
    attached: list = field(default_factory=list)
    sent: int = 0

    def __post_init__(self):
        self.spec = JobSpec.from_text(self.text)
        self.sessions = self.governance = self.registry = self.fedpeat = self
        self.sender = SimpleNamespace(address=ME)
        self.deployment = SimpleNamespace(chain_id=31337)

    # sessions
    def get_session(self, sid):
        if sid != 1:
            return SimpleNamespace(state=SessionState.NONE, proposal_id=0, rounds=0)
        return SimpleNamespace(state=self.state, proposal_id=7, rounds=self.spec.training.rounds)

    def get_shard(self, sid, shard):
        return SimpleNamespace(joined=len(self.memory_mb))

    def member_at(self, sid, shard, rep):
        return f"0x{rep + 1:040x}"

    def final_hash(self, sid, rnd, shard):
        return self.finals.get(rnd)

    # governance
    def spec_text(self, pid):
        return self.text

    def get_params(self, pid):
        return SimpleNamespace(base_model_hash=self.spec.model.weights_hash,
                               as_chain_dict=lambda: self.spec.to_chain_params())

    # registry
    def get_node(self, addr):
        rep = int(addr, 16) - 1
        return SimpleNamespace(memory_mb=self.memory_mb[rep], peer_id=f"peer{rep}", announce_addr=f"/ip4/127.0.0.1/tcp/{4000 + rep}")

    # ledger
    def controller_of(self, sid):
        return self.controller

    def plan_hash_of(self, sid, rnd):
        return self.plans.get(rnd, (None,))[0]

    def get_emulator(self, h):
        return self.registered.get(h)

    def register_emulator(self, h, base, bps, k, rule, distill):
        self.sent += 1
        self.registered[h] = SimpleNamespace(base_model_hash=base, retention_bps=bps)
        return SimpleNamespace(block_number=1, hash="0x01")

    def is_attached(self, sid, h):
        return h in self.attached

    def attach_emulator(self, sid, h):
        self.sent += 1
        self.attached.append(h)
        return SimpleNamespace(block_number=1, hash="0x02")

    def record_round_plan(self, sid, rnd, h, bps):
        self.sent += 1
        assert rnd not in self.plans, "once per round"
        self.plans[rnd] = (h, list(bps))
        self.plan_order.append(rnd)
        # the daemons obey plan rnd in session round rnd - 1 and finish it
        data = canonical_bytes(state_of(rnd))
        h_final = adapter_hash(state_of(rnd))
        self.blobs[h_final] = data
        self.finals[rnd - 1] = h_final
        return SimpleNamespace(block_number=1, hash="0x03")


@dataclass
class FakeEmu:
    retention: float

    def hash(self):
        return "0x" + f"{int(self.retention * 100):064x}"

    @property
    def manifest(self):
        return SimpleNamespace(retention=self.retention, rule="uniform", distill_steps=0)

    def num_bytes(self):
        return int(60 * MB + self.retention * 30 * MB)


class FakeModels:
    """Emulator hashes, memory needs and a loss that is a function of the adapter (so the record can be checked)."""

    def __init__(self, options):
        self.emulators = {float(r): FakeEmu(float(r)) for r in options}
        self.memory_need = {float(r): NEED[float(r)] for r in options}
        self.adapter_bytes = 450_000
        self.evaluated = []

    def initial_state(self):
        return state_of(0)

    def evaluate(self, state):
        x = float(state["layers.0.w"][0])
        self.evaluated.append(x)
        return {"loss": 1.0 / (1.0 + x), "accuracy": 0.5 + 0.01 * x}


def controller(chain, built=None, **kw):
    def factory(spec):
        built.append(spec) if built is not None else None
        return FakeModels(spec.fedpeat.options)

    def fetch(dev: Device, h: str, timeout: float) -> bytes:
        return chain.blobs[h]

    kw.setdefault("fetch", fetch)
    return Controller(chain, 1, models_factory=factory, poll=0.01, round_timeout=2.0, **kw)


def test_loop_records_one_plan_per_round_in_order_and_observes_the_final_adapters(tmp_path):
    chain = FakeChain(spec_text(rounds=3), memory_mb=[110, 130, 200])
    log = []
    ctl = controller(chain, strategy_name="fixed", retention=1.0, record_path=tmp_path / "rounds.jsonl", log=log.append)
    res = ctl.run()

    assert chain.plan_order == [1, 2, 3]
    recs = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in recs] == [1, 2, 3]
    for rec in recs:
        assert chain.plans[rec["round"]][0] == rec["plan_hash"] == plan_hash(rec)
        body = {k: v for k, v in rec.items() if k != "record_hash"}
        assert rec["record_hash"] == record_hash(body)
        # everyone asked for 1.0; the guard gave each device the largest emulator its registered memory holds
        assert [c["retention"] for c in rec["choices"]] == [0.25, 0.5, 1.0]
        assert chain.plans[rec["round"]][1] == [2500, 5000, 10000]
        assert [c["emulator"] for c in rec["choices"]] == [FakeEmu(r).hash() for r in (0.25, 0.5, 1.0)]
    # round 1 observes the fresh adapter; round t the final aggregate of session round t - 2 (fetched by hash)
    assert recs[0]["observed_adapter"] is None and recs[0]["eval_loss"] == 1.0
    assert recs[1]["observed_adapter"] == adapter_hash(state_of(1)) and recs[1]["eval_loss"] == pytest.approx(1 / 2)
    assert recs[2]["observed_adapter"] == adapter_hash(state_of(2)) and recs[2]["eval_loss"] == pytest.approx(1 / 3)
    # at the end: the last session round's final adapter, scored
    assert res["final_adapter"] == adapter_hash(state_of(3)) and res["final"]["accuracy"] == pytest.approx(0.53)
    # every option's emulator registered and attached (case 1: the guard may fall back to any of them)
    assert sorted(chain.attached) == sorted(FakeEmu(r).hash() for r in (0.25, 0.5, 0.75, 1.0))
    assert res["capacities"] == [110 * MB, 130 * MB, 200 * MB]


@pytest.mark.parametrize("memory_mb", [[50, 105, 125, 145, 500], [99, 100, 161, 119]])
def test_a_plan_never_gives_a_device_an_emulator_that_does_not_fit(memory_mb):
    chain = FakeChain(spec_text(rounds=12), memory_mb=memory_mb)
    ctl = controller(chain, strategy_name="random", random_p=0.9, seed=3)
    res = ctl.run()
    assert len(chain.plans) == 12
    seen = set()
    for rec in res["records"]:
        for c, mem in zip(rec["choices"], memory_mb):
            if c["retention"] is not None:
                assert NEED[c["retention"]] <= mem * MB
                seen.add(c["retention"])
    assert seen  # the random strategy did choose emulators (not only skips)
    assert all(c["retention"] is None for rec in res["records"] for c in rec["choices"][:1]) if memory_mb[0] < 100 else True


def test_device_classes_override_the_registered_memory():
    chain = FakeChain(spec_text(rounds=1), memory_mb=[10_000, 10_000])
    res = controller(chain, strategy_name="fixed", retention=1.0, device_classes=[0.5, 0.25]).run()
    assert [c["retention"] for c in res["records"][0]["choices"]] == [0.5, 0.25]


def test_case_2_shares_one_emulator_and_a_device_it_does_not_fit_sits_out():
    chain = FakeChain(spec_text(rounds=2, case=2), memory_mb=[150, 170])
    res = controller(chain).run()
    assert chain.attached == [FakeEmu(1.0).hash()]
    for rec in res["records"]:
        assert [c["retention"] for c in rec["choices"]] == [None, 1.0]
    assert chain.plans[1][1] == [0, 10000]


@pytest.mark.parametrize("make,message", [
    (lambda: FakeChain(spec_text(fedpeat=False), [200]), "session 1 is not a FedPEAT job (its spec has no [fedpeat] table)"),
    (lambda: FakeChain(spec_text(), [200], controller=OTHER),
     f"account {ME} is not the controller of session 1 ({OTHER}): use the proposer's account or have it set this one"),
    (lambda: FakeChain(spec_text(), [200], state=SessionState.COMPLETED),
     "session 1 is completed: it can no longer be controlled"),
    (lambda: FakeChain(spec_text(), [200], plans={2: ("0x" + "cd" * 32, [5000])}), "session 1 already has plans for rounds [2]"),
    (lambda: FakeChain(spec_text(weights="0x" + "11" * 32), [200]),
     f"the local model 'minilm' (weights {local_weights()}) is not session 1's base model (0x{'11' * 32})"),
])
def test_refusals_come_before_any_model_is_built_and_send_nothing(make, message):
    chain = make()
    built = []
    with pytest.raises(ControlError) as exc:
        controller(chain, built=built).run()
    assert str(exc.value) == message and "\n" not in str(exc.value)
    assert built == [] and chain.sent == 0 and chain.attached == []


def test_unknown_session_and_bad_strategy_options_are_refused():
    chain = FakeChain(spec_text(), [200])
    with pytest.raises(ControlError, match="^session 2 does not exist$"):
        Controller(chain, 2).check()
    with pytest.raises(ControlError, match=r"fixed retention 0.3 is not one of the spec's options"):
        Controller(chain, 1, retention=0.3).check()
    with pytest.raises(ControlError, match="strategy list needs --device-retentions"):
        Controller(chain, 1, strategy_name="list").check()
    assert chain.sent == 0


def test_a_wrong_aggregate_from_a_peer_is_refused_and_an_honest_peer_is_used():
    chain = FakeChain(spec_text(rounds=2), memory_mb=[200, 200])
    asked = []

    def fetch(dev, h, timeout):
        asked.append(dev.replica)
        if dev.replica == 0:  # a lying peer: another adapter under the chain's hash
            return canonical_bytes(state_of(99))
        return chain.blobs[h]

    log = []
    res = controller(chain, fetch=fetch, log=log.append).run()
    assert res["records"][1]["observed_adapter"] == adapter_hash(state_of(1))
    assert res["records"][1]["eval_loss"] == pytest.approx(1 / 2)  # the honest aggregate, not the lie
    assert any("refused the aggregate of round 0 from replica 0" in m for m in log)
    assert asked[:2] == [0, 1]


def test_when_every_peer_lies_the_loop_stops_before_the_next_plan():
    chain = FakeChain(spec_text(rounds=3), memory_mb=[200, 200])
    wrong = canonical_bytes(state_of(99))
    with pytest.raises(ControlError) as exc:
        controller(chain, fetch=lambda dev, h, t: wrong).run()
    h = chain.finals[0]
    msg = str(exc.value)
    assert msg.startswith(f"no member of session 1 served the final adapter {h} of round 0: replica 0 sent bytes "
                          f"hashing to {adapter_hash(state_of(99))}, not the chain's {h}")
    assert chain.plan_order == [1]  # nothing recorded on a state it could not verify


def test_a_round_that_never_goes_final_times_out_with_one_line():
    chain = FakeChain(spec_text(rounds=2), memory_mb=[200])
    chain.record_round_plan = lambda sid, rnd, h, bps: (chain.plans.__setitem__(rnd, (h, bps)),
                                                          SimpleNamespace(block_number=1, hash="0x"))[1]
    ctl = controller(chain)
    ctl.round_timeout = 0.05
    with pytest.raises(ControlError, match=r"^timed out after 0s waiting for session round 0 to be final \(session 1\)$"):
        ctl.run()


def test_the_trained_ppo_controller_drives_the_loop_within_the_guard():
    """The committed PPO controller (docs/fedpeat/controller, 4 devices) acting on the live observations."""
    chain = FakeChain(spec_text(rounds=3), memory_mb=[105, 125, 145, 400])
    res = controller(chain, strategy_name="ppo", controller_dir=ROOT / "docs" / "fedpeat" / "controller").run()
    assert chain.plan_order == [1, 2, 3]
    for rec in res["records"]:
        assert rec["strategy"] == "ppo"
        for c, mem in zip(rec["choices"], [105, 125, 145, 400]):
            assert c["retention"] is None or NEED[c["retention"]] <= mem * MB
    # a controller trained for another number of devices is refused with one line
    with pytest.raises(ControlError, match=r"^controller was trained for 4 devices and options .* not 2 and"):
        controller(FakeChain(spec_text(rounds=1), memory_mb=[200, 200]), strategy_name="ppo",
                   controller_dir=ROOT / "docs" / "fedpeat" / "controller").run()
