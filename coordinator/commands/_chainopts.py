"""Options and set-up shared by the chain-facing commands: RPC URL, account, deployment file.

Each option also reads an environment variable (``BSNS_RPC``, ``BSNS_KEYSTORE``, ``BSNS_DEV_ACCOUNT``,
``BSNS_DEPLOYMENT``), so a shell can set them once. Without them, commands use what the home recorded
(``node.paths``: ``$BSNS_HOME``, default ``./.bsns``): the chain ``bsns chain up`` started and the deployment
``bsns deploy`` wrote for its chain id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from node.errors import BsnsError

RpcOpt = Annotated[Optional[str], typer.Option(
    "--rpc", envvar="BSNS_RPC",
    help="JSON-RPC URL [default: the chain `bsns chain up` recorded in $BSNS_HOME, else http://127.0.0.1:8545]")]
KeystoreOpt = Annotated[Optional[Path], typer.Option(
    "--keystore", envvar="BSNS_KEYSTORE",
    help="encrypted key file (password from BSNS_KEYSTORE_PASSWORD or a prompt) [default: $BSNS_HOME/keystore.json]")]
DevAccountOpt = Annotated[Optional[int], typer.Option(
    "--dev-account", envvar="BSNS_DEV_ACCOUNT",
    help="use anvil's published development account N (local chain 31337 only)")]
DeploymentOpt = Annotated[Optional[Path], typer.Option(
    "--deployment", envvar="BSNS_DEPLOYMENT",
    help="deployment file [default: $BSNS_HOME/deployments/<chain id>.json]")]



def _uint256(value: str) -> int:
    """An on-chain id (uint256), refused in one line before anything connects or is sent."""
    try:
        n = int(value, 0)
    except ValueError:
        raise BsnsError(f"ID: {value!r} is not a whole number") from None
    if not 0 <= n < 2**256:
        raise BsnsError(f"ID: {value} is outside 0..2^256-1, the ids the chain holds")
    return n


ProposalIdArg = Annotated[int, typer.Argument(metavar="ID", parser=_uint256, help="the proposal id")]


class NoAccount(BsnsError):
    pass


def connect(rpc: str | None):
    from node.chain.rpc import connect as _connect

    return _connect(rpc)


def load_key(w3, keystore: Path | None, dev_account: int | None):
    from node.chain.keys import dev_key, load_keystore
    from node.paths import default_keystore

    if dev_account is not None:
        return dev_key(dev_account, w3.eth.chain_id, rpc_url=str(getattr(w3.provider, "endpoint_uri", "") or ""))
    path = keystore or default_keystore()
    if keystore is None and not path.exists():
        raise NoAccount("no account: pass --keystore FILE (see `bsns node keygen`) or, on the local chain, "
                        "--dev-account N")
    return load_keystore(path)


def make_sender(w3, key):
    """The account's sender with its journal in the home; a journal of an earlier chain with the same id is set
    aside with a warning line (the deployment was checked first, so this chain is a new one)."""
    from node.chain.sender import TxSender
    from node.paths import journals_dir

    chain_id = w3.eth.chain_id
    db = journals_dir() / f"{chain_id}-{key.address}.sqlite"
    return TxSender(w3, key.private_key, db_path=db)


def load_deployment(w3, path: Path | None):
    from node.chain.deployment import Deployment

    dep = Deployment.load(path, chain_id=w3.eth.chain_id)
    dep.check_code(w3)
    return dep


@dataclass
class ChainCtx:
    w3: object
    deployment: object
    rpc: str
    key: object | None = None
    sender: object | None = None

    def clients(self):
        from node.chain.clients import Clients

        return Clients(self.w3, self.deployment, self.sender)

    def clock(self):
        from coordinator.chainclock import ChainClock

        return ChainClock.of(self.w3, self.rpc)


def chain_ctx(rpc: str | None, deployment: Path | None, keystore: Path | None = None,
              dev_account: int | None = None, signer: bool = True) -> ChainCtx:
    """Connect, load the deployment (checked against the chain), and (when ``signer``) unlock the account and
    its sender."""
    from node.chain.rpc import rpc_url

    w3 = connect(rpc)
    # a dev key on a chain that only claims to be the local one is refused before anything is read from it
    key = load_key(w3, keystore, dev_account) if signer and dev_account is not None else None
    dep = load_deployment(w3, deployment)
    if not signer:
        return ChainCtx(w3, dep, rpc_url(rpc))
    key = key or load_key(w3, keystore, dev_account)
    return ChainCtx(w3, dep, rpc_url(rpc), key, make_sender(w3, key))
