"""Typed clients for the project's contracts: a Python method per call and view, dataclass results.

Each client wraps one deployed contract (ABI from ``contracts/artifacts``). Views return plain
values or dataclasses whose fields follow the Solidity structs (snake_case); writes go through a
``TxSender`` and return its ``TxResult`` (receipt included). Every revert comes back as
``ContractRevert`` named after the contract's custom error; a dead RPC as ``RpcUnavailable``.
``tests/chain/test_clients.py`` checks that every ABI function has a method here and that the
dataclasses match the ABI's struct components, so a contract change cannot silently drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any

from node.chain.artifacts import load_abi
from node.chain.errors import ChainError, translate
from node.vocab import DeviceKind, EmulatorRule, UnknownWord


def device_kind_code(name: str) -> int:
    try:
        return DeviceKind.parse(name.lower()).code
    except UnknownWord as exc:
        raise ChainError(str(exc)) from None


def snake(name: str) -> str:
    name = name.rstrip("_")
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def _hex32(value: Any) -> str:
    return "0x" + bytes(value).hex()


def _b32(value: str | bytes) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 32:
            raise ChainError(f"expected 32 bytes, got {len(value)}")
        return bytes(value)
    text = value[2:] if value.startswith("0x") else value
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ChainError(f"not a hex hash: {value!r}") from None
    if len(raw) != 32:
        raise ChainError(f"expected a 32-byte hash, got {len(raw)} bytes: {value!r}")
    return raw


def _struct(cls, values) -> Any:
    """Build dataclass ``cls`` from an ABI-decoded tuple (same order as the Solidity struct)."""
    names = [f.name for f in fields(cls)]
    if len(values) != len(names):
        raise ChainError(f"{cls.__name__}: ABI returned {len(values)} fields, expected {len(names)}")
    out = {}
    for f, v in zip(fields(cls), values):
        conv = f.metadata.get("conv") if f.metadata else None
        out[f.name] = conv(v) if conv else (bytes(v) if isinstance(v, (bytes, bytearray)) else v)
    return cls(**out)


class ContractClient:
    """Calls and sends for one deployed contract; subclasses add the typed methods."""

    NAME = ""

    def __init__(self, w3, address: str, sender=None):
        from eth_utils import to_checksum_address

        self.w3 = w3
        self.address = to_checksum_address(address)
        self.abi = load_abi(self.NAME)
        self.contract = w3.eth.contract(address=self.address, abi=self.abi)
        self.sender = sender

    def _fn(self, name: str, *args):
        return self.contract.functions[name](*args)

    def _call(self, name: str, *args, block: int | str = "latest"):
        try:
            return self._fn(name, *args).call(block_identifier=block)
        except Exception as exc:
            err = translate(exc, self.NAME, getattr(self.w3.provider, "endpoint_uri", None))
            if err is exc:
                raise
            raise err from None

    def _send(self, name: str, *args, value: int = 0, purpose: str | None = None, wait: bool = True):
        if self.sender is None:
            raise ChainError(f"{self.NAME}.{name} needs an account: this client was made without a sender")
        return self.sender.send(self._fn(name, *args), value=value, purpose=purpose or f"{self.NAME}.{name}",
                                contract=self.NAME, wait=wait)

    def events(self, name: str, receipt) -> list[dict]:
        """Decoded ``name`` events of a receipt, as plain dicts."""
        from web3.logs import DISCARD

        return [dict(e["args"]) for e in self.contract.events[name]().process_receipt(receipt, errors=DISCARD)]


# -- NodeRegistry -----------------------------------------------------------------------------------

class NodeStatus(IntEnum):
    NONE = 0
    ACTIVE = 1
    EXITING = 2
    WITHDRAWN = 3


def _peer_id_text(raw: bytes) -> str:
    """The base58 form libp2p prints; the registry stores the binary multihash."""
    import base58

    return base58.b58encode(bytes(raw)).decode() if raw else ""


def peer_id_bytes(peer_id: str | bytes) -> bytes:
    """Binary multihash of a base58 peer id (what ``register`` stores)."""
    import base58

    if isinstance(peer_id, (bytes, bytearray)):
        return bytes(peer_id)
    try:
        return base58.b58decode(peer_id)
    except ValueError:
        raise ChainError(f"not a base58 peer id: {peer_id!r}") from None


@dataclass(frozen=True)
class NodeInfo:
    peer_id: str
    announce_addr: str
    memory_mb: int
    device_kind: int
    throughput: int
    stake: int
    registered_block: int
    exit_available_at: int
    status: NodeStatus


@dataclass(frozen=True)
class Eligibility:
    stake: int
    registered_block: int
    status: NodeStatus
    memory_mb: int


class NodeRegistryClient(ContractClient):
    NAME = "NodeRegistry"

    # writes
    def register(self, peer_id: str | bytes, announce_addr: str, memory_mb: int, device_kind: int,
                 throughput: int, stake: int):
        return self._send("register", peer_id_bytes(peer_id), announce_addr, memory_mb, device_kind, throughput,
                          value=stake)

    def update(self, peer_id: str | bytes, announce_addr: str, memory_mb: int, device_kind: int, throughput: int):
        return self._send("update", peer_id_bytes(peer_id), announce_addr, memory_mb, device_kind, throughput)

    def request_exit(self):
        return self._send("requestExit")

    def withdraw(self):
        return self._send("withdraw")

    def set_slasher(self, slasher: str):
        return self._send("setSlasher", slasher)

    def slash(self, node: str, amount: int):
        return self._send("slash", node, amount)

    def sweep_slashed(self, to: str):
        return self._send("sweepSlashed", to)

    def transfer_ownership(self, new_owner: str):
        return self._send("transferOwnership", new_owner)

    def renounce_ownership(self):
        return self._send("renounceOwnership")

    # views
    def get_node(self, node: str) -> NodeInfo:
        v = self._call("getNode", node)
        return NodeInfo(_peer_id_text(v[0]), v[1], v[2], v[3], v[4], v[5], v[6], v[7], NodeStatus(v[8]))

    def eligibility(self, node: str) -> Eligibility:
        s, b, st, m = self._call("eligibility", node)
        return Eligibility(s, b, NodeStatus(st), m)

    def is_active(self, node: str) -> bool:
        return self._call("isActive", node)

    def registered_at_block(self, node: str) -> int:
        return self._call("registeredAtBlock", node)

    def active_count(self) -> int:
        return self._call("activeCount")

    def total_active_stake(self) -> int:
        return self._call("totalActiveStake")

    def totals_at_block_start(self) -> tuple[int, int]:
        return tuple(self._call("totalsAtBlockStart"))

    def node_count(self) -> int:
        return self._call("nodeCount")

    def node_at(self, index: int) -> str:
        return self._call("nodeAt", index)

    def nodes(self) -> list[str]:
        return [self.node_at(i) for i in range(self.node_count())]

    def min_stake(self) -> int:
        return self._call("minStake")

    def exit_delay_seconds(self) -> int:
        return self._call("exitDelaySeconds")

    def slasher(self) -> str:
        return self._call("slasher")

    def slashed_balance(self) -> int:
        return self._call("slashedBalance")

    def owner(self) -> str:
        return self._call("owner")

    def max_peer_id_bytes(self) -> int:
        return self._call("MAX_PEER_ID_BYTES")

    def max_addr_bytes(self) -> int:
        return self._call("MAX_ADDR_BYTES")

    def max_device_kind(self) -> int:
        return self._call("MAX_DEVICE_KIND")


# -- TrainingSessions ---------------------------------------------------------------------------------

class SessionState(IntEnum):
    NONE = 0
    JOINING = 1
    TRAINING = 2
    COMPLETED = 3
    FAILED = 4


class Fault(IntEnum):
    NONE = 0
    WRONG_HASH = 1
    MISSING = 2


@dataclass(frozen=True)
class SessionInfo:
    proposal_id: int
    opened_block: int
    join_deadline: int
    started_block: int
    num_shards: int
    replicas: int
    min_replicas: int
    shards_done: int
    rounds: int
    state: SessionState


@dataclass(frozen=True)
class ShardState:
    memory_mb: int
    joined: int
    replicas: int
    rounds: int
    round: int
    first_commit_block: int
    commits: int
    leader_replica: int
    leader_count: int
    last_finalized_block: int


@dataclass(frozen=True)
class Assignment:
    joined: bool
    shard: int
    replica: int


ZERO32 = "0x" + "00" * 32


class SessionsClient(ContractClient):
    NAME = "TrainingSessions"

    # writes
    def set_governance(self, governance: str):
        return self._send("setGovernance", governance)

    def open_session(self, proposal_id: int, shard_memory_mb: list[int], rounds: int, min_replicas: int):
        return self._send("openSession", proposal_id, list(shard_memory_mb), rounds, min_replicas)

    def join(self, session_id: int):
        """Join; the result's ``assignment`` is read from the ``Joined`` event."""
        return self._send("join", session_id)

    def joined_assignment(self, receipt) -> Assignment:
        (ev,) = self.events("Joined", receipt)
        return Assignment(True, ev["shard"], ev["replica"])

    def start(self, session_id: int):
        return self._send("start", session_id)

    def commit(self, session_id: int, round: int, shard: int, aggregate_hash: str | bytes,
               local_update_hash: str | bytes, wait: bool = True, purpose: str | None = None):
        return self._send("commit", session_id, round, shard, _b32(aggregate_hash), _b32(local_update_hash),
                          wait=wait, purpose=purpose)

    def finalize_after_timeout(self, session_id: int, round: int, shard: int):
        return self._send("finalizeAfterTimeout", session_id, round, shard)

    def report_faulty(self, session_id: int, round: int, shard: int, node: str):
        return self._send("reportFaulty", session_id, round, shard, node)

    def transfer_ownership(self, new_owner: str):
        return self._send("transferOwnership", new_owner)

    def renounce_ownership(self):
        return self._send("renounceOwnership")

    # views
    def get_session(self, session_id: int) -> SessionInfo:
        v = list(self._call("getSession", session_id))
        v[-1] = SessionState(v[-1])
        return _struct(SessionInfo, v)

    def session_of_proposal(self, proposal_id: int) -> int:
        return self._call("sessionOfProposal", proposal_id)

    def get_shard(self, session_id: int, shard: int) -> ShardState:
        return _struct(ShardState, self._call("getShard", session_id, shard))

    def assignment_of(self, session_id: int, node: str) -> Assignment:
        return _struct(Assignment, self._call("assignmentOf", session_id, node))

    def member_at(self, session_id: int, shard: int, replica: int) -> str:
        return self._call("memberAt", session_id, shard, replica)

    def replicas(self, session_id: int) -> int:
        return self._call("replicas", session_id)

    def current_round(self, session_id: int, shard: int) -> int:
        return self._call("currentRound", session_id, shard)

    def final_hash(self, session_id: int, round: int, shard: int) -> str | None:
        """The round's final aggregate hash, or None while it is not final."""
        h = _hex32(self._call("finalHash", session_id, round, shard))
        return None if h == ZERO32 else h

    def commit_of(self, session_id: int, round: int, shard: int, node: str) -> str | None:
        h = _hex32(self._call("commitOf", session_id, round, shard, node))
        return None if h == ZERO32 else h

    def votes_for(self, session_id: int, round: int, shard: int, aggregate_hash: str | bytes) -> int:
        return self._call("votesFor", session_id, round, shard, _b32(aggregate_hash))

    def fault_reported(self, session_id: int, round: int, shard: int, node: str) -> bool:
        return self._call("faultReported", session_id, round, shard, node)

    def quorum_of(self, n: int) -> int:
        return self._call("quorumOf", n)

    def session_count(self) -> int:
        return self._call("sessionCount")

    def governance(self) -> str:
        return self._call("governance")

    def registry(self) -> str:
        return self._call("registry")

    def join_window_blocks(self) -> int:
        return self._call("joinWindowBlocks")

    def commit_timeout_blocks(self) -> int:
        return self._call("commitTimeoutBlocks")

    def slash_amount(self) -> int:
        return self._call("slashAmount")

    def owner(self) -> str:
        return self._call("owner")

    def max_shards(self) -> int:
        return self._call("MAX_SHARDS")

    def max_replicas_per_shard(self) -> int:
        return self._call("MAX_REPLICAS_PER_SHARD")


# -- FineTuneGovernance -------------------------------------------------------------------------------

class ProposalState(IntEnum):
    """OpenZeppelin Governor's numbering (the subset the contract uses)."""

    PENDING = 0
    ACTIVE = 1
    CANCELED = 2
    DEFEATED = 3
    SUCCEEDED = 4
    EXECUTED = 5


@dataclass(frozen=True)
class JobParams:
    """``FineTuneGovernance.JobParams`` as read from chain (hashes as 0x-hex)."""

    base_model: str
    base_model_hash: str = field(metadata={"conv": _hex32})
    dataset: str = ""
    dataset_hash: str = field(default="", metadata={"conv": _hex32})
    task: str = ""
    method: str = ""
    method_config_hash: str = field(default="", metadata={"conv": _hex32})
    layer_bounds: tuple = field(default=(), metadata={"conv": tuple})
    shard_memory_mb: tuple = field(default=(), metadata={"conv": tuple})
    distribution: int = 0
    distribution_param: int = 0
    sync_interval: int = 0
    rounds: int = 0
    aggregation: int = 0
    min_replicas: int = 0
    learning_rate_e9: int = 0
    seed: int = 0
    spec_hash: str = field(default="", metadata={"conv": _hex32})

    def as_chain_dict(self) -> dict[str, Any]:
        """The struct keyed by its Solidity names, hashes as bytes (``JobSpec.check_against_chain``'s input)."""
        out = {}
        for entry, f in zip(_JOB_PARAM_NAMES, fields(self)):
            v = getattr(self, f.name)
            out[entry] = bytes.fromhex(v[2:]) if f.metadata.get("conv") is _hex32 else (list(v) if isinstance(v, tuple) else v)
        return out


_JOB_PARAM_NAMES = ("baseModel", "baseModelHash", "dataset", "datasetHash", "task", "method", "methodConfigHash",
                    "layerBounds", "shardMemoryMB", "distribution", "distributionParam", "syncInterval", "rounds",
                    "aggregation", "minReplicas", "learningRateE9", "seed", "specHash")


@dataclass(frozen=True)
class ProposalInfo:
    proposer: str
    created_block: int
    vote_start: int
    vote_end: int
    eligible_weight: int
    quorum_weight: int
    session_id: int


@dataclass(frozen=True)
class Proposal:
    """One row of `bsns proposals`: everything a voter looks at."""

    id: int
    state: ProposalState
    for_votes: int
    against_votes: int
    info: ProposalInfo
    params: JobParams


class GovernanceClient(ContractClient):
    NAME = "FineTuneGovernance"

    def _takes_spec_text(self) -> bool:
        entry = next(e for e in self.abi if e.get("type") == "function" and e["name"] == "propose")
        return len(entry["inputs"]) == 2

    # writes
    def propose(self, params: dict[str, Any], spec_toml: str | None = None):
        """Propose ``params`` (``JobSpec.to_chain_params()``); returns (TxResult, proposal id)."""
        args = [params]
        if self._takes_spec_text():
            if spec_toml is None:
                raise ChainError("this FineTuneGovernance takes the spec text with the proposal; pass spec_toml")
            args.append(spec_toml)
        result = self._send("propose", *args)
        (ev,) = self.events("ProposalCreated", result.receipt)
        return result, ev["proposalId"]

    def cast_vote(self, proposal_id: int, support: bool, wait: bool = True):
        return self._send("castVote", proposal_id, bool(support), wait=wait)

    def execute(self, proposal_id: int):
        """Execute a Succeeded proposal; returns (TxResult, session id)."""
        result = self._send("execute", proposal_id)
        (ev,) = self.events("ProposalExecuted", result.receipt)
        return result, ev["sessionId"]

    def cancel(self, proposal_id: int):
        return self._send("cancel", proposal_id)

    # views
    def state(self, proposal_id: int) -> ProposalState:
        return ProposalState(self._call("state", proposal_id))

    def get_params(self, proposal_id: int) -> JobParams:
        return _struct(JobParams, self._call("getParams", proposal_id))

    def proposal_votes(self, proposal_id: int) -> tuple[int, int]:
        return tuple(self._call("proposalVotes", proposal_id))

    def proposal_info(self, proposal_id: int) -> ProposalInfo:
        return _struct(ProposalInfo, self._call("proposalInfo", proposal_id))

    def receipt_of(self, proposal_id: int, voter: str) -> int:
        """0 not voted, 1 against, 2 for."""
        return self._call("receiptOf", proposal_id, voter)

    def has_voted(self, proposal_id: int, voter: str) -> bool:
        return self._call("hasVoted", proposal_id, voter)

    def can_vote(self, proposal_id: int, voter: str) -> bool:
        return self._call("canVote", proposal_id, voter)

    def proposal_count(self) -> int:
        return self._call("proposalCount")

    def proposal(self, proposal_id: int) -> Proposal:
        f, a = self.proposal_votes(proposal_id)
        return Proposal(proposal_id, self.state(proposal_id), f, a, self.proposal_info(proposal_id),
                        self.get_params(proposal_id))

    def proposals(self) -> list[Proposal]:
        return [self.proposal(i) for i in range(1, self.proposal_count() + 1)]

    def spec_text(self, proposal_id: int, from_block: int | None = None) -> str | None:
        """The TOML spec sent with the proposal (from its ``ProposalSpec`` event), if the contract emits one."""
        if not any(e.get("type") == "event" and e["name"] == "ProposalSpec" for e in self.abi):
            return None
        start = from_block if from_block is not None else self.proposal_info(proposal_id).created_block
        logs = self.contract.events["ProposalSpec"]().get_logs(from_block=start, to_block=start)
        texts = [lg["args"]["specToml"] for lg in logs if lg["args"]["proposalId"] == proposal_id]
        return texts[0] if texts else None

    def registry(self) -> str:
        return self._call("registry")

    def sessions(self) -> str:
        return self._call("sessions")

    def voting_delay_blocks(self) -> int:
        return self._call("votingDelayBlocks")

    def voting_period_blocks(self) -> int:
        return self._call("votingPeriodBlocks")

    def quorum_bps(self) -> int:
        return self._call("quorumBps")

    def threshold_bps(self) -> int:
        return self._call("thresholdBps")

    def weight_by_stake(self) -> bool:
        return self._call("weightByStake")

    def max_shards(self) -> int:
        return self._call("MAX_SHARDS")

    def max_string_bytes(self) -> int:
        return self._call("MAX_STRING_BYTES")

    def max_replicas(self) -> int:
        return self._call("MAX_REPLICAS")


# -- AdapterRegistry ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class AdapterRecord:
    manifest_hash: str = field(metadata={"conv": _hex32})
    base_model: str = ""
    base_model_hash: str = field(default="", metadata={"conv": _hex32})
    method: str = ""
    task: str = ""
    shard_hashes: tuple = field(default=(), metadata={"conv": lambda v: tuple(_hex32(h) for h in v)})
    session_id: int = 0
    parent_id: int = 0
    accuracy_bps: int = 0
    metrics_uri: str = ""

    def to_chain(self) -> dict[str, Any]:
        return {"manifestHash": _b32(self.manifest_hash), "baseModel": self.base_model,
                "baseModelHash": _b32(self.base_model_hash), "method": self.method, "task": self.task,
                "shardHashes": [_b32(h) for h in self.shard_hashes], "sessionId": self.session_id,
                "parentId": self.parent_id, "accuracyBps": self.accuracy_bps, "metricsURI": self.metrics_uri}


@dataclass(frozen=True)
class Adapter:
    record: AdapterRecord
    publisher: str
    published_block: int


class AdapterRegistryClient(ContractClient):
    NAME = "AdapterRegistry"

    def publish(self, record: AdapterRecord):
        """Publish ``record``; returns (TxResult, adapter id)."""
        result = self._send("publish", record.to_chain())
        (ev,) = self.events("AdapterPublished", result.receipt)
        return result, ev["adapterId"]

    def get_adapter(self, adapter_id: int) -> Adapter:
        rec, publisher, block = self._call("getAdapter", adapter_id)
        return Adapter(_struct(AdapterRecord, rec), publisher, block)

    def adapters_for(self, base_model_hash: str | bytes, task: str) -> list[int]:
        return list(self._call("adaptersFor", _b32(base_model_hash), task))

    def latest_for(self, base_model_hash: str | bytes, task: str) -> int:
        return self._call("latestFor", _b32(base_model_hash), task)

    def adapter_of_session(self, session_id: int) -> int:
        return self._call("adapterOfSession", session_id)

    def adapter_count(self) -> int:
        return self._call("adapterCount")

    def sessions(self) -> str:
        return self._call("sessions")

    def governance(self) -> str:
        return self._call("governance")

    def max_shards(self) -> int:
        return self._call("MAX_SHARDS")

    def max_string_bytes(self) -> int:
        return self._call("MAX_STRING_BYTES")

    def max_uri_bytes(self) -> int:
        return self._call("MAX_URI_BYTES")


# -- FedPeatLedger -----------------------------------------------------------------------------------

def retention_bps(retention: float | None) -> int:
    """A retention ratio in basis points as the ledger stores it; None (sits out) is 0."""
    if retention is None:
        return 0
    if not 0.0 <= float(retention) <= 1.0:
        raise ChainError(f"retention must be in [0, 1], got {retention}")
    return int(round(float(retention) * 10_000))


@dataclass(frozen=True)
class EmulatorRecord:
    base_model_hash: str = field(metadata={"conv": _hex32})
    registrant: str = ""
    registered_block: int = 0
    retention_bps: int = 0
    kept_each_end: int = 0
    importance_rule: int = 0
    distill_steps: int = 0


@dataclass(frozen=True)
class RoundPlan:
    """A round's plan as recorded (``RoundPlanRecorded``): per device (replica), the retention in basis points."""

    round: int
    plan_hash: str
    retention_bps: tuple[int, ...]
    block_number: int


@dataclass(frozen=True)
class AttachedEmulator:
    """An emulator attached to a session (``EmulatorAttached``), in the order of attachment."""

    emulator_hash: str
    retention_bps: int
    by: str
    block_number: int


class FedPeatLedgerClient(ContractClient):
    NAME = "FedPeatLedger"

    def register_emulator(self, emulator_hash: str | bytes, base_model_hash: str | bytes, retention_bps: int,
                          kept_each_end: int, importance_rule: int | str, distill_steps: int):
        if isinstance(importance_rule, str):
            try:
                importance_rule = EmulatorRule.parse(importance_rule).code
            except UnknownWord as exc:
                raise ChainError(str(exc)) from None
        return self._send("registerEmulator", _b32(emulator_hash), _b32(base_model_hash), retention_bps,
                          kept_each_end, importance_rule, distill_steps)

    def set_controller(self, session_id: int, controller: str):
        return self._send("setController", session_id, controller)

    def attach_emulator(self, session_id: int, emulator_hash: str | bytes):
        return self._send("attachEmulator", session_id, _b32(emulator_hash))

    def record_round_plan(self, session_id: int, round: int, plan_hash: str | bytes, retention_bps: list[int]):
        return self._send("recordRoundPlan", session_id, round, _b32(plan_hash), list(retention_bps))

    # views
    def get_emulator(self, emulator_hash: str | bytes) -> EmulatorRecord | None:
        """The emulator's record, or None if that hash is not registered."""
        rec = _struct(EmulatorRecord, self._call("getEmulator", _b32(emulator_hash)))
        return rec if rec.registered_block else None

    def is_attached(self, session_id: int, emulator_hash: str | bytes) -> bool:
        return self._call("isAttached", session_id, _b32(emulator_hash))

    def attached_count(self, session_id: int) -> int:
        return self._call("attachedCount", session_id)

    def controller_of(self, session_id: int) -> str:
        return self._call("controllerOf", session_id)

    def plan_hash_of(self, session_id: int, round: int) -> str | None:
        h = _hex32(self._call("planHashOf", session_id, round))
        return None if h == ZERO32 else h

    # events: the retentions of a plan and the attached emulators live only there
    def _logs(self, event: str, from_block: int, to_block: int | str, **filters) -> list:
        try:
            return self.contract.events[event]().get_logs(from_block=from_block, to_block=to_block,
                                                          argument_filters=filters)
        except Exception as exc:
            err = translate(exc, self.NAME, getattr(self.w3.provider, "endpoint_uri", None))
            if err is exc:
                raise
            raise err from None

    def round_plan(self, session_id: int, round: int, from_block: int = 0) -> RoundPlan | None:
        """The plan recorded for a (1-based) ledger round, or None while there is none. ``from_block``: where
        to start looking (the session's opened block keeps the log range narrow)."""
        h = self.plan_hash_of(session_id, round)
        if h is None:
            return None
        for lg in self._logs("RoundPlanRecorded", from_block, "latest", sessionId=session_id, round=round):
            a = lg["args"]
            if int(a["sessionId"]) == session_id and int(a["round"]) == round and _hex32(a["planHash"]) == h:
                return RoundPlan(round, h, tuple(int(x) for x in a["retentionBps"]), int(lg["blockNumber"]))
        raise ChainError(f"FedPeatLedger has plan {h} for session {session_id} round {round} but no "
                         f"RoundPlanRecorded event after block {from_block}")

    def attached_emulators(self, session_id: int, from_block: int = 0) -> list[AttachedEmulator]:
        """The emulators attached to a session, in the order they were attached."""
        logs = self._logs("EmulatorAttached", from_block, "latest", sessionId=session_id)
        logs = sorted(logs, key=lambda lg: (lg["blockNumber"], lg["logIndex"]))
        return [AttachedEmulator(_hex32(lg["args"]["emulatorHash"]), int(lg["args"]["retentionBps"]),
                                 lg["args"]["by"], int(lg["blockNumber"]))
                for lg in logs if int(lg["args"]["sessionId"]) == session_id]

    def sessions(self) -> str:
        return self._call("sessions")

    def governance(self) -> str:
        return self._call("governance")

    def bps(self) -> int:
        return self._call("BPS")

    def max_rule(self) -> int:
        return self._call("MAX_RULE")

    def max_devices(self) -> int:
        return self._call("MAX_DEVICES")


# -- all of them --------------------------------------------------------------------------------------

class Clients:
    """The clients of one deployment, sharing one sender (None: read-only)."""

    def __init__(self, w3, deployment, sender=None):
        self.w3 = w3
        self.deployment = deployment
        self.sender = sender
        self.registry = NodeRegistryClient(w3, deployment.address("NodeRegistry"), sender)
        self.sessions = SessionsClient(w3, deployment.address("TrainingSessions"), sender)
        self.governance = GovernanceClient(w3, deployment.address("FineTuneGovernance"), sender)
        self.adapters = AdapterRegistryClient(w3, deployment.address("AdapterRegistry"), sender)
        # optional: deployments made before FedPeatLedger existed have none
        self.fedpeat = (FedPeatLedgerClient(w3, deployment.addresses["FedPeatLedger"], sender)
                        if "FedPeatLedger" in deployment.addresses else None)

    def watched(self) -> dict[str, tuple[str, list[dict]]]:
        """``EventWatcher``'s ``contracts`` argument for this deployment."""
        clients = (self.registry, self.sessions, self.governance, self.adapters, self.fedpeat)
        return {c.NAME: (c.address, c.abi) for c in clients if c is not None}
