"""The TrainingSessions client: a session's assignment of nodes to shards, its rounds, the aggregate hashes
the replicas commit and the faults on record."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from node.chain.clients.base import ContractClient, b32, hash_or_none


class SessionState(IntEnum):
    """``ITrainingSessions.State`` (tests/test_vocab_mirror.py compares the two)."""

    NONE = 0
    JOINING = 1
    TRAINING = 2
    COMPLETED = 3
    FAILED = 4


class Fault(IntEnum):
    """``ITrainingSessions.Fault``: what ``FaultReported`` says was wrong."""

    NONE = 0
    WRONG_HASH = 1
    MISSING = 2


@dataclass(frozen=True)
class SessionInfo:
    """``ITrainingSessions.Session`` (``getSession``)."""

    proposal_id: int
    opened_block: int
    join_deadline: int
    started_block: int
    num_shards: int
    replicas: int
    min_replicas: int
    shards_done: int
    rounds: int
    state: SessionState = field(metadata={"conv": SessionState})


@dataclass(frozen=True)
class ShardState:
    """``ITrainingSessions.ShardState`` (``getShard``)."""

    memory_mb: int
    joined: int
    replicas: int
    rounds: int
    round: int
    round_start: int       # block the current round's current epoch started
    commits: int
    leader_replica: int
    leader_count: int
    epoch: int             # attempt of the current round (a round that reached no quorum is retried)
    aborted: bool          # the session failed: no more commits


@dataclass(frozen=True)
class Assignment:
    """``ITrainingSessions.Assignment`` (``assignmentOf``): where a node sits in a session."""

    joined: bool
    shard: int
    replica: int
    released: bool = False   # the member took its stake lock back after the session ended
    barred: bool = False     # a slash left it below the minimum stake: its commits are refused


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
        return self._send("commit", session_id, round, shard, b32(aggregate_hash), b32(local_update_hash),
                          wait=wait, purpose=purpose)

    def close_round(self, session_id: int, round: int, shard: int):
        """After the current epoch's deadline without a quorum: retry the round, or abort the session."""
        return self._send("closeRound", session_id, round, shard)

    def report_faulty(self, session_id: int, round: int, epoch: int, shard: int, node: str):
        return self._send("reportFaulty", session_id, round, epoch, shard, node)

    def release(self, session_id: int):
        """Take this node's stake lock back once the session ended (or at once as a spare replica)."""
        return self._send("release", session_id)

    def bar(self, session_id: int, node: str):
        return self._send("bar", session_id, node)

    def bind(self, session_id: int, round: int, shard: int, binding: bytes, purpose: str | None = None):
        """Bind this node's local update of the round: ``binding`` is its ``update_digest``."""
        return self._send("bind", session_id, round, shard, b32(binding), purpose=purpose)

    def prove_unbound(self, session_id: int, round: int, shard: int, author: str, update_hash: str | bytes,
                      signature: bytes):
        """Submit ``author``'s signed update whose digest differs from its binding: it is slashed and barred."""
        return self._send("proveUnbound", session_id, round, shard, author, b32(update_hash), signature)

    def prove_double_signed(self, session_id: int, round: int, shard: int, author: str,
                            update_hashes: tuple[str | bytes, str | bytes], signatures: tuple[bytes, bytes]):
        """Submit two different updates ``author`` signed for one round: it is slashed and barred."""
        return self._send("proveDoubleSigned", session_id, round, shard, author,
                          [b32(x) for x in update_hashes], list(signatures))

    def transfer_ownership(self, new_owner: str):
        return self._send("transferOwnership", new_owner)

    def renounce_ownership(self):
        return self._send("renounceOwnership")

    # views
    def get_session(self, session_id: int) -> SessionInfo:
        return self._read(SessionInfo, "getSession", session_id)

    def session_of_proposal(self, proposal_id: int) -> int:
        return self._call("sessionOfProposal", proposal_id)

    def get_shard(self, session_id: int, shard: int) -> ShardState:
        return self._read(ShardState, "getShard", session_id, shard)

    def assignment_of(self, session_id: int, node: str) -> Assignment:
        return self._read(Assignment, "assignmentOf", session_id, node)

    def member_at(self, session_id: int, shard: int, replica: int) -> str:
        return self._call("memberAt", session_id, shard, replica)

    def replicas(self, session_id: int) -> int:
        return self._call("replicas", session_id)

    def current_round(self, session_id: int, shard: int) -> int:
        return self._call("currentRound", session_id, shard)

    def final_hash(self, session_id: int, round: int, shard: int) -> str | None:
        """The round's final aggregate hash, or None while it is not final."""
        return hash_or_none(self._call("finalHash", session_id, round, shard))

    def commit_of(self, session_id: int, round: int, shard: int, node: str) -> str | None:
        return hash_or_none(self._call("commitOf", session_id, round, shard, node))

    def commit_at(self, session_id: int, round: int, epoch: int, shard: int, node: str) -> str | None:
        return hash_or_none(self._call("commitAt", session_id, round, epoch, shard, node))

    def final_epoch(self, session_id: int, round: int, shard: int) -> tuple[int, int]:
        """(epoch that finalized the round, that epoch's deadline); (0, 0) while not final."""
        return tuple(self._call("finalEpoch", session_id, round, shard))

    def round_deadline(self, session_id: int, shard: int) -> int:
        """Last block of the shard's current epoch that takes commits."""
        return self._call("roundDeadline", session_id, shard)

    def is_barred(self, session_id: int, node: str) -> bool:
        return self._call("isBarred", session_id, node)

    def votes_for(self, session_id: int, round: int, shard: int, aggregate_hash: str | bytes) -> int:
        return self._call("votesFor", session_id, round, shard, b32(aggregate_hash))

    def fault_reported(self, session_id: int, round: int, epoch: int, shard: int, node: str) -> bool:
        return self._call("faultReported", session_id, round, epoch, shard, node)

    def binding_of(self, session_id: int, round: int, shard: int, replica: int) -> str | None:
        """The update digest a replica bound for the round; None if it bound none."""
        return hash_or_none(self._call("bindingOf", session_id, round, shard, replica))

    def bind_deadline(self, session_id: int, shard: int) -> int:
        """Last block of the shard's current round's bind window (epoch 0 only takes bindings)."""
        return self._call("bindDeadline", session_id, shard)

    def equivocation_proven(self, session_id: int, round: int, shard: int, author: str) -> bool:
        return self._call("equivocationProven", session_id, round, shard, author)

    def update_digest(self, session_id: int, round: int, shard: int, author: str, update_hash: str | bytes) -> bytes:
        """The contract's own digest (``node.chain.updates.update_digest`` computes it off chain)."""
        return bytes(self._call("updateDigest", session_id, round, shard, author, b32(update_hash)))

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

    def max_epochs(self) -> int:
        return self._call("MAX_EPOCHS")
