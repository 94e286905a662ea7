"""A node's Ethereum key: an encrypted keystore file (eth-account), or anvil's dev keys on a local chain.

The password comes from ``BSNS_KEYSTORE_PASSWORD`` or an interactive prompt; neither the password
nor the key is ever printed or logged. In-process callers (the p2p layer derives the node's libp2p
identity from the same secp256k1 key) get the raw private key bytes from ``NodeKey.private_key``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from node.errors import BsnsError

PASSWORD_ENV = "BSNS_KEYSTORE_PASSWORD"
LOCAL_CHAIN_ID = 31337

# anvil's (and Hardhat's) published development mnemonic. These keys are public knowledge and hold
# value only on a local development chain, so they are accepted only when the chain id is 31337.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_ACCOUNT_COUNT = 10


class KeystoreError(BsnsError):
    """A key could not be created, unlocked or used."""


@dataclass(frozen=True)
class NodeKey:
    """An unlocked key; ``repr`` never shows the secret."""

    address: str
    private_key: bytes = field(repr=False)

    @property
    def account(self):
        from eth_account import Account

        return Account.from_key(self.private_key)


def _password(password: str | None, confirm: bool = False) -> str:
    if password is not None:
        return password
    env = os.environ.get(PASSWORD_ENV)
    if env is not None:
        return env
    import getpass

    try:
        pw = getpass.getpass("keystore password: ")
        if confirm and getpass.getpass("repeat password: ") != pw:
            raise KeystoreError("passwords do not match")
    except (EOFError, OSError):
        raise KeystoreError(f"no keystore password: set {PASSWORD_ENV} or run in a terminal") from None
    return pw


def create_keystore(path: str | Path, password: str | None = None, private_key: bytes | str | None = None,
                    overwrite: bool = False) -> NodeKey:
    """Write a new (or the given) key encrypted to ``path`` (mode 0600) and return it."""
    from eth_account import Account

    path = Path(path)
    if path.exists() and not overwrite:
        raise KeystoreError(f"keystore {path} already exists; refusing to overwrite it")
    pw = _password(password, confirm=True)
    if not pw:
        raise KeystoreError("the keystore password must not be empty")
    acct = Account.from_key(private_key) if private_key is not None else Account.create()
    blob = Account.encrypt(acct.key, pw)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(blob, fh)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written keystore
    return NodeKey(acct.address, bytes(acct.key))


def load_keystore(path: str | Path, password: str | None = None) -> NodeKey:
    """Decrypt the keystore at ``path``; a wrong password or bad file is a one-line ``BsnsError``."""
    from eth_account import Account

    path = Path(path)
    try:
        blob = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeystoreError(f"keystore {path} not found (create one with `bsns node keygen`)") from None
    except (OSError, ValueError) as exc:
        raise KeystoreError(f"keystore {path} is not a readable keystore: {exc}") from None
    pw = _password(password)
    try:
        key = Account.decrypt(blob, pw)
    except ValueError:
        raise KeystoreError(f"cannot unlock keystore {path}: wrong password or corrupt file") from None
    except Exception as exc:  # malformed JSON structure
        raise KeystoreError(f"keystore {path} is malformed: {type(exc).__name__}") from None
    acct = Account.from_key(key)
    return NodeKey(acct.address, bytes(acct.key))


def is_loopback_url(url: str) -> bool:
    """Whether an RPC URL reaches this machine only (localhost, 127.0.0.0/8, ::1, or an IPC socket path)."""
    import ipaddress
    from urllib.parse import urlparse

    if "://" not in url:
        return True  # an IPC socket path: a file on this machine
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dev_key(index: int, chain_id: int, rpc_url: str | None = None) -> NodeKey:
    """anvil's dev account ``index``; refused on any chain but the local one (id 31337) and, when the caller
    says which RPC it uses, on any RPC that is not on this machine (anyone can claim chain id 31337)."""
    if chain_id != LOCAL_CHAIN_ID:
        raise KeystoreError(f"development keys are only allowed on the local chain (id {LOCAL_CHAIN_ID}), "
                        f"this chain has id {chain_id}")
    if rpc_url is not None and not is_loopback_url(rpc_url):
        raise KeystoreError(f"development keys are only allowed with a local RPC (localhost, 127.0.0.1, ::1), "
                            f"not {rpc_url}: their private keys are public")
    if not 0 <= index < DEV_ACCOUNT_COUNT:
        raise KeystoreError(f"development account index must be 0..{DEV_ACCOUNT_COUNT - 1}, got {index}")
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    acct = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return NodeKey(acct.address, bytes(acct.key))
