"""A deployment record: ``deployments/<chainId>.json`` (contract addresses, deploy block, parameters).

``coordinator.deploy`` writes it; every node and CLI command reads it to find the contracts.
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
    return Path(os.environ.get("BSNS_DEPLOYMENTS_DIR", Path(__file__).resolve().parents[2] / "deployments"))


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

    def address(self, name: str) -> str:
        try:
            return self.addresses[name]
        except KeyError:
            raise DeploymentError(f"deployment on chain {self.chain_id} has no {name}") from None

    def save(self, path: str | Path | None = None) -> Path:
        path = Path(path) if path else default_path(self.chain_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
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
        return dep

    def check_code(self, w3) -> None:
        """Raise unless every recorded address holds code (a restarted chain without state has none)."""
        for name, addr in self.addresses.items():
            if not w3.eth.get_code(addr):
                raise DeploymentError(f"no contract code at {name} {addr} on chain {self.chain_id}: "
                                      f"the chain was reset; run `bsns deploy` again")
