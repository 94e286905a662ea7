"""The job spec: what a fine-tuning proposal asks the network to do.

A spec is a TOML file (see ``specs/``). ``JobSpec.from_toml`` validates it with pydantic and raises
``SpecError`` naming the field at fault. The spec's hash is the keccak-256 of its exact TOML bytes; the
agreed fields go on chain as ``FineTuneGovernance.JobParams`` (``to_chain_params``) and the full text
travels with the proposal, so any node can check the text against the hash.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from node.errors import BsnsError, validation_message
from node.hashing import keccak_hex
from node.vocab import (CHAIN_UINT_MAX, JOB_MAX, MAX_REPLICAS, MAX_SHARDS, Aggregation, Distribution, EmulatorRule,
                        ServerUpdate, Task)

HEX32 = re.compile(r"^0x[0-9a-fA-F]{64}$")


class SpecError(BsnsError):
    """The job spec is malformed; the message names the field."""


def _check_hex32(value: str | None) -> str | None:
    if value is not None and not HEX32.match(value):
        raise ValueError("must be a 0x-prefixed 32-byte hex string")
    return value.lower() if value else value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    id: str = Field(min_length=1, description="Hugging Face hub id, local path, or the alias 'minilm'")
    weights_hash: str | None = Field(default=None, description="keccak-256 of the weights (filled by propose)")

    _hex = field_validator("weights_hash")(classmethod(lambda cls, v: _check_hex32(v)))


class DataSection(_Section):
    dataset: str = Field(min_length=1)
    path: str = Field(min_length=1, description="path of the data file, relative to the repository or absolute")
    hash: str | None = None
    distribution: Distribution = Distribution.IID
    alpha: float = Field(default=0.5, gt=0, le=CHAIN_UINT_MAX["distributionParam"] / 1000,
                         description="Dirichlet concentration (used when distribution='dirichlet'); x1000 on chain")
    max_seq_len: int = Field(default=64, ge=4, le=8192)
    validation_size: int = Field(default=872, ge=0)

    _hex = field_validator("hash")(classmethod(lambda cls, v: _check_hex32(v)))


class TaskSection(_Section):
    kind: Task
    num_labels: int = Field(default=2, ge=1)
    loss: Literal["cross-entropy"] = "cross-entropy"


class MethodSection(_Section):
    name: str = Field(description="a registered method (node.tuners): an adapter method or 'full'")
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        from node.tuners import method_names

        if name not in method_names():
            raise ValueError(f"unknown method {name!r}; expected one of {', '.join(method_names())}")
        return name

    def config_hash(self) -> str:
        """keccak-256 of the method's config as canonical JSON (sorted keys, compact)."""
        text = json.dumps({"name": self.name, "config": self.config}, sort_keys=True, separators=(",", ":"))
        return keccak_hex(text.encode())


class ShardsSection(_Section):
    layers: list[tuple[int, int]] = Field(min_length=1, max_length=MAX_SHARDS)
    memory_mb: list[int] = Field(min_length=1, max_length=MAX_SHARDS)
    min_replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)

    @field_validator("layers")
    @classmethod
    def _contiguous(cls, layers: list[tuple[int, int]]) -> list[tuple[int, int]]:
        top = CHAIN_UINT_MAX["layerBounds"]
        if layers[-1][1] > top:
            raise ValueError(f"layer {layers[-1][1]} is over {top}, the largest layer bound the chain holds")
        if layers[0][0] != 0:
            raise ValueError("the first shard must start at layer 0")
        for i, (start, end) in enumerate(layers):
            if end <= start:
                raise ValueError(f"shard {i} is empty or reversed: [{start}, {end})")
            if i and start != layers[i - 1][1]:
                raise ValueError(f"shard {i} starts at {start}, not where shard {i - 1} ends ({layers[i - 1][1]})")
        return layers

    @model_validator(mode="after")
    def _same_length(self) -> "ShardsSection":
        if len(self.memory_mb) != len(self.layers):
            raise ValueError(f"memory_mb has {len(self.memory_mb)} entries for {len(self.layers)} shards")
        if any(m <= 0 for m in self.memory_mb):
            raise ValueError("memory_mb entries must be positive")
        if any(m > CHAIN_UINT_MAX["shardMemoryMB"] for m in self.memory_mb):
            raise ValueError(f"memory_mb entries must be at most {CHAIN_UINT_MAX['shardMemoryMB']} (the chain's uint32)")
        return self

    @property
    def bounds(self) -> list[int]:
        return [self.layers[0][0]] + [end for _, end in self.layers]


class TrainingSection(_Section):
    rounds: int = Field(ge=1, le=JOB_MAX["rounds"])
    sync_interval: int = Field(ge=1, le=JOB_MAX["syncInterval"], description="optimizer steps between syncs")
    batch_size: int = Field(default=16, ge=1)
    micro_batches: int = Field(default=1, ge=1)
    learning_rate: float = Field(ge=1e-9, le=JOB_MAX["learningRateE9"] / 1e9,
                                 description="x1e9 on chain, where it must be a positive integer")
    seed: int = Field(default=0, ge=0, le=JOB_MAX["seed"])
    aggregation: Aggregation = Aggregation.FEDAVG
    trim_fraction: float = Field(default=0.1, ge=0, lt=0.5)
    server_update: ServerUpdate | None = Field(default=None, description="how a round's aggregate becomes its final "
                                               "adapter; unset: DEFAULT_SERVER_UPDATE of the data distribution")

    @model_validator(mode="after")
    def _micro_batches_divide(self) -> "TrainingSection":
        if self.batch_size % self.micro_batches:
            raise ValueError(f"micro_batches ({self.micro_batches}) must divide batch_size ({self.batch_size})")
        return self


#: the server update of a spec that names none, by data distribution. Server momentum (beta 0.9) measured worse than
#: the plain aggregate on Dirichlet partitions (docs/results.md, "Non-IID"), so every distribution starts plain; the
#: table is here so that a measured better default for one distribution is a one-line change
DEFAULT_SERVER_UPDATE = {Distribution.IID: ServerUpdate.NONE, Distribution.DIRICHLET: ServerUpdate.NONE,
                         Distribution.CONTIGUOUS: ServerUpdate.NONE}


class FedPeatSpec(_Section):
    """``[fedpeat]``: the job is tuned on emulators (docs/fedpeat.md); each replica of the one shard is a device."""

    case: Literal[1, 2, 3] = Field(default=1, description="1: an emulator per device and round; 2: one shared "
                                                           "emulator; 3: no emulator (federated PEFT on the full model)")
    options: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0], min_length=1, max_length=16,
                                 description="retentions the controller chooses from")
    k: int = Field(default=1, ge=1, description="adapter-bearing layers kept at each end")
    rule: EmulatorRule = EmulatorRule.UNIFORM
    distill_steps: int = Field(default=0, ge=0, le=1_000_000)
    shared_retention: float = Field(default=1.0, ge=0.0, le=1.0, description="case 2's one emulator")

    @field_validator("options")
    @classmethod
    def _options(cls, v: list[float]) -> list[float]:
        if any(not 0.0 <= r <= 1.0 for r in v):
            raise ValueError("retentions must be numbers in [0, 1]")
        return sorted(set(float(r) for r in v))

    @model_validator(mode="after")
    def _shared_in_options(self) -> "FedPeatSpec":
        if self.shared_retention not in self.options:
            raise ValueError(f"shared_retention {self.shared_retention} must be one of the options {self.options}")
        return self


class JobSpec(_Section):
    """A validated fine-tuning job; build it with ``from_toml``/``from_text`` or from keyword sections."""

    name: str = Field(default="job", min_length=1, max_length=200)
    model: ModelSection
    data: DataSection
    task: TaskSection
    method: MethodSection
    shards: ShardsSection
    training: TrainingSection
    fedpeat: FedPeatSpec | None = None

    _text: str | None = PrivateAttr(default=None)

    @field_validator("fedpeat")
    @classmethod
    def _fedpeat_fits(cls, fp: "FedPeatSpec | None", info) -> "FedPeatSpec | None":
        # a field validator (not a model one) so the message is located at "fedpeat"; shards and method
        # are declared earlier and so already validated (absent from info.data when they failed)
        if fp is None:
            return fp
        from node.tuners import get_method, method_names

        shards, method = info.data.get("shards"), info.data.get("method")
        if shards is not None:
            if len(shards.layers) != 1:
                raise ValueError(f"a [fedpeat] job has exactly one shard (the whole model) in shards.layers, "
                                 f"not {len(shards.layers)}; each replica is a device")
            if 2 * fp.k >= shards.layers[0][1]:
                raise ValueError(f"k={fp.k} adapter layers at each end leave no middle in {shards.layers[0][1]} layers")
        if method is not None and not get_method(method.name).layer_local:
            raise ValueError(f"method.name {method.name!r} cannot be trained on an emulator "
                             f"(a [fedpeat] job needs one of {', '.join(method_names(layer_local=True))})")
        return fp

    @model_validator(mode="after")
    def _default_server_update(self) -> "JobSpec":
        if self.training.server_update is None:
            self.training.server_update = DEFAULT_SERVER_UPDATE[self.data.distribution]
        return self

    # -- loading ----------------------------------------------------------------------------------
    @classmethod
    def from_text(cls, text: str, source: str = "spec") -> "JobSpec":
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"{source}: not valid TOML: {exc}") from None
        try:
            spec = cls.model_validate(raw)
        except ValidationError as exc:
            raise SpecError(f"{source}: {validation_message(exc)}") from None
        spec._text = text
        return spec

    @classmethod
    def from_toml(cls, path: str | Path) -> "JobSpec":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"cannot read spec {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise SpecError(f"{path}: not UTF-8 text (byte {exc.start}); a spec is a UTF-8 TOML file") from None
        return cls.from_text(text, source=str(path))

    # -- identity ---------------------------------------------------------------------------------
    @property
    def toml_text(self) -> str:
        """The exact TOML this spec was read from, or a canonical rendering if it was built in code."""
        if self._text is None:
            self._text = tomli_w.dumps(self.model_dump(mode="json", exclude_none=True))
        return self._text

    def spec_hash(self) -> str:
        return keccak_hex(self.toml_text.encode())

    def with_hashes(self, weights_hash: str | None = None, data_hash: str | None = None) -> "JobSpec":
        """A copy with the weights and data hashes filled in (its TOML, and so its hash, changes)."""
        raw = self.model_dump(mode="json", exclude_none=True)
        if weights_hash:
            raw["model"]["weights_hash"] = weights_hash
        if data_hash:
            raw["data"]["hash"] = data_hash
        return JobSpec.from_text(tomli_w.dumps(raw))

    @property
    def num_shards(self) -> int:
        return len(self.shards.layers)

    # -- chain form ---------------------------------------------------------------------------------
    def to_chain_params(self) -> dict[str, Any]:
        """The agreed fields as ``FineTuneGovernance.JobParams`` (a dict keyed by the struct's names)."""
        missing = [f for f, v in (("model.weights_hash", self.model.weights_hash), ("data.hash", self.data.hash)) if not v]
        if missing:
            raise SpecError(f"{missing[0]}: required on chain (bsns propose fills it in from the files)")
        return {
            "baseModel": self.model.id,
            "baseModelHash": bytes.fromhex(self.model.weights_hash[2:]),
            "dataset": self.data.dataset,
            "datasetHash": bytes.fromhex(self.data.hash[2:]),
            "task": self.task.kind.value,
            "method": self.method.name,
            "methodConfigHash": bytes.fromhex(self.method.config_hash()[2:]),
            "layerBounds": self.shards.bounds,
            "shardMemoryMB": list(self.shards.memory_mb),
            "distribution": self.data.distribution.code,
            "distributionParam": round(self.data.alpha * 1000),
            "syncInterval": self.training.sync_interval,
            "rounds": self.training.rounds,
            "aggregation": self.training.aggregation.code,
            "serverUpdate": self.training.server_update.code,
            "minReplicas": self.shards.min_replicas,
            "learningRateE9": round(self.training.learning_rate * 1e9),
            "seed": self.training.seed,
            "specHash": bytes.fromhex(self.spec_hash()[2:]),
        }

    def check_against_chain(self, params: dict[str, Any]) -> None:
        """Raise SpecError unless ``params`` (as read back from chain) are exactly this spec's."""
        ours = self.to_chain_params()
        for key, value in ours.items():
            theirs = params.get(key)
            if isinstance(theirs, (tuple, list)):
                theirs = list(theirs)
            if theirs != value:
                raise SpecError(f"on-chain {key} differs from the spec text: {theirs!r} != {value!r}")
