"""Connecting to a JSON-RPC endpoint: a web3 instance that answered, or one ``RpcUnavailable`` line.

Which endpoint (the one place this is decided): ``--rpc`` / a node config's ``[chain] rpc``, else ``$BSNS_RPC``,
else the chain ``bsns chain up`` recorded in the home (``<home>/chain.json``), else ``http://127.0.0.1:8545``.
"""

from __future__ import annotations

import json
import os

from node.chain.errors import RpcUnavailable

DEFAULT_RPC = "http://127.0.0.1:8545"
RPC_ENV = "BSNS_RPC"


def recorded_chain() -> dict | None:
    """What ``bsns chain up`` recorded in the home: ``{"rpc": url, "block_time": seconds or None}``, or None."""
    from node.paths import chain_record

    try:
        data = json.loads(chain_record().read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("rpc"), str) else None


def record_chain(url: str, block_time: float | None) -> None:
    """Remember the local chain's URL and block time in the home (atomically: a reader sees old or new)."""
    from node.paths import chain_record

    path = chain_record()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"rpc": url, "block_time": block_time}) + "\n")
    os.replace(tmp, path)


def rpc_url(url: str | None = None) -> str:
    if url:
        return url
    if os.environ.get(RPC_ENV):
        return os.environ[RPC_ENV]
    rec = recorded_chain()
    return rec["rpc"] if rec else DEFAULT_RPC


def connect(url: str | None = None, timeout: float = 10.0):
    """``Web3`` over HTTP at ``rpc_url(url)``, checked with eth_chainId."""
    from web3 import Web3

    url = rpc_url(url)
    if not url.startswith(("http://", "https://")):
        raise RpcUnavailable(url, "only http(s) RPC URLs are supported here (ws is used by the watcher)")
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout}))
    try:
        w3.eth.chain_id
    except Exception as exc:  # connection refused, DNS, timeout, or not a JSON-RPC server
        raise RpcUnavailable(url, exc) from None
    return w3


def ws_url_for(http_url: str) -> str:
    """anvil (and Hardhat) serve WebSocket JSON-RPC on the HTTP port."""
    return "ws" + http_url[len("http"):] if http_url.startswith("http") else http_url
