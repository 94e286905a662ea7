"""Adapters on the adapter-bearing layers only, with the project's PEFT methods (``node.tuners``).

``node.tuners`` injects a method into every layer a shard holds. Offsite-Tuning puts adapters on the first
and last layers only, so the tuner is shown a shard whose ``layers`` are just those (the other layers are
put back, untouched and frozen, right after). Adapter parameter names keep the global layer index, so the
same state fits the full shard and every emulator of it.
"""

from __future__ import annotations

from node.emulator.build import EmulatorError, find_layers

# Methods that live inside the transformer layers (or in the head) and so survive layer drop unchanged.
LAYER_METHODS = ("lora", "houlsby", "pfeiffer", "ia3")


def inject_adapters(shard, adapter_layers, method: str = "lora", params: dict | None = None):
    """Inject ``method`` (a ``node.tuners`` name) on ``adapter_layers`` (global indices) of a shard or emulator."""
    import torch.nn as nn

    from node.tuners import get_method

    if method not in LAYER_METHODS:
        raise EmulatorError(f"PEFT method {method!r} cannot be trained on an emulator (supported: {', '.join(LAYER_METHODS)})")
    path, layers = find_layers(shard)
    if path != "layers" or not isinstance(layers, nn.ModuleDict):
        raise EmulatorError("adapters are injected into node.model shards (ModelShard) and their emulators")
    wanted = {str(i) for i in adapter_layers}
    missing = sorted(wanted - set(layers.keys()), key=int)
    if missing:
        raise EmulatorError(f"adapter layers {missing} are not held by this model (holds {list(layers.keys())})")
    items = list(layers.items())
    for p in shard.parameters():
        p.requires_grad_(False)
    shard.layers = nn.ModuleDict([(k, v) for k, v in items if k in wanted])
    try:
        get_method(method).inject(shard, params or {})
    finally:
        shard.layers = nn.ModuleDict(items)  # the same module objects, now carrying adapters where wanted
    return shard
