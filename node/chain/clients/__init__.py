"""Typed clients for the project's contracts: a Python method per call and view, dataclass results.

One module per contract (``node_registry``, ``training_sessions``, ``governance``, ``adapter_registry``,
``fedpeat_ledger``) on ``base`` (``ContractClient``, ABI-driven structs, hash helpers), and ``bundle``
(``Clients``, one deployment's set). Each client wraps one deployed contract (ABI from ``contracts/artifacts``).
Views return plain values or dataclasses whose fields are the Solidity structs' components in snake_case,
matched by name from the ABI; writes go through a ``TxSender`` and return its ``TxResult`` (receipt included).
Every revert comes back as ``ContractRevert`` named after the contract's custom error; a dead RPC as
``RpcUnavailable``. ``tests/chain/test_clients.py`` checks that every ABI function has a method and that the
dataclasses match the ABI's struct components, so a contract change cannot silently drift.

This package re-exports the public names, so ``from node.chain.clients import X`` is the way in.
"""

from node.chain.clients.adapter_registry import Adapter, AdapterRecord, AdapterRegistryClient
from node.chain.clients.base import ZERO32, ContractClient, snake
from node.chain.clients.bundle import Clients
from node.chain.clients.fedpeat_ledger import (BPS, AttachedEmulator, EmulatorRecord, FedPeatLedgerClient, RoundPlan,
                                               retention_bps)
from node.chain.clients.governance import GovernanceClient, JobParams, Proposal, ProposalInfo, ProposalState
from node.chain.clients.node_registry import (Eligibility, NodeInfo, NodeRegistryClient, NodeStatus,
                                              device_kind_code, peer_id_bytes)
from node.chain.clients.training_sessions import (Assignment, Fault, SessionInfo, SessionsClient, SessionState,
                                                  ShardState)

__all__ = [
    "BPS", "ZERO32", "Adapter", "AdapterRecord", "AdapterRegistryClient", "Assignment", "AttachedEmulator",
    "Clients", "ContractClient", "Eligibility", "EmulatorRecord", "Fault", "FedPeatLedgerClient",
    "GovernanceClient", "JobParams", "NodeInfo", "NodeRegistryClient", "NodeStatus", "Proposal", "ProposalInfo",
    "ProposalState", "RoundPlan", "SessionInfo", "SessionState", "SessionsClient", "ShardState",
    "device_kind_code", "peer_id_bytes", "retention_bps", "snake",
]
