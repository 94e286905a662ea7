"""Adapters on the adapter-bearing layers only, with the project's PEFT methods (``node.tuners``).

Offsite-Tuning puts adapters on the first and last layers only: a registered method injected with
``layers=`` (``node.tuners.registry.Method.inject``). Only methods whose parameters live inside the layers
(``Method.layer_local``) survive layer drop. Adapter parameter names keep the global layer index, so the same
state fits the full shard and every emulator of it.
"""

from __future__ import annotations

from node.emulator.build import EmulatorError, find_layers


def inject_adapters(shard, adapter_layers, method: str = "lora", params: dict | None = None):
    """Inject ``method`` (a ``node.tuners`` name) on ``adapter_layers`` (global indices) of a shard or emulator."""
    import torch.nn as nn

    from node.tuners import TunerError, get_method, method_names

    m = get_method(method)
    if not m.layer_local:
        raise EmulatorError(f"PEFT method {method!r} cannot be trained on an emulator "
                            f"(supported: {', '.join(method_names(layer_local=True))})")
    path, layers = find_layers(shard)
    if path != "layers" or not isinstance(layers, nn.ModuleDict):
        raise EmulatorError("adapters are injected into node.model shards (ModelShard) and their emulators")
    try:
        return m.inject(shard, params or {}, layers=adapter_layers)
    except TunerError as exc:
        raise EmulatorError(str(exc)) from None
