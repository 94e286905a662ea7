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
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any

from node.chain.artifacts import load_abi
from node.chain.errors import ChainError, translate

DEVICE_KINDS = ("cpu", "cuda", "mps")


def device_kind_code(name: str) -> int:
    try:
        return DEVICE_KINDS.index(name.lower())
    except ValueError:
        raise ChainError(f"unknown device kind {name!r}: use one of {', '.join(DEVICE_KINDS)}") from None


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
