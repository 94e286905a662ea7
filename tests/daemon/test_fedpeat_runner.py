"""The FedPEAT session runner: three devices (replicas) in threads over an in-memory chain and network.

Real model and data (MiniLM, SST-2, a few steps); faked are only the chain (with FedPeatLedger's round plans
and attached emulators) and the sockets. Replica 0 builds its emulators, replicas 1 and 2 fetch them by hash.
Plans (ledger rounds are 1-based): round 1 nobody takes part; round 2 replica 0 at 0.5, replica 1 sits out,
replica 2 on the whole model (1.0); round 3 replica 0 asks for 0.25, which is not attached (so it sits out),
replicas 1 and 2 at 0.5. The sync timeout is far longer than the test may take, so waiting for a sit-out would
hang it.
"""

import copy

import pytest

pytestmark = pytest.mark.slow  # builds the spec's emulators (about 20 s before the first test)

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from node.daemon.fedpeat import EmulatorSource, FedPeatRunner  # noqa: E402
from node.daemon.ports import ZERO_HASH, Member  # noqa: E402
from node.daemon.session import SessionError  # noqa: E402
from node.job import JobSpec, keccak_hex  # noqa: E402

from .fakes import FakeChain, FakeNet, _ChainView, run_runners  # noqa: E402
from .specs import LORA, sst2_spec  # noqa: E402

SPEC = sst2_spec("fedpeat-runner", method="lora", config=LORA, layers=[[0, 6]], memory_mb=[256],
                 training={"rounds": 3, "sync_interval": 2, "batch_size": 4, "learning_rate": 0.001, "seed": 5},
                 fedpeat={"options": [0.25, 0.5, 1.0]})
PLANS = {1: [0, 0, 0], 2: [5000, 0, 10000], 3: [2500, 5000, 5000]}
FETCHERS = {1, 2}


class PlanChain(FakeChain):
    def __init__(self, members, rounds, replicas, plans, attached):
        super().__init__(members, rounds, replicas)
        self.plans, self.attached = plans, attached
        self.locals = {}                                   # (round, address) -> local update hash committed

    def view(self, me):
        return _PlanView(self, me)


class _PlanView(_ChainView):
    def commit(self, session, rnd, shard, agg, local):
        with self.c.lock:
            self.c.locals[(rnd, self.me.address)] = local
            late = (rnd, shard) in self.c.finals
            if late:  # TrainingSessions records a commit to the round just finalized (not counted)
                assert self.me.address not in self.c.commits[(rnd, shard)], "duplicate commit"
                self.c.commits[(rnd, shard)][self.me.address] = agg
        if not late:
            super().commit(session, rnd, shard, agg, local)

    def round_plan(self, session, ledger_round):
        plan = self.c.plans.get(ledger_round)
        return None if plan is None else list(plan)

    def attached_emulators(self, session):
        return dict(self.c.attached)


@pytest.fixture(scope="module")
def spec():
    return JobSpec.from_text(SPEC)


@pytest.fixture(scope="module")
def emulators(spec):
    """The controller's emulators (built in this process: the hashes the chain would hold) and the full model."""
    from node.emulator import emulator_for_spec
    from node.train.build import load_full_model

    base = load_full_model(spec)
    emus = {bps: emulator_for_spec(spec, bps / 10_000, base=base) for bps in (5000, 10000)}
    return emus, base


@pytest.fixture(scope="module")
def run(spec, emulators, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fedpeat")
    emus, _ = emulators
    attached = {bps: e.hash() for bps, e in emus.items()}
    members = [Member(f"0x{r}", 0, r, peer_id=f"peer{r}") for r in range(3)]
    chain = PlanChain(members, 3, 3, PLANS, attached)
    net = FakeNet()
    events = []

    def per_member(m):
        return {"on_event": lambda kind, info: events.append((m.replica, kind, info)),
                "fetch_emulators": m.replica in FETCHERS}

    # the sync timeout is far longer than the test may take: waiting for a sit-out's update would hang it
    runners = run_runners(FedPeatRunner, spec, members, 3, chain, net, tmp, timeout=240, per_member=per_member,
                          sync_timeout=600.0, emulator_wait_s=60.0)
    return {"chain": chain, "net": net, "events": events, "runners": runners, "members": members,
            "attached": attached}


def _events(run, kind, replica=None, rnd=None):
    return [i for r, k, i in run["events"] if k == kind and (replica is None or r == replica)
            and (rnd is None or i.get("round") == rnd)]


def _state(data):
    from node.train.adapter_state import state_from_bytes

    return state_from_bytes(data)


def test_every_round_final_and_every_replica_commits_the_final_aggregate(run):
    chain = run["chain"]
    for rnd in range(3):
        final = chain.finals[(rnd, 0)]
        assert set(chain.commits[(rnd, 0)].values()) == {final}
        assert len(chain.commits[(rnd, 0)]) == 3                     # sit-outs commit the same aggregate


def test_plan_obeyed_each_participant_trains_on_its_emulator(run):
    att = run["attached"]
    start = {(i["replica"], i["round"]): i for i in _events(run, "round_start")}
    assert set(start) == {(0, 1), (2, 1), (1, 2), (2, 2)}             # exactly the plans' participants
    assert start[(0, 1)]["emulator"] == att[5000] and start[(0, 1)]["layers"] == [0, 2, 4, 5]
    assert start[(2, 1)]["emulator"] == att[10000] and start[(2, 1)]["layers"] == [0, 1, 2, 3, 4, 5]
    assert start[(1, 2)]["emulator"] == start[(2, 2)]["emulator"] == att[5000]
    # 0.25 is planned for replica 0 in ledger round 3 but not attached: it sits out, and says why
    assert _events(run, "plan_unusable", replica=0, rnd=2)[0]["replicas"] == {"0": 2500}


def test_sit_out_trains_nothing_and_commits_the_same_aggregate(run):
    chain, runners = run["chain"], run["runners"]
    for rep, rnd in [(0, 0), (1, 0), (2, 0), (1, 1), (0, 2)]:
        losses = [x for x in runners[rep].store.losses(1) if x["round"] == rnd]
        assert losses == [], (rep, rnd)
        assert chain.locals[(rnd, f"0x{rep}")] == ZERO_HASH                  # no local update on record
        assert chain.commits[(rnd, 0)][f"0x{rep}"] == chain.finals[(rnd, 0)]
        assert _events(run, "sat_out", replica=rep, rnd=rnd)
    for rep, rnd in [(0, 1), (2, 1), (1, 2), (2, 2)]:
        assert len([x for x in runners[rep].store.losses(1) if x["round"] == rnd]) == 2
        assert chain.locals[(rnd, f"0x{rep}")] != ZERO_HASH


def test_aggregate_is_fedavg_of_the_participants_only(run):
    from node.train.adapter_state import canonical_bytes
    from node.train.aggregate import rule_class

    chain, net = run["chain"], run["net"]
    for rnd, reps in [(1, [0, 2]), (2, [1, 2])]:
        anns = {a.replica: a for a in net.port("x").announcements(1, rnd, 0) if a.kind == "update"}
        assert sorted(anns) == reps                                          # no sit-out announced an update
        states = [_state(net.blobs[f"peer{r}"][anns[r].hash]) for r in reps]
        agg = rule_class("fedavg")().aggregate(states, [anns[r].samples for r in reps])
        assert keccak_hex(canonical_bytes(agg)) == chain.finals[(rnd, 0)]


def test_nobody_takes_part_commits_the_initial_adapter(run, spec, emulators):
    from node.train.build import adapt
    from node.train.adapter_state import canonical_bytes
    from node.tuners import adapter_state_dict

    _, base = emulators
    initial = canonical_bytes(adapter_state_dict(adapt(spec, copy.deepcopy(base))))
    assert run["chain"].finals[(0, 0)] == keccak_hex(initial)
    assert not _events(run, "round_start", rnd=0)


def test_emulators_fetched_by_hash_and_served(run):
    att = set(run["attached"].values())
    built = {i["hash"] for i in _events(run, "emulator_built", replica=0)}
    assert built == att                                   # the building node serves every attached emulator
    for rep in FETCHERS:
        assert not _events(run, "emulator_built", replica=rep)
        got = _events(run, "emulator_fetched", replica=rep)
        assert got and all(i["verified"] and i["hash"] in att and i["bytes"] > 50_000_000 for i in got)
        cache = run["runners"][rep].cache_dir
        assert {"0x" + p.stem for p in cache.glob("*.bin")} == {i["hash"] for i in got}


def test_final_adapter_plugs_into_the_full_model(run, spec, emulators):
    from node.train.build import adapt
    from node.tuners import adapter_state_dict, load_adapter_state_dict

    _, base = emulators
    final = run["chain"].finals[(2, 0)]
    data = run["runners"][1].store.get_blob(final)
    full = adapt(spec, copy.deepcopy(base))
    load_adapter_state_dict(full, _state(data))                            # strict: same keys and shapes
    got = adapter_state_dict(full)
    assert all(torch.equal(got[k], v) for k, v in _state(data).items())


# -- the emulator source alone: refusals --------------------------------------------------------------

def _source(spec, net, tmp_path, peer, fetch, peers, wait_s=5.0):
    events = []
    src = EmulatorSource(spec, net.port(peer), tmp_path / peer, fetch=fetch, peers=lambda: list(peers),
                         emit=lambda kind, **i: events.append((kind, i)), sleep=lambda s: None, wait_s=wait_s)
    return src, events


def test_corrupted_emulator_refused_and_fetched_from_another_peer(spec, emulators, tmp_path):
    from node.emulator import emulator_blob

    emus, _ = emulators
    emu = emus[5000]
    blob = emulator_blob(emu)
    net = FakeNet()
    bad = bytearray(blob)
    bad[len(bad) // 3] ^= 0x01
    net.blobs["liar"][emu.hash()] = bytes(bad)          # serves other bytes under the hash
    net.blobs["honest"][emu.hash()] = blob
    src, events = _source(spec, net, tmp_path, "me", True, ["liar", "honest"])
    got = src.get(5000, emu.hash())
    assert got.hash() == emu.hash()
    kinds = [(k, i["peer"]) for k, i in events]
    assert kinds == [("emulator_refused", "liar"), ("emulator_fetched", "honest")]
    assert "expected " + emu.hash() in events[0][1]["error"]


def test_no_valid_emulator_anywhere_is_a_clear_error(spec, emulators, tmp_path):
    from node.emulator import emulator_blob

    emus, _ = emulators
    net = FakeNet()
    net.blobs["liar"][emus[5000].hash()] = emulator_blob(emus[10000])     # the wrong emulator
    src, events = _source(spec, net, tmp_path, "me", True, ["liar"], wait_s=0.0)
    with pytest.raises(SessionError, match="no session peer served emulator"):
        src.get(5000, emus[5000].hash())
    assert events and events[0][0] == "emulator_refused"
    assert not list((tmp_path / "me").glob("*.bin"))                       # nothing wrong cached


def test_built_emulator_with_another_hash_than_the_chain_is_refused(spec, tmp_path):
    net = FakeNet()
    src, _ = _source(spec, net, tmp_path, "me", False, [])
    wrong = "0x" + "ab" * 32
    with pytest.raises(SessionError, match=r"built here hashes to 0x[0-9a-f]{64}, but the session's emulator on chain is "
                                           + wrong):
        src.get(5000, wrong)
    assert not net.blobs["me"]                                             # nothing served
    src._base = None                                                       # a retry refuses without rebuilding
    with pytest.raises(SessionError, match="built here hashes to"):
        src.get(5000, wrong)
    assert src._base is None


# -- the vote of a node that fetches its emulators -------------------------------------------------------

@pytest.mark.parametrize("fetch,fedpeat,votes", [(True, True, True), (False, True, False), (True, False, False)])
def test_fetching_node_does_not_need_the_weights_of_a_fedpeat_job(tmp_path, fetch, fedpeat, votes):
    from types import SimpleNamespace

    from node.daemon.config import NodeConfig
    from node.daemon.proposals import VotePolicy
    from node.job import JobSpec

    p = tmp_path / "node.toml"
    p.write_text('[chain]\ndeployment = "d.json"\n[identity]\ndev_account = 1\n[resources]\nmemory_mb = 1024\n'
                 f'[fedpeat]\nfetch_emulators = {str(fetch).lower()}\n')
    params = SimpleNamespace(method="lora", task="sequence-classification", base_model="minilm", rounds=3,
                             shard_memory_mb=(256,), base_model_hash="0x" + "ab" * 32)  # not the local weights
    spec = JobSpec.from_text(SPEC).with_hashes(weights_hash=params.base_model_hash)
    if not fedpeat:
        spec = spec.model_copy(update={"fedpeat": None})
    specs = SimpleNamespace(gov=SimpleNamespace(get_params=lambda pid: params), spec_for=lambda pid: spec)
    d = VotePolicy(NodeConfig.from_toml(p), specs)
    support, why = d.decide(1)
    assert support is votes, why
    if not votes:
        assert why.startswith("my weights of minilm hash to")
