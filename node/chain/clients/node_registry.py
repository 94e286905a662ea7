"""The NodeRegistry client: who the nodes are (stake, peer id, announce address, capacity), and the codes it
stores (node status; device kind from ``node.vocab.DeviceKind``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from node.chain.clients.base import ContractClient
from node.chain.errors import ChainError
from node.vocab import DeviceKind, UnknownWord


def device_kind_code(name: str) -> int:
    """The registry's ``deviceKind`` code of a device name (``node.vocab.DeviceKind``)."""
    try:
        return DeviceKind.parse(name.lower()).code
    except UnknownWord as exc:
        raise ChainError(str(exc)) from None


class NodeStatus(IntEnum):
    """``INodeRegistry.Status`` (tests/test_vocab_mirror.py compares the two)."""

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
    """``INodeRegistry.NodeInfo`` (``getNode``); the peer id as base58 text."""

    peer_id: str = field(metadata={"conv": _peer_id_text})
    announce_addr: str
    memory_mb: int
    device_kind: int
    throughput: int
    stake: int
    registered_block: int
    exit_available_at: int
    status: NodeStatus = field(metadata={"conv": NodeStatus})


@dataclass(frozen=True)
class Eligibility:
    """What ``eligibility`` returns: the one slot the vote and join paths read."""

    stake: int
    registered_block: int
    status: NodeStatus = field(metadata={"conv": NodeStatus})
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

    def lock_stake(self, node: str):
        """TrainingSessions only (on join); here for completeness and tests."""
        return self._send("lockStake", node)

    def unlock_stake(self, node: str):
        return self._send("unlockStake", node)

    def locks_of(self, node: str) -> int:
        """Open sessions holding this node's stake: it can request exit and withdraw only at 0."""
        return self._call("locksOf", node)

    def max_exit_delay_seconds(self) -> int:
        return self._call("MAX_EXIT_DELAY_SECONDS")

    def dev_chain_id(self) -> int:
        return self._call("DEV_CHAIN_ID")

    def transfer_ownership(self, new_owner: str):
        return self._send("transferOwnership", new_owner)

    def renounce_ownership(self):
        return self._send("renounceOwnership")

    # views
    def get_node(self, node: str) -> NodeInfo:
        return self._read(NodeInfo, "getNode", node)

    def eligibility(self, node: str) -> Eligibility:
        return self._read(Eligibility, "eligibility", node)

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
