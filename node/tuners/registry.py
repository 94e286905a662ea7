"""The registry of PEFT methods: each tuner sub-package registers itself with its properties.

As PEFT's ``register_peft_method`` does, a sub-package calls ``register_method(Method(...))`` when it is
imported, naming its config class, its injection function and what it is (``node.tuners`` imports every
sub-package, so importing it fills the registry). The injection and PEFT-config functions are given as
``"module:function"`` paths and imported on first use: registering costs a pydantic class, not torch.

Everything that used to keep its own list of method names asks the registry instead: the job spec
(``method_names()``), the emulator (``Method.layer_local``: survives layer drop), the exporter
(``Method.peft_config``: has a Hugging Face PEFT form) and the node's default voting policy.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from node.tuners.base import TunerConfig, TunerError, finish_injection, freeze, validate_config


def _resolve(path: str) -> Callable:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Method:
    """A registered PEFT method.

    inject: ``"module:function"`` of ``inject(shard, cfg)``, which adds the method's trainable parameters to a
        frozen shard; trains_base: it trains the base weights themselves (full fine-tuning), not an adapter;
    layer_local: its parameters live inside the transformer layers (or the head), so they survive layer drop
        and an adapter trained on an emulator plugs into the full model (FedPEAT); peft_config:
        ``"module:function"`` of ``(shard, cfg) -> peft config`` when the method has a Hugging Face PEFT
        form (export, merge); requires: a backend it needs beyond torch on CPU, or None.
    """

    name: str
    config_class: type[TunerConfig]
    inject_path: str
    trains_base: bool = False
    layer_local: bool = False
    peft_config_path: str | None = None
    requires: str | None = None

    @property
    def exports_to_peft(self) -> bool:
        return self.peft_config_path is not None

    def config(self, cfg=None) -> TunerConfig:
        """A validated config from an instance, a mapping or None; ``TunerError`` names the field."""
        return validate_config(self.name, self.config_class, cfg)

    def peft_config(self, shard, cfg):
        if self.peft_config_path is None:
            raise TunerError(f"PEFT method {self.name!r} has no Hugging Face PEFT form")
        return _resolve(self.peft_config_path)(shard, cfg)

    def inject(self, shard, cfg=None, layers=None):
        """Freeze ``shard`` and add the method's trainable parameters, in place.

        ``layers``: global indices of the only layers to adapt (Offsite-Tuning puts adapters on the first and
        last layers only); the tuner is shown a shard holding just those, and the others are put back,
        untouched and frozen, right after. Parameter names keep the global layer index either way.
        """
        from torch import nn

        cfg = self.config(cfg)
        if getattr(shard, "peft_method", None) is not None:
            raise TunerError(f"this shard already has PEFT method {shard.peft_method!r}; load a fresh shard")
        freeze(shard)
        inject = _resolve(self.inject_path)
        if layers is None:
            inject(shard, cfg)
        else:
            wanted = {str(i) for i in layers}
            items = list(shard.layers.items())
            missing = sorted(wanted - {k for k, _ in items}, key=int)
            if missing:
                raise TunerError(f"layers {missing} are not held by this shard (holds {[k for k, _ in items]})")
            shard.layers = nn.ModuleDict([(k, v) for k, v in items if k in wanted])
            try:
                inject(shard, cfg)
            finally:
                shard.layers = nn.ModuleDict(items)  # the same module objects, now carrying adapters where wanted
        finish_injection(shard, self.name, cfg)
        return shard


_REGISTRY: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Make ``method`` available under its name (called by each tuner sub-package on import)."""
    if method.name in _REGISTRY and _REGISTRY[method.name] != method:
        raise TunerError(f"PEFT method {method.name!r} is registered twice")
    _REGISTRY[method.name] = method
    return method


def method_names(**properties) -> tuple[str, ...]:
    """Names of the registered methods (in registration order) whose properties equal ``properties``,
    e.g. ``method_names(layer_local=True)``."""
    return tuple(m.name for m in _REGISTRY.values() if all(getattr(m, k) == v for k, v in properties.items()))


def get_method(name: str) -> Method:
    """The registered method called ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise TunerError(f"unknown PEFT method {name!r} (known: {', '.join(_REGISTRY)})") from None
