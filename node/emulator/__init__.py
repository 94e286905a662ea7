"""Emulators (Offsite-Tuning / FedPEAT): a layer-dropped, frozen stand-in for a model that adapters train against.

``build_emulator`` keeps the adapter-bearing layers and a retention fraction of the middle; ``distill_emulator``
optionally trains the kept middle toward the full model; ``inject_adapters`` puts a ``node.tuners`` method on
the adapter-bearing layers only; ``emulator_to_full`` / ``full_to_emulator`` rename
adapter weights so adapters trained on an emulator plug into the full model; ``save_emulator`` /
``load_emulator`` store them by content hash; ``emulator_for_spec`` / ``emulator_blob`` / ``emulator_from_blob``
give a FedPEAT job spec's emulators and their wire form.
"""

from node.emulator.build import (Emulator, EmulatorError, EmulatorManifest, block_influence, build_emulator,
                                 canonical_weight_bytes, emulator_hash, find_layers)
from node.emulator.adapters import inject_adapters
from node.emulator.distill import distill_emulator
from node.emulator.plug import emulator_adapter_layers, emulator_to_full, full_to_emulator
from node.emulator.store import load_emulator, save_emulator
from node.emulator.spec import emulator_blob, emulator_for_spec, emulator_from_blob

__all__ = [
    "Emulator", "emulator_blob", "emulator_for_spec", "emulator_from_blob", "EmulatorError", "EmulatorManifest",
    "block_influence", "build_emulator",
    "canonical_weight_bytes", "distill_emulator", "emulator_adapter_layers", "emulator_hash", "emulator_to_full",
    "find_layers", "full_to_emulator", "inject_adapters", "load_emulator", "save_emulator",
]
