"""Connecting to a JSON-RPC endpoint: a web3 instance that answered, or one ``RpcUnavailable`` line."""

from __future__ import annotations

import os

from node.chain.errors import RpcUnavailable

DEFAULT_RPC = "http://127.0.0.1:8545"
RPC_ENV = "BSNS_RPC"


def rpc_url(url: str | None = None) -> str:
    return url or os.environ.get(RPC_ENV) or DEFAULT_RPC


def connect(url: str | None = None, timeout: float = 10.0):
    """``Web3`` over HTTP at ``url`` (default ``$BSNS_RPC`` or localhost:8545), checked with eth_chainId."""
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
