"""Typed clients on eth-tester: cover the ABIs, and drive register → propose → vote → execute → join →
commit → publish with the committed artifacts, checking each refusal comes back by name."""

from __future__ import annotations

import pytest

from coordinator.deploy import DeployParams, deploy
from node.chain import clients as C
from node.chain.artifacts import load_abi
from node.chain.clients import base
from node.chain.errors import ChainError, ContractRevert
from node.chain.sender import TxSender

CLIENTS = [C.NodeRegistryClient, C.SessionsClient, C.GovernanceClient, C.AdapterRegistryClient, C.FedPeatLedgerClient]
STRUCTS = [  # (contract, view, the dataclass it decodes into)
    ("NodeRegistry", "getNode", C.NodeInfo),
    ("NodeRegistry", "eligibility", C.Eligibility),
    ("TrainingSessions", "getSession", C.SessionInfo),
    ("TrainingSessions", "getShard", C.ShardState),
    ("TrainingSessions", "assignmentOf", C.Assignment),
    ("FineTuneGovernance", "getParams", C.JobParams),
    ("FineTuneGovernance", "proposalInfo", C.ProposalInfo),
    ("AdapterRegistry", "getAdapter", C.Adapter),
    ("FedPeatLedger", "getEmulator", C.EmulatorRecord),
]


def test_every_contract_has_a_client():
    from node.chain.artifacts import CONTRACT_NAMES

    assert sorted(c.NAME for c in CLIENTS) == sorted(CONTRACT_NAMES)


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.NAME)
def test_every_abi_function_has_a_method(client):
    names = [e["name"] for e in load_abi(client.NAME) if e["type"] == "function"]
    missing = [n for n in names if not callable(getattr(client, C.snake(n), None))]
    assert missing == []


@pytest.mark.parametrize("contract, fn, cls", STRUCTS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_dataclasses_follow_the_abi_structs(contract, fn, cls):
    """One field per struct component (snake_case), nested structs included; decoding goes by these names."""
    from dataclasses import fields

    def check(cls, comps):
        assert sorted(f.name for f in fields(cls)) == sorted(C.snake(c["name"]) for c in comps)
        for c in comps:
            if c["type"] == "tuple":
                (f,) = [f for f in fields(cls) if f.name == C.snake(c["name"])]
                check(f.metadata["struct"], c["components"])

    check(cls, base.returned_components(load_abi(contract), fn))


def test_a_dataclass_that_drifts_from_the_abi_is_refused():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Short:  # ShardState without its last component
        memory_mb: int
        joined: int

    comps = base.returned_components(load_abi("TrainingSessions"), "getShard")
    with pytest.raises(ChainError, match="missing"):
        base.from_abi(Short, comps, tuple(range(len(comps))))


def test_struct_arguments_are_encoded_in_the_abi_order():
    """The params dict's key order does not matter: the tuple follows the ABI's components."""
    _, params = _spec_params()
    comps = base.argument_components(load_abi("FineTuneGovernance"), "propose")
    encoded = base.to_abi(comps, dict(reversed(list(params.items()))))
    assert encoded == tuple(params[c["name"]] for c in comps)
    with pytest.raises(ChainError, match=r"missing \['seed'\]"):
        base.to_abi(comps, {k: v for k, v in params.items() if k != "seed"})
    with pytest.raises(ChainError, match=r"unknown \['colour'\]"):
        base.to_abi(comps, {**params, "colour": 1})


def test_job_params_read_back_by_name():
    """getParams' tuple decodes by component name, and as_chain_dict gives back JobSpec's own dict."""
    spec, params = _spec_params()
    comps = base.returned_components(load_abi("FineTuneGovernance"), "getParams")
    got = base.from_abi(C.JobParams, comps, base.to_abi(comps, params))
    assert got.layer_bounds == (0, 3, 6) and got.spec_hash == spec.spec_hash()
    assert list(got.as_chain_dict()) == [c["name"] for c in comps]
    spec.check_against_chain(got.as_chain_dict())


def _spec_params(rounds=1):
    from node.job import JobSpec

    text = f"""
name = "client-test"
[model]
id = "minilm"
weights_hash = "0x{'ab' * 32}"
[data]
dataset = "sst2"
path = "data/sst2/train.tsv"
hash = "0x{'cd' * 32}"
[task]
kind = "sequence-classification"
[method]
name = "lora"
config = {{ r = 4 }}
[shards]
layers = [[0, 3], [3, 6]]
memory_mb = [900, 700]
min_replicas = 1
[training]
rounds = {rounds}
sync_interval = 5
learning_rate = 1e-3
"""
    spec = JobSpec.from_text(text)
    return spec, spec.to_chain_params()


@pytest.fixture
def net(tester_w3, tester_keys):
    w3 = tester_w3
    params = DeployParams(min_stake=10**18, voting_delay_blocks=0, voting_period_blocks=4, quorum_bps=5000,
                          threshold_bps=5000, join_window_blocks=3, commit_timeout_blocks=5)
    dep = deploy(w3, TxSender(w3, tester_keys[0]), params)
    nodes = [C.Clients(w3, dep, TxSender(w3, k)) for k in tester_keys[1:5]]
    return w3, dep, nodes


def mine(w3, n):
    w3.provider.ethereum_tester.mine_blocks(n)


def test_deploy_wires_the_contracts(net):
    w3, dep, (a, *_) = net
    assert a.registry.slasher() == dep.address("TrainingSessions")
    assert a.sessions.governance() == dep.address("FineTuneGovernance")
    assert a.governance.registry() == dep.address("NodeRegistry")
    assert a.adapters.sessions() == dep.address("TrainingSessions")
    assert a.governance.voting_period_blocks() == 4 and a.registry.min_stake() == 10**18
    assert dep.deploy_block >= 1 and dep.parameters["slash_amount"] == 10**17


def test_full_flow_through_the_clients(net):
    w3, dep, (a, b, c, late) = net
    for i, n in enumerate((a, b, c)):
        n.registry.register(f"peer-{i}".encode(), f"/ip4/127.0.0.1/tcp/{4000 + i}", 2000, 0, 100, stake=10**18)
    info = a.registry.get_node(a.sender.address)
    assert info.status is C.NodeStatus.ACTIVE and info.announce_addr == "/ip4/127.0.0.1/tcp/4000"
    assert a.registry.active_count() == 3 and a.registry.nodes() == [n.sender.address for n in (a, b, c)]
    with pytest.raises(ContractRevert) as e:
        a.registry.register(b"p", "/ip4/x", 1, 0, 1, stake=10**18)
    assert e.value.name == "AlreadyRegistered"
    with pytest.raises(ContractRevert) as e:
        late.registry.register(b"p", "/ip4/x", 1, 0, 1, stake=1)
    assert (e.value.name, e.value.args) == ("StakeTooLow", (1, 10**18))

    spec, params = _spec_params()
    _, pid = a.governance.propose(params, spec.toml_text)
    assert a.governance.state(pid) is C.ProposalState.PENDING
    late.registry.register(b"late", "/ip4/127.0.0.1/tcp/4009", 2000, 0, 100, stake=10**18)  # mines a block
    got = a.governance.get_params(pid)
    spec.check_against_chain(got.as_chain_dict())  # what is on chain is exactly the spec
    assert got.layer_bounds == (0, 3, 6) and got.method == "lora"
    assert a.governance.state(pid) is C.ProposalState.ACTIVE
    a.governance.cast_vote(pid, True)
    b.governance.cast_vote(pid, True)
    with pytest.raises(ContractRevert) as e:
        b.governance.cast_vote(pid, False)
    assert e.value.name == "AlreadyVoted" and e.value.args == (b.sender.address, pid)
    with pytest.raises(ContractRevert) as e:
        late.governance.cast_vote(pid, True)  # registered after the proposal
    assert e.value.name == "NotEligible"
    with pytest.raises(ContractRevert, match=r"NotSucceeded\(1, 1\)"):
        a.governance.execute(pid)
    assert a.governance.proposal_votes(pid) == (2, 0)
    assert a.governance.receipt_of(pid, a.sender.address) == 2 and not a.governance.has_voted(pid, c.sender.address)

    mine(w3, 4)
    with pytest.raises(ContractRevert) as e:
        c.governance.cast_vote(pid, False)
    assert e.value.name == "VotingClosed"
    assert a.governance.state(pid) is C.ProposalState.SUCCEEDED
    _, sid = c.governance.execute(pid)
    assert a.governance.state(pid) is C.ProposalState.EXECUTED
    assert a.sessions.session_of_proposal(pid) == sid and a.governance.proposal_info(pid).session_id == sid
    with pytest.raises(ContractRevert, match="NotSucceeded"):
        c.governance.execute(pid)
    (row,) = a.governance.proposals()
    assert (row.id, row.state, row.for_votes) == (pid, C.ProposalState.EXECUTED, 2)

    members = {}
    for n in (a, b):
        r = n.sessions.join(sid)
        members[n.sender.address] = n.sessions.joined_assignment(r.receipt)
    assert sorted((m.shard, m.replica) for m in members.values()) == [(0, 0), (1, 0)]
    assert a.sessions.assignment_of(sid, a.sender.address) == members[a.sender.address]
    with pytest.raises(ContractRevert) as e:
        a.sessions.start(sid)
    assert e.value.name == "JoinWindowOpen"
    mine(w3, 3)
    a.sessions.start(sid)
    s = a.sessions.get_session(sid)
    assert (s.state, s.replicas, s.num_shards) == (C.SessionState.TRAINING, 1, 2)

    hashes = {0: "0x" + "11" * 32, 1: "0x" + "22" * 32}
    for n in (a, b):
        shard = members[n.sender.address].shard
        with pytest.raises(ContractRevert) as e:
            n.sessions.commit(sid, 1, shard, hashes[shard], hashes[shard])
        assert e.value.name == "WrongRound"
        n.sessions.commit(sid, 0, shard, hashes[shard], "0x" + "33" * 32)
        assert n.sessions.final_hash(sid, 0, shard) == hashes[shard]
        assert n.sessions.commit_of(sid, 0, shard, n.sender.address) == hashes[shard]
    assert a.sessions.get_session(sid).state is C.SessionState.COMPLETED

    record = C.AdapterRecord(manifest_hash="0x" + "44" * 32, base_model="minilm", base_model_hash="0x" + "ab" * 32,
                             method="lora", task="sequence-classification", shard_hashes=(hashes[0], hashes[1]),
                             session_id=sid, accuracy_bps=8000, metrics_uri="")
    with pytest.raises(ContractRevert) as e:
        c.adapters.publish(record)  # not a member of the session
    assert e.value.name == "NotSessionMember"
    _, aid = a.adapters.publish(record)
    got = a.adapters.get_adapter(aid)
    assert got.record == record and got.publisher == a.sender.address
    assert a.adapters.adapters_for("0x" + "ab" * 32, "sequence-classification") == [aid]
    assert a.adapters.latest_for("0x" + "ab" * 32, "sequence-classification") == aid
    assert a.adapters.unverified_for("0x" + "ab" * 32, "sequence-classification") == []
    assert a.adapters.attestation_of(aid, a.sender.address) == (True, 8000) and a.adapters.attestation_count(aid) == 1
