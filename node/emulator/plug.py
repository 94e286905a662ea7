"""Moving adapter weights between an emulator and the full model it stands in for.

Adapters live only on the adapter-bearing layers, which the emulator keeps under new (contiguous) indices.
Weights are exchanged in the full model's naming, so adapters from devices with different emulators
aggregate key by key and plug straight into the full model. A key renaming no library offers for
layer-dropped models; written here.
"""

from __future__ import annotations

import re

from node.emulator.build import EmulatorError, EmulatorManifest


def _pattern(manifest: EmulatorManifest) -> re.Pattern:
    # The layer list's own path ("bert.encoder.layer") ends the match, with any prefix a wrapper adds.
    return re.compile(r"(^|\.)(" + re.escape(manifest.layer_path) + r")\.(\d+)\.")


def _rename(state: dict, manifest: EmulatorManifest, mapping: dict[int, int], direction: str) -> dict:
    pat = _pattern(manifest)
    out = {}
    for key, value in state.items():
        m = pat.search(key)
        if m is None:
            out[key] = value
            continue
        idx = int(m.group(3))
        if idx not in mapping:
            raise EmulatorError(f"adapter weight {key!r} sits on layer {idx}, which is not an adapter layer "
                                f"({direction}; adapter layers {list(manifest.adapter_layers)})")
        new_key = key[: m.start(3)] + str(mapping[idx]) + key[m.end(3):]
        out[new_key] = value
    return out


def emulator_to_full(state: dict, manifest: EmulatorManifest) -> dict:
    """Rename an adapter state trained on the emulator to the full model's layer indices."""
    mapping = {manifest.emulator_index(i): i for i in manifest.adapter_layers}
    return _rename(state, manifest, mapping, "emulator to full model")


def full_to_emulator(state: dict, manifest: EmulatorManifest) -> dict:
    """Rename a full-model adapter state (e.g. the global aggregate) to the emulator's layer indices."""
    mapping = {i: manifest.emulator_index(i) for i in manifest.adapter_layers}
    return _rename(state, manifest, mapping, "full model to emulator")


def emulator_adapter_layers(manifest: EmulatorManifest) -> list[int]:
    """Indices, inside the emulator, of the adapter-bearing layers (where to inject adapters)."""
    return [manifest.emulator_index(i) for i in manifest.adapter_layers]
