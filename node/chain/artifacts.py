"""Compiled contract artifacts: loads ``contracts/artifacts/<Name>.json`` (ABI + bytecode).

The artifacts are committed, so a node needs no JavaScript toolchain to talk to the chain.
``BSNS_ARTIFACTS_DIR`` points elsewhere (e.g. a test's freshly compiled set).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from node.errors import BsnsError
from node.paths import PACKAGE_ROOT

#: The contracts the project deploys, in deployment order.
CONTRACT_NAMES = ("NodeRegistry", "TrainingSessions", "FineTuneGovernance", "AdapterRegistry", "FedPeatLedger")


class ArtifactError(BsnsError):
    """A contract artifact is missing or unreadable."""


def artifacts_dir() -> Path:
    env = os.environ.get("BSNS_ARTIFACTS_DIR")
    if env:
        return Path(env)
    return PACKAGE_ROOT / "contracts" / "artifacts"


@lru_cache(maxsize=None)
def _load(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"contract artifact not found: {p} (run `python -m coordinator.compile`)")
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"contract artifact {p} is unreadable: {exc}") from None
    for key in ("abi", "bytecode"):
        if key not in data:
            raise ArtifactError(f"contract artifact {p} has no '{key}'")
    return data


def load_artifact(name: str) -> dict:
    """``{"contractName", "abi", "bytecode", "deployedBytecode"}`` of contract ``name`` (cached)."""
    return _load(str(artifacts_dir() / f"{name}.json"))


def load_abi(name: str) -> list[dict]:
    return load_artifact(name)["abi"]


def available_artifacts() -> list[str]:
    d = artifacts_dir()
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []
