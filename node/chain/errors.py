"""Chain failures as one-line ``BsnsError``s, and decoding of Solidity custom errors.

web3.py decodes nothing for custom errors: on anvil it raises ``ContractCustomError`` carrying the
raw revert data (hex); eth-tester raises ``TransactionFailed`` whose text holds the data as a Python
``bytes`` literal. Both are turned into ``ContractRevert`` with the error's name and decoded
arguments, using the ``error`` entries of the committed ABIs (selector = first 4 bytes of
keccak(signature)) and eth-abi for the arguments. This matching is hand-written because web3.py
offers no reverse lookup from selector to error.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from typing import Any, Iterable

from node.errors import BsnsError

_ERROR_STRING = bytes.fromhex("08c379a0")  # Error(string), emitted by require(cond, "msg")
_PANIC = bytes.fromhex("4e487b71")  # Panic(uint256), emitted on assert / overflow / bad index


class ChainError(BsnsError):
    """A chain operation failed for a reason the user can act on."""


class RpcUnavailable(ChainError):
    """The JSON-RPC endpoint cannot be reached."""

    def __init__(self, url: str, cause: object = None):
        self.url = url
        reason = _connection_reason(cause) if cause is not None else "no answer"
        super().__init__(f"cannot reach the chain at {url}: {reason}")


class ContractRevert(ChainError):
    """A contract refused a call; ``name`` is the custom error's name, ``args`` its decoded arguments."""

    def __init__(self, contract: str | None, name: str, args: tuple = (), data: bytes = b""):
        self.contract = contract or "contract"
        self.name = name
        self.args_ = tuple(args)
        self.data = data
        super().__init__(f"{self.contract} reverted: {name}({', '.join(_fmt(a) for a in self.args_)})")

    @property
    def args(self):  # type: ignore[override]
        # Exception.args would be the message; callers want the error's arguments.
        return self.args_

    @args.setter
    def args(self, value):  # BaseException.__init__ assigns args; keep ours
        pass

    def __reduce__(self):
        return (ContractRevert, (self.contract, self.name, self.args_, self.data))


def _connection_reason(cause: object) -> str:
    text = str(cause)
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if m:
        return m.group(1).strip().lower()
    if "timed out" in text.lower() or isinstance(cause, TimeoutError):
        return "timed out"
    return _first_line(cause)


def _first_line(obj: object) -> str:
    text = str(obj).strip().splitlines()
    line = text[0] if text else type(obj).__name__
    return line[:300]


def _fmt(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, str):
        return value if value.startswith("0x") else repr(value)
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    return str(value)


def _abi_type(inp: dict) -> str:
    t = inp["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in inp["components"]) + ")" + t[len("tuple"):]
    return t


def _normalise(value: Any, typ: str) -> Any:
    from eth_utils import to_checksum_address

    if typ == "address" and isinstance(value, str):
        return to_checksum_address(value)
    return value


class ErrorDecoder:
    """Maps 4-byte selectors to (contract, error ABI) for a set of contract ABIs."""

    def __init__(self, abis: dict[str, list[dict]]):
        from eth_utils import keccak

        self._by_selector: dict[bytes, list[tuple[str, dict]]] = {}
        for contract, abi in abis.items():
            for entry in abi:
                if entry.get("type") != "error":
                    continue
                types = [_abi_type(i) for i in entry.get("inputs", [])]
                sig = f"{entry['name']}({','.join(types)})"
                self._by_selector.setdefault(keccak(text=sig)[:4], []).append((contract, entry))

    def decode(self, data: bytes, contract: str | None = None) -> ContractRevert:
        """Decode revert ``data``; ``contract`` is the callee, preferred when a selector is shared."""
        from eth_abi import decode as abi_decode

        if not data:
            return ContractRevert(contract, "reverted without reason", (), data)
        sel, body = data[:4], data[4:]
        if sel == _ERROR_STRING:
            try:
                return ContractRevert(contract, "Error", tuple(abi_decode(["string"], body)), data)
            except Exception:  # malformed payload: fall through to the raw form
                pass
        if sel == _PANIC:
            try:
                return ContractRevert(contract, "Panic", (hex(abi_decode(["uint256"], body)[0]),), data)
            except Exception:
                pass
        candidates = self._by_selector.get(sel, [])
        candidates = sorted(candidates, key=lambda c: c[0] != contract)
        for owner, entry in candidates:
            types = [_abi_type(i) for i in entry.get("inputs", [])]
            try:
                values = abi_decode(types, body)
            except Exception:
                continue
            values = tuple(_normalise(v, t) for v, t in zip(values, types))
            return ContractRevert(contract or owner, entry["name"], values, data)
        return ContractRevert(contract, f"UnknownError(0x{sel.hex()})", (), data)


@lru_cache(maxsize=1)
def project_decoder() -> ErrorDecoder:
    """A decoder for every committed artifact of the project."""
    from node.chain.artifacts import available_artifacts, load_abi

    return ErrorDecoder({name: load_abi(name) for name in available_artifacts()})


_BYTES_LITERAL = re.compile(r"""(b'(?:[^'\\]|\\.)*'|b"(?:[^"\\]|\\.)*")""")
_HEX_DATA = re.compile(r"0x[0-9a-fA-F]{8,}")


def revert_data(exc: BaseException) -> bytes | str | None:
    """The raw revert data carried by a web3 / eth-tester exception, or the reason string.

    Returns bytes (ABI-encoded error) when found, a str when only a plain reason is known, or None
    when ``exc`` is not a revert at all.
    """
    from web3.exceptions import ContractLogicError

    if isinstance(exc, ContractLogicError):
        data = exc.data
        if isinstance(data, dict):  # some nodes nest it: {"data": "0x..."}
            data = data.get("data")
        if isinstance(data, str) and data.startswith("0x"):
            return bytes.fromhex(data[2:])
        msg = str(exc.message if hasattr(exc, "message") else exc)
        return msg.removeprefix("execution reverted: ").removeprefix("execution reverted")
    cls = type(exc)
    if cls.__name__ == "TransactionFailed" and cls.__module__.startswith("eth_tester"):
        # web3's EthereumTesterProvider re-raises after decoding data[4:] as a string whatever the
        # selector, so a custom error with one string argument reads like a reason string; the raw
        # bytes survive on the chained original (py-evm's Revert(b"...")).
        ctx = exc.__context__
        while ctx is not None:
            raw = ctx.args[0] if ctx.args else None
            if isinstance(raw, Exception) and raw.args:
                raw = raw.args[0]
            if isinstance(raw, (bytes, bytearray)):
                return bytes(raw)
            ctx = ctx.__context__
        text = str(exc.args[0]) if exc.args else ""
        m = _BYTES_LITERAL.search(text)
        if m:
            return ast.literal_eval(m.group(1))  # a literal only: never evaluates code
        m = _HEX_DATA.search(text)
        if m:
            return bytes.fromhex(m.group(0)[2:])
        return text.removeprefix("execution reverted: ").removeprefix("execution reverted")
    from web3.exceptions import Web3RPCError

    if isinstance(exc, Web3RPCError):
        text = str(exc)
        if "revert" in text.lower():
            m = _HEX_DATA.search(text)
            return bytes.fromhex(m.group(0)[2:]) if m else _first_line(text)
    return None


def as_revert(exc: BaseException, contract: str | None = None,
              decoder: ErrorDecoder | None = None) -> ContractRevert | None:
    """``exc`` as a ``ContractRevert`` when it is one, else None."""
    if isinstance(exc, ContractRevert):
        return exc
    data = revert_data(exc)
    if data is None:
        return None
    if isinstance(data, str):
        return ContractRevert(contract, "Error", (data,) if data else (), b"")
    return (decoder or project_decoder()).decode(data, contract)


def is_connection_error(exc: BaseException) -> bool:
    import requests

    from web3.exceptions import ProviderConnectionError

    if isinstance(exc, (ConnectionError, ProviderConnectionError, requests.exceptions.ConnectionError,
                        requests.exceptions.Timeout, TimeoutError)):
        return True
    return isinstance(exc, OSError) and exc.errno is not None


def translate(exc: BaseException, contract: str | None = None, url: str | None = None,
              decoder: ErrorDecoder | None = None) -> BaseException:
    """The ``BsnsError`` that ``exc`` stands for (a revert or a dead RPC), or ``exc`` itself."""
    rev = as_revert(exc, contract, decoder)
    if rev is not None:
        return rev
    if is_connection_error(exc):
        return RpcUnavailable(url or "the RPC endpoint", exc)
    from web3.exceptions import Web3RPCError

    if isinstance(exc, Web3RPCError):  # e.g. insufficient funds, nonce too low: the node's own refusal
        resp = getattr(exc, "rpc_response", None) or {}
        msg = (resp.get("error") or {}).get("message") if isinstance(resp, dict) else None
        return ChainError(f"the chain node refused the request: {_first_line(msg or exc)}")
    return exc


def collect_selectors(abis: Iterable[list[dict]]) -> set[str]:
    """Names of all custom errors in ``abis`` (used by tests to check coverage)."""
    return {e["name"] for abi in abis for e in abi if e.get("type") == "error"}
