"""Saving and loading emulators by content address: ``<dir>/emulator.safetensors`` + ``manifest.json``.

Loading rebuilds the layer selection from the manifest on a freshly loaded base model, loads the saved
weights (which carry any distillation) and refuses anything whose hash differs from the one asked for.
"""

from __future__ import annotations

import json
from pathlib import Path

from node.emulator.build import (Emulator, EmulatorError, EmulatorManifest, _set_layers, canonical_weight_bytes,
                                 emulator_hash, find_layers, select_layers)


def save_emulator(emulator: Emulator, directory: str | Path) -> str:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "emulator.safetensors").write_bytes(canonical_weight_bytes(emulator.model.state_dict()))
    (d / "manifest.json").write_text(json.dumps({"hash": emulator.hash(), "manifest": json.loads(emulator.manifest.to_json())},
                                                sort_keys=True, indent=1))
    return emulator.hash()


def load_emulator(directory: str | Path, base_model, expected_hash: str | None = None) -> Emulator:
    """Rebuild an emulator from ``base_model`` (a freshly loaded full model, consumed) and the saved files."""
    from safetensors.torch import load_file

    d = Path(directory)
    try:
        meta = json.loads((d / "manifest.json").read_text())
        manifest = EmulatorManifest.from_json(json.dumps(meta["manifest"]))
        weights = load_file(str(d / "emulator.safetensors"))
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise EmulatorError(f"cannot read emulator at {d}: {exc}") from None
    path, layers = find_layers(base_model)
    if path != manifest.layer_path or len(layers) != manifest.num_layers:
        raise EmulatorError(f"emulator at {d} was built from a {manifest.num_layers}-layer model at {manifest.layer_path!r}, "
                            f"not this {len(layers)}-layer model at {path!r}")
    _set_layers(base_model, path, select_layers(layers, list(manifest.kept_layers)))
    cfg = getattr(base_model, "config", None)
    if not manifest.keyed and cfg is not None and hasattr(cfg, "num_hidden_layers"):
        cfg.num_hidden_layers = len(manifest.kept_layers)
    missing, unexpected = base_model.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise EmulatorError(f"emulator weights at {d} do not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    digest = emulator_hash(base_model, manifest)
    want = expected_hash or meta.get("hash")
    if want and digest != want:
        raise EmulatorError(f"emulator at {d} hashes to {digest}, expected {want}")
    return Emulator(model=base_model, manifest=manifest, digest=digest)
