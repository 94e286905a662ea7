"""Options and set-up shared by the chain-facing commands: RPC URL, account, deployment file.

Each option also reads an environment variable (``BSNS_RPC``, ``BSNS_KEYSTORE``, ``BSNS_DEV_ACCOUNT``,
``BSNS_DEPLOYMENT``), so a shell can set them once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from node.errors import BsnsError

RpcOpt = Annotated[Optional[str], typer.Option("--rpc", envvar="BSNS_RPC",
                                               help="JSON-RPC URL [default: http://127.0.0.1:8545]")]
KeystoreOpt = Annotated[Optional[Path], typer.Option(
    "--keystore", envvar="BSNS_KEYSTORE",
    help="encrypted key file (password from BSNS_KEYSTORE_PASSWORD or a prompt) [default: .bsns/keystore.json]")]
DevAccountOpt = Annotated[Optional[int], typer.Option(
    "--dev-account", envvar="BSNS_DEV_ACCOUNT",
    help="use anvil's published development account N (local chain 31337 only)")]
DeploymentOpt = Annotated[Optional[Path], typer.Option(
    "--deployment", envvar="BSNS_DEPLOYMENT", help="deployment file [default: deployments/<chain id>.json]")]


class NoAccount(BsnsError):
    pass


def home() -> Path:
    from coordinator.localchain import state_dir

    return state_dir()


def connect(rpc: str | None):
    from node.chain.rpc import connect as _connect

    return _connect(rpc)


def load_key(w3, keystore: Path | None, dev_account: int | None):
    from node.chain.keys import dev_key, load_keystore

    if dev_account is not None:
        return dev_key(dev_account, w3.eth.chain_id)
    path = keystore or home() / "keystore.json"
    if keystore is None and not path.exists():
        raise NoAccount("no account: pass --keystore FILE (see `bsns node keygen`) or, on the local chain, "
                        "--dev-account N")
    return load_keystore(path)


def make_sender(w3, key):
    from node.chain.sender import TxSender

    chain_id = w3.eth.chain_id
    db = home() / "txs" / f"{chain_id}-{key.address}.sqlite"
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
    key: object | None = None
    sender: object | None = None

    def clients(self):
        from node.chain.clients import Clients

        return Clients(self.w3, self.deployment, self.sender)


def chain_ctx(rpc: str | None, deployment: Path | None, keystore: Path | None = None,
              dev_account: int | None = None, signer: bool = True) -> ChainCtx:
    """Connect, load the deployment, and (when ``signer``) unlock the account and its sender."""
    w3 = connect(rpc)
    dep = load_deployment(w3, deployment)
    if not signer:
        return ChainCtx(w3, dep)
    key = load_key(w3, keystore, dev_account)
    return ChainCtx(w3, dep, key, make_sender(w3, key))

