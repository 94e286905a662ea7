"""The FineTuneGovernance client: proposals (the job parameters agreed on chain, the spec text in the
``ProposalSpec`` event), votes, execution, and the rows ``bsns proposals`` shows.

``JobParams`` is read and written by the ABI's component names: the Solidity struct
(``IFineTuneGovernance.JobParams``) is the one written field order.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from node.chain.clients.base import ContractClient, abi_function, chain_dict, contract_components
from node.chain.errors import ChainError


class ProposalState(IntEnum):
    """``IFineTuneGovernance.ProposalState``: OpenZeppelin Governor's numbering (the subset the contract uses)."""

    PENDING = 0
    ACTIVE = 1
    CANCELED = 2
    DEFEATED = 3
    SUCCEEDED = 4
    EXECUTED = 5


@dataclass(frozen=True)
class JobParams:
    """``IFineTuneGovernance.JobParams`` as read from chain (hashes as 0x-hex, arrays as tuples);
    ``distribution``, ``aggregation`` and ``server_update`` are ``node.vocab`` codes."""

    base_model: str
    base_model_hash: str
    dataset: str
    dataset_hash: str
    task: str
    method: str
    method_config_hash: str
    layer_bounds: tuple
    shard_memory_mb: tuple
    distribution: int
    distribution_param: int
    sync_interval: int
    rounds: int
    aggregation: int
    server_update: int
    min_replicas: int
    learning_rate_e9: int
    seed: int
    spec_hash: str

    def as_chain_dict(self) -> dict[str, Any]:
        """The struct keyed by its Solidity names, hashes as bytes (``JobSpec.check_against_chain``'s input)."""
        return chain_dict(self, contract_components("FineTuneGovernance", "getParams"))


@dataclass(frozen=True)
class ProposalInfo:
    """What ``proposalInfo`` returns."""

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
        return len(abi_function(self.abi, "propose")["inputs"]) == 2

    # writes
    def propose(self, params: dict[str, Any], spec_toml: str | None = None):
        """Propose ``params`` (``JobSpec.to_chain_params()``: keyed by the struct's Solidity names, encoded in
        the ABI's order), paying the contract's proposal deposit; returns (TxResult, proposal id)."""
        args: list[Any] = [self._struct_arg("propose", params)]
        if self._takes_spec_text():
            if spec_toml is None:
                raise ChainError("this FineTuneGovernance takes the spec text with the proposal; pass spec_toml")
            args.append(spec_toml)
        result = self._send("propose", *args, value=self.proposal_deposit())
        (ev,) = self.events("ProposalCreated", result.receipt)
        return result, ev["proposalId"]

    def settle_deposit(self, proposal_id: int):
        """Return the deposit of a proposal that reached quorum to its proposer, or forfeit it; returns
        (TxResult, ("returned" | "forfeited", wei))."""
        result = self._send("settleDeposit", proposal_id)
        for name, outcome in (("DepositReturned", "returned"), ("DepositForfeited", "forfeited")):
            for ev in self.events(name, result.receipt):
                return result, (outcome, ev["amount"])
        raise ChainError(f"settleDeposit({proposal_id}) emitted neither DepositReturned nor DepositForfeited")

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
        return self._read(JobParams, "getParams", proposal_id)

    def proposal_votes(self, proposal_id: int) -> tuple[int, int]:
        return tuple(self._call("proposalVotes", proposal_id))

    def proposal_info(self, proposal_id: int) -> ProposalInfo:
        return self._read(ProposalInfo, "proposalInfo", proposal_id)

    def receipt_of(self, proposal_id: int, voter: str) -> int:
        """0 not voted, 1 against, 2 for."""
        return self._call("receiptOf", proposal_id, voter)

    def has_voted(self, proposal_id: int, voter: str) -> bool:
        return self._call("hasVoted", proposal_id, voter)

    def can_vote(self, proposal_id: int, voter: str) -> bool:
        return self._call("canVote", proposal_id, voter)

    def proposal_deposit(self) -> int:
        """Wei that propose takes, returned by ``settle_deposit`` if the proposal reaches quorum."""
        return self._call("proposalDeposit")

    def deposit_of(self, proposal_id: int) -> int:
        """Wei the proposal still holds as its deposit (0 once settled)."""
        return self._call("depositOf", proposal_id)

    def forfeited_deposits(self) -> int:
        """Wei of the deposits forfeited so far (they stay in the contract)."""
        return self._call("forfeitedDeposits")

    def dev_chain_id(self) -> int:
        """The chain where a zero proposal deposit is allowed."""
        return self._call("DEV_CHAIN_ID")

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
        if not self.has_event("ProposalSpec"):
            return None
        start = from_block if from_block is not None else self.proposal_info(proposal_id).created_block
        logs = self.logs("ProposalSpec", start, start)
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
