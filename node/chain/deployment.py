"""A deployment record: ``<home>/deployments/<chainId>.json`` (contract addresses, deploy block and its hash,
parameters).

``coordinator.deploy`` writes it; every node and CLI command reads it to find the contracts, and checks that
the chain still holds it (``check_code``): a chain restarted without its state has neither the code nor the
deploy block, and must be told apart from the one the record was written on.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from node.errors import BsnsError

DEPLOYMENT_ENV = "BSNS_DEPLOYMENT"


class DeploymentError(BsnsError):
    """The deployment file is missing, unreadable or does not match the chain."""


def deployments_dir() -> Path:
    from node.paths import deployments_dir as in_home

    return Path(os.environ["BSNS_DEPLOYMENTS_DIR"]) if os.environ.get("BSNS_DEPLOYMENTS_DIR") else in_home()


def default_path(chain_id: int) -> Path:
    env = os.environ.get(DEPLOYMENT_ENV)
    return Path(env) if env else deployments_dir() / f"{chain_id}.json"


@dataclass
class Deployment:
    chain_id: int
    addresses: dict[str, str]  # contract name -> checksummed address
    deploy_block: int
    deployer: str
    parameters: dict[str, Any] = field(default_factory=dict)
    tx_hashes: dict[str, str] = field(default_factory=dict)
    block_hash: str | None = None  # the deploy block's hash (None in records written before it was kept)

    def address(self, name: str) -> str:
        try:
            return self.addresses[name]
        except KeyError:
            raise DeploymentError(f"deployment on chain {self.chain_id} has no {name}") from None

    @property
    def path(self) -> Path | None:
        """The file this record was loaded from or saved to."""
        return getattr(self, "_path", None)

    def save(self, path: str | Path | None = None) -> Path:
        path = Path(path) if path else default_path(self.chain_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        self._path = path
        return path

    @classmethod
    def load(cls, path: str | Path | None = None, chain_id: int | None = None) -> "Deployment":
        if path is None:
            if chain_id is None:
                raise DeploymentError("no deployment file given and no chain id to find one")
            path = default_path(chain_id)
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            dep = cls(**data)
        except FileNotFoundError:
            raise DeploymentError(f"no deployment at {path}: run `bsns deploy` first") from None
        except (OSError, ValueError, TypeError) as exc:
            raise DeploymentError(f"deployment file {path} is malformed: {exc}") from None
        if chain_id is not None and dep.chain_id != chain_id:
            raise DeploymentError(f"deployment {path} is for chain {dep.chain_id}, the RPC serves chain {chain_id}")
        dep._path = path
        return dep

    def check_code(self, w3) -> None:
        """Raise unless the chain still holds this deployment: its deploy block (same hash) and code at every
        recorded address. A chain restarted from its state file passes; a fresh one with the same chain id does
        not, even where a new deployment happens to reuse the addresses."""
        from node.paths import shown

        where = f" in {shown(self.path)}" if self.path else ""
        gone = "the chain was reset; run `bsns deploy` again"
        if self.block_hash:
            from web3.exceptions import BlockNotFound

            try:
                got = w3.eth.get_block(self.deploy_block)["hash"]
            except BlockNotFound:
                raise DeploymentError(f"chain {self.chain_id} is at block {w3.eth.block_number}, before the deploy "
                                      f"block {self.deploy_block} of the deployment{where}: {gone}") from None
            got = "0x" + bytes(got).hex()
            if got.lower() != self.block_hash.lower():
                raise DeploymentError(f"chain {self.chain_id} no longer holds the deployment{where} (its block "
                                      f"{self.deploy_block} is {got[:12]}…, the deployment's was "
                                      f"{self.block_hash[:12]}…): {gone}")
        for name, addr in self.addresses.items():
            if not w3.eth.get_code(addr):
                raise DeploymentError(f"no contract code at {name} {addr} on chain {self.chain_id}: {gone}")
