"""The daemon's configuration file ``node.toml``: validated with pydantic, errors name the field.

Example (``bsns node init node0.toml --dev-account 1`` writes one)::

    name = "node0"

    [chain]                           # both optional: the chain `bsns chain up` recorded in the home
    # rpc = "http://127.0.0.1:8545"   # (else $BSNS_RPC, else 127.0.0.1:8545) and its deployment
    # deployment = "deployments/31337.json"    # (<home>/deployments/<chain id>.json)
    # confirmations = 12              # default: 0 on the local chain 31337, 12 elsewhere

    [identity]
    keystore = "keys/node0.json"      # password from BSNS_KEYSTORE_PASSWORD
    # dev_account = 1                 # or one of anvil's public dev keys (local chain id 31337 only)

    [p2p]
    listen = "/ip4/127.0.0.1/tcp/0"   # port 0: any free port; the one bound is registered
    bootstrap = []                    # multiaddrs with /p2p/<peer id>

    [resources]
    device = "auto"                   # auto | cpu | cuda
    memory_mb = 4096
    throughput = 100

    [storage]
    # data_dir = ".bsns/nodes/node0"  # default: <home>/nodes/<name>

    [policy]                          # what it votes for and joins (a proposal is a stranger's input)
    vote = "auto"                     # auto: vote by the rules below; manual: leave it to `bsns vote`
    methods = ["houlsby", "pfeiffer", "lora", "ia3", "prefix", "prompt"]
    tasks = ["sequence-classification", "causal-lm"]
    models = []                       # allowed base models; empty: MiniLM and hub models already cached here
    model_hashes = []                 # allowed weights hashes; empty: any that matches this node's files
    download_models = false           # true: fetch a model listed in `models` that is not here yet
    datasets = []                     # allowed data sets; empty: any whose file is in the data folders
    max_rounds = 1000
    max_sync_interval = 100000
    max_batch_size = 1024
    max_seq_len = 2048
    max_layers = 128
    join = true

    [register]                        # optional: register on start if not registered yet
    stake_eth = 1.0

    [fedpeat]
    fetch_emulators = false           # true: never build emulators from local weights, fetch them by hash

Relative paths are relative to the config file's folder; the home is ``node.paths``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from node.errors import BsnsError, validation_message
from node.vocab import Task


class ConfigError(BsnsError):
    """node.toml is missing or malformed; the message names the field."""


class _S(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


#: confirmation depth off the local chain when node.toml names none (Ethereum mainnet reorgs rarely exceed a few
#: blocks; 12 is the long-standing conservative figure exchanges used before finality)
DEFAULT_CONFIRMATIONS = 12


class ChainCfg(_S):
    rpc: str | None = Field(default=None, min_length=1, description="default: node.chain.rpc.rpc_url()")
    deployment: str | None = Field(default=None, min_length=1, description="default: the chain id's in the home")
    confirmations: int | None = Field(default=None, ge=0, le=10_000, description="blocks an event waits before the "
                                      "daemon acts on it; default: 0 on the local chain (31337), else "
                                      "DEFAULT_CONFIRMATIONS")

    def confirmations_for(self, chain_id: int) -> int:
        """The confirmation depth on ``chain_id``: the configured one, else none on the local dev chain (its blocks
        are final when mined) and ``DEFAULT_CONFIRMATIONS`` anywhere else, where a reorg can undo recent events."""
        from node.chain.keys import LOCAL_CHAIN_ID

        if self.confirmations is not None:
            return self.confirmations
        return 0 if chain_id == LOCAL_CHAIN_ID else DEFAULT_CONFIRMATIONS
    poll_interval_s: float = Field(default=0.5, gt=0)


class IdentityCfg(_S):
    keystore: str | None = None
    dev_account: int | None = Field(default=None, ge=0, le=9)

    @model_validator(mode="after")
    def _one(self) -> "IdentityCfg":
        if (self.keystore is None) == (self.dev_account is None):
            raise ValueError("give exactly one of keystore or dev_account")
        return self


def _hex32(value: str) -> str:
    import re

    if not re.fullmatch(r"0x[0-9a-fA-F]{64}", value):
        raise ValueError(f"{value!r} is not a 0x-prefixed 32-byte hex hash")
    return value.lower()


def _tcp_multiaddr(value: str | None) -> str | None:
    """``/ip4/<address>/tcp/<port>`` (or ip6/dns): checked here so a typo is one line naming the field, not a
    traceback from the p2p host's start."""
    if value is None:
        return value
    import multiaddr

    try:
        names = [p.name for p in multiaddr.Multiaddr(value).protocols()]
    except Exception as exc:  # noqa: BLE001 - multiaddr raises several parse errors; all mean the same here
        raise ValueError(f"not a multiaddr: {str(exc).split(' (string:')[0]}") from None
    if len(names) != 2 or names[0] not in ("ip4", "ip6", "dns", "dns4", "dns6") or names[1] != "tcp":
        raise ValueError(f"{value!r} is not /ip4/<address>/tcp/<port> (or ip6, dns)")
    return value


class P2PCfg(_S):
    listen: str = "/ip4/127.0.0.1/tcp/0"
    announce: str | None = None
    bootstrap: list[str] = Field(default_factory=list)

    _addr = field_validator("listen", "announce")(classmethod(lambda cls, v: _tcp_multiaddr(v)))


class ResourcesCfg(_S):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    memory_mb: int = Field(default=4096, ge=1)
    throughput: int = Field(default=100, ge=0)
    threads: int = Field(default=1, ge=1, le=256)


class StorageCfg(_S):
    data_dir: str | None = Field(default=None, min_length=1, description="default: <home>/nodes/<name>")


def _default_methods() -> list[str]:
    """The adapter methods that run on any machine (full fine-tuning and CUDA-only methods are opt-in)."""
    from node.tuners import get_method, method_names

    return [m for m in method_names(trains_base=False) if get_method(m).requires is None]


class PolicyCfg(_S):
    """What this node votes for and joins (node.daemon.proposals.VotePolicy): a proposal is a stranger's input."""

    vote: Literal["auto", "manual"] = "auto"
    methods: list[str] = Field(default_factory=lambda: _default_methods())
    tasks: list[str] = Field(default_factory=lambda: list(Task.names()))
    models: list[str] = Field(default_factory=list, description="allowed base models (ids or paths); empty = the "
                                                                "MiniLM aliases and hub ids already in the local cache")
    model_hashes: list[str] = Field(default_factory=list, description="allowed weights hashes; empty = any")
    download_models: bool = Field(default=False, description="fetch a model listed in `models` that is not here yet "
                                                             "(never one that is not listed)")
    datasets: list[str] = Field(default_factory=list, description="allowed data sets (data.dataset); empty = any "
                                                                  "whose file is in the data folders")
    max_rounds: int = Field(default=10_000, ge=1)
    max_sync_interval: int = Field(default=100_000, ge=1)
    max_batch_size: int = Field(default=1024, ge=1)
    max_seq_len: int = Field(default=2048, ge=4)
    max_layers: int = Field(default=128, ge=1, description="the largest model (transformer layers) this node takes")
    join: bool = True

    _hashes = field_validator("model_hashes")(classmethod(
        lambda cls, v: [_hex32(h) for h in v]))


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
    name: str = Field(default="node", pattern=r"^[A-Za-z0-9._-]+$")
    chain: ChainCfg = Field(default_factory=ChainCfg)
    identity: IdentityCfg
    p2p: P2PCfg = Field(default_factory=P2PCfg)
    resources: ResourcesCfg = Field(default_factory=ResourcesCfg)
    storage: StorageCfg = Field(default_factory=StorageCfg)
    policy: PolicyCfg = Field(default_factory=PolicyCfg)
    register_: RegisterCfg | None = Field(default=None, alias="register")
    timing: TimingCfg = Field(default_factory=TimingCfg)
    fedpeat: FedPeatCfg = Field(default_factory=FedPeatCfg)

    _base: Path = Path(".")
    _file: str | None = None

    @classmethod
    def from_toml(cls, path: str | Path) -> "NodeConfig":
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read node config {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); node.toml is a UTF-8 TOML file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        try:
            cfg = cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {validation_message(exc)}") from None
        cfg._base = path.resolve().parent
        cfg._file = path.name
        return cfg

    def resolve(self, p: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        q = Path(p)
        return q if q.is_absolute() else (self._base / q)

    @property
    def path(self) -> Path | None:
        """The config file (None for a config not read from a file)."""
        return self._base / self._file if self._file else None

    @property
    def data_dir(self) -> Path:
        if self.storage.data_dir is None:
            from node.paths import nodes_dir

            return nodes_dir() / self.name
        return self.resolve(self.storage.data_dir)

    @property
    def deployment_path(self) -> Path | None:
        """The configured deployment file, or None for the chain id's default (node.chain.deployment)."""
        return self.resolve(self.chain.deployment) if self.chain.deployment else None

    def device(self) -> str:
        if self.resources.device != "auto":
            return self.resources.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def config_text(name: str, *, dev_account: int | None = None, keystore: str | None = None,
                listen: str = "/ip4/127.0.0.1/tcp/0", memory_mb: int = 2048, stake_eth: float | None = 1.0,
                vote: str = "auto") -> str:
    """A commented ``node.toml`` (``bsns node init``); checked by parsing it back."""
    if (dev_account is None) == (keystore is None):
        raise ConfigError("give exactly one of a keystore or a dev account")
    ident = (f"dev_account = {dev_account}             # anvil's published dev key: accepted on chain 31337 only"
             if dev_account is not None else f'keystore = "{keystore}"    # password: BSNS_KEYSTORE_PASSWORD or a prompt')
    text = f"""name = "{name}"                     # its records: <home>/nodes/{name} ([storage] data_dir to change)

[chain]                                # the chain and deployment `bsns chain up` / `bsns deploy` recorded
# rpc = "http://127.0.0.1:8545"
# deployment = ".bsns/deployments/31337.json"

[identity]
{ident}

[p2p]
listen = "{listen}"      # port 0: any free port; the one bound is registered

[resources]
device = "auto"                        # CUDA when present, CPU otherwise
memory_mb = {memory_mb}                      # the largest shard this node takes

[policy]
vote = "{vote}"                          # auto: vote by policy; manual: leave it to `bsns vote`
"""
    if stake_eth is not None:
        text += f"""
[register]                             # register on start with this stake (else: bsns node register)
stake_eth = {stake_eth:g}
"""
    try:
        NodeConfig.model_validate(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigError(f"node config: {validation_message(exc) if isinstance(exc, ValidationError) else exc}") \
            from None
    return text
