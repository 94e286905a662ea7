"""The daemon's configuration file ``node.toml``: validated with pydantic, errors name the field.

Example::

    [chain]
    rpc = "http://127.0.0.1:8545"
    deployment = "deployments/31337.json"

    [identity]
    keystore = "keys/node0.json"      # password from BSNS_KEYSTORE_PASSWORD
    # dev_account = 1                 # or one of anvil's public dev keys (local chain id 31337 only)

    [p2p]
    listen = "/ip4/127.0.0.1/tcp/0"
    bootstrap = []                    # multiaddrs with /p2p/<peer id>

    [resources]
    device = "auto"                   # auto | cpu | cuda
    memory_mb = 4096
    throughput = 100

    [storage]
    data_dir = ".bsns/node0"

    [policy]
    vote = "auto"                     # auto: vote by the rules below; manual: leave it to `bsns vote`
    methods = ["houlsby", "pfeiffer", "lora", "ia3", "prefix", "prompt"]
    tasks = ["sequence-classification", "causal-lm"]
    max_rounds = 1000
    join = true

    [register]                        # optional: register on start if not registered yet
    stake_eth = 1.0

    [fedpeat]
    fetch_emulators = false           # true: never build emulators from local weights, fetch them by hash
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from node.errors import BsnsError, validation_message
from node.vocab import Task


class ConfigError(BsnsError):
    """node.toml is missing or malformed; the message names the field."""


class _S(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ChainCfg(_S):
    rpc: str = "http://127.0.0.1:8545"
    deployment: str = Field(min_length=1)
    confirmations: int = Field(default=0, ge=0)
    poll_interval_s: float = Field(default=0.5, gt=0)


class IdentityCfg(_S):
    keystore: str | None = None
    dev_account: int | None = Field(default=None, ge=0, le=9)

    @model_validator(mode="after")
    def _one(self) -> "IdentityCfg":
        if (self.keystore is None) == (self.dev_account is None):
            raise ValueError("give exactly one of keystore or dev_account")
        return self


class P2PCfg(_S):
    listen: str = "/ip4/127.0.0.1/tcp/0"
    announce: str | None = None
    bootstrap: list[str] = Field(default_factory=list)


class ResourcesCfg(_S):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    memory_mb: int = Field(default=4096, ge=1)
    throughput: int = Field(default=100, ge=0)
    threads: int = Field(default=1, ge=1, le=256)


class StorageCfg(_S):
    data_dir: str = ".bsns/node"


def _default_methods() -> list[str]:
    """The adapter methods that run on any machine (full fine-tuning and CUDA-only methods are opt-in)."""
    from node.tuners import get_method, method_names

    return [m for m in method_names(trains_base=False) if get_method(m).requires is None]


class PolicyCfg(_S):
    vote: Literal["auto", "manual"] = "auto"
    methods: list[str] = Field(default_factory=lambda: _default_methods())
    tasks: list[str] = Field(default_factory=lambda: list(Task.names()))
    models: list[str] = Field(default_factory=list, description="allowed base models; empty = any")
    max_rounds: int = Field(default=10_000, ge=1)
    join: bool = True


class RegisterCfg(_S):
    stake_eth: float = Field(default=1.0, ge=0)


class TimingCfg(_S):
    pipeline_timeout_s: float = Field(default=60.0, gt=0)
    sync_timeout_s: float = Field(default=45.0, gt=0)
    final_timeout_s: float = Field(default=300.0, gt=0)


class FedPeatCfg(_S):
    fetch_emulators: bool = Field(default=False, description="FedPEAT sessions: fetch each emulator by its on-chain "
                                                             "hash from session peers instead of building it")


class NodeConfig(_S):
    name: str = "node"
    chain: ChainCfg
    identity: IdentityCfg
    p2p: P2PCfg = Field(default_factory=P2PCfg)
    resources: ResourcesCfg = Field(default_factory=ResourcesCfg)
    storage: StorageCfg = Field(default_factory=StorageCfg)
    policy: PolicyCfg = Field(default_factory=PolicyCfg)
    register_: RegisterCfg | None = Field(default=None, alias="register")
    timing: TimingCfg = Field(default_factory=TimingCfg)
    fedpeat: FedPeatCfg = Field(default_factory=FedPeatCfg)

    _base: Path = Path(".")

    @classmethod
    def from_toml(cls, path: str | Path) -> "NodeConfig":
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read node config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        try:
            cfg = cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {validation_message(exc)}") from None
        cfg._base = path.resolve().parent
        return cfg

    def resolve(self, p: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        q = Path(p)
        return q if q.is_absolute() else (self._base / q)

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.storage.data_dir)

    def device(self) -> str:
        if self.resources.device != "auto":
            return self.resources.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
