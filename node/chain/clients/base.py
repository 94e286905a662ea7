"""What every contract client shares: ``ContractClient`` (calls, sends and events of one deployed contract),
structs encoded and decoded by the ABI's component names, and the 32-byte hash helpers.

A Solidity struct's field order is written once, in the contract's interface (``contracts/interfaces``): the
clients read it from the ABI in the artifact. Dataclass fields are the components' names in snake_case (their
order in the dataclass does not matter) and the ABI type decides the Python form: ``bytes32`` ↔ 0x-hex text,
arrays ↔ tuples, nested structs ↔ nested dataclasses (``field(metadata={"struct": Cls})``); a field's
``metadata={"conv": f}`` converts anything else (an enum code, a peer id).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from node.chain.artifacts import load_abi
from node.chain.errors import ChainError, translate

ZERO32 = "0x" + "00" * 32


def snake(name: str) -> str:
    """The Python name of a Solidity name: ``shardMemoryMB`` → ``shard_memory_mb``, ``MAX_RULE`` → ``max_rule``."""
    name = name.rstrip("_")
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def hex32(value: Any) -> str:
    """A ``bytes32`` as 0x-hex text."""
    return "0x" + bytes(value).hex()


def b32(value: str | bytes) -> bytes:
    """A 32-byte hash given as 0x-hex text or bytes, as the 32 bytes the ABI takes."""
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 32:
            raise ChainError(f"expected 32 bytes, got {len(value)}")
        return bytes(value)
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise ChainError(f"not a hex hash: {value!r}") from None
    if len(raw) != 32:
        raise ChainError(f"expected a 32-byte hash, got {len(raw)} bytes: {value!r}")
    return raw


def hash_or_none(value: Any) -> str | None:
    """A ``bytes32`` read from chain as 0x-hex, or None for the zero hash (the contracts' "none")."""
    h = hex32(value)
    return None if h == ZERO32 else h


# -- the ABI's structs --------------------------------------------------------------------------------

def abi_function(abi: list[dict], name: str) -> dict:
    """The ABI entry of function ``name`` (the contracts overload nothing)."""
    for entry in abi:
        if entry.get("type") == "function" and entry.get("name") == name:
            return entry
    raise ChainError(f"the ABI has no function {name}")


def returned_components(abi: list[dict], name: str) -> list[dict]:
    """What function ``name`` returns, as struct components: the struct's own when it returns one struct,
    else its (named) outputs."""
    outs = abi_function(abi, name)["outputs"]
    return outs[0]["components"] if len(outs) == 1 and outs[0]["type"] == "tuple" else outs


def argument_components(abi: list[dict], name: str, index: int = 0) -> list[dict]:
    """The components of the struct that function ``name`` takes as argument ``index``."""
    arg = abi_function(abi, name)["inputs"][index]
    if arg["type"] != "tuple":
        raise ChainError(f"argument {index} of {name} is a {arg['type']}, not a struct")
    return arg["components"]


def contract_components(contract: str, function: str, *, argument: int | None = None) -> list[dict]:
    """``returned_components`` (or, with ``argument``, ``argument_components``) from a contract's artifact."""
    abi = load_abi(contract)
    return returned_components(abi, function) if argument is None else argument_components(abi, function, argument)


def check_fields(cls, comps: list[dict]) -> None:
    """ChainError unless dataclass ``cls`` has exactly one field per component (by snake_case name)."""
    want = [snake(c["name"]) for c in comps]
    have = [f.name for f in fields(cls)]
    missing, extra = [n for n in want if n not in have], [n for n in have if n not in want]
    if missing or extra:
        raise ChainError(f"{cls.__name__} does not match the ABI struct: missing {missing}, not in the ABI {extra}")


def _from_chain(comp: dict, value: Any, f) -> Any:
    meta = f.metadata or {}
    if "conv" in meta:
        return meta["conv"](value)
    kind = comp["type"]
    if kind == "tuple":
        return from_abi(meta["struct"], comp["components"], value)
    if kind == "bytes32":
        return hex32(value)
    if kind == "bytes32[]":
        return tuple(hex32(v) for v in value)
    if kind.endswith("]"):
        return tuple(value)
    return bytes(value) if isinstance(value, (bytes, bytearray)) else value


def from_abi(cls, comps: list[dict], values) -> Any:
    """Dataclass ``cls`` from an ABI-decoded struct (a tuple in ``comps`` order), matched by component name."""
    if len(values) != len(comps):
        raise ChainError(f"{cls.__name__}: the ABI returned {len(values)} fields, the struct has {len(comps)}")
    check_fields(cls, comps)
    by_name = {f.name: f for f in fields(cls)}
    out = {}
    for comp, value in zip(comps, values):
        name = snake(comp["name"])
        out[name] = _from_chain(comp, value, by_name[name])
    return cls(**out)


def _to_chain(comp: dict, value: Any) -> Any:
    kind = comp["type"]
    if kind == "tuple":
        return to_abi(comp["components"], value)
    if kind == "bytes32":
        return b32(value)
    if kind == "bytes32[]":
        return [b32(v) for v in value]
    if kind.endswith("]"):
        return list(value)
    return value


def to_abi(comps: list[dict], params: Mapping[str, Any]) -> tuple:
    """A struct argument as the tuple the ABI encodes, in ``comps`` order, from a mapping keyed by the
    struct's Solidity names (``JobSpec.to_chain_params()``); a missing or unknown key is a ChainError."""
    names = [c["name"] for c in comps]
    missing, extra = [n for n in names if n not in params], [k for k in params if k not in names]
    if missing or extra:
        raise ChainError(f"struct fields do not match the ABI: missing {missing}, unknown {extra}")
    return tuple(_to_chain(c, params[c["name"]]) for c in comps)


def chain_dict(obj, comps: list[dict]) -> dict[str, Any]:
    """Dataclass ``obj`` keyed by the struct's Solidity names, in the form the ABI takes (hashes as bytes,
    arrays as lists): the inverse of ``from_abi``."""
    out = {}
    for c in comps:
        value = getattr(obj, snake(c["name"]))
        out[c["name"]] = chain_dict(value, c["components"]) if c["type"] == "tuple" else _to_chain(c, value)
    return out


# -- the client ---------------------------------------------------------------------------------------

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

    def _translated(self, exc: Exception) -> BaseException:
        return translate(exc, self.NAME, getattr(self.w3.provider, "endpoint_uri", None))

    def _call(self, name: str, *args, block: int | str = "latest"):
        try:
            return self._fn(name, *args).call(block_identifier=block)
        except Exception as exc:
            err = self._translated(exc)
            if err is exc:
                raise
            raise err from None

    def _read(self, cls, name: str, *args, block: int | str = "latest"):
        """Call view ``name`` and decode what it returns into dataclass ``cls`` by the ABI's names."""
        return from_abi(cls, returned_components(self.abi, name), self._call(name, *args, block=block))

    def _struct_arg(self, name: str, params: Mapping[str, Any], index: int = 0) -> tuple:
        """Argument ``index`` of ``name`` (a struct) encoded from a mapping keyed by its Solidity names."""
        return to_abi(argument_components(self.abi, name, index), params)

    def _send(self, name: str, *args, value: int = 0, purpose: str | None = None, wait: bool = True):
        if self.sender is None:
            raise ChainError(f"{self.NAME}.{name} needs an account: this client was made without a sender")
        return self.sender.send(self._fn(name, *args), value=value, purpose=purpose or f"{self.NAME}.{name}",
                                contract=self.NAME, wait=wait)

    def events(self, name: str, receipt) -> list[dict]:
        """Decoded ``name`` events of a receipt, as plain dicts."""
        from web3.logs import DISCARD

        return [dict(e["args"]) for e in self.contract.events[name]().process_receipt(receipt, errors=DISCARD)]

    def logs(self, event: str, from_block: int, to_block: int | str = "latest", **filters) -> list:
        """``event``'s logs in a block range (``filters``: indexed arguments), errors translated."""
        try:
            return self.contract.events[event]().get_logs(from_block=from_block, to_block=to_block,
                                                          argument_filters=filters or None)
        except Exception as exc:
            err = self._translated(exc)
            if err is exc:
                raise
            raise err from None

    def has_event(self, name: str) -> bool:
        return any(e.get("type") == "event" and e["name"] == name for e in self.abi)
