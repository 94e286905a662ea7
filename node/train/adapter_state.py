"""Adapter state: canonical bytes, the content hash that goes on chain, files, LoRA merge and export.

Owns:
- ``canonical_bytes(state)``: safetensors bytes of a shard's adapter state with sorted keys, every
  tensor fp32, contiguous, on CPU, and no ``__metadata__`` (nothing that varies between processes);
- ``adapter_hash(state)``: keccak-256 of those bytes as 0x-hex. An adapter file written by
  ``save_adapter`` *is* the canonical bytes, so the hash of the file's bytes equals the adapter hash;
- ``merge_lora(module)``: folds LoRA (and IA3) layers into the base weights in place;
- ``export_peft`` / ``export_bottleneck``: a whole (all shards) adapter in the Hugging Face PEFT format,
  and our bottleneck adapters in the format documented in docs/adapter-format.md.

Serialisation and hashing use safetensors and eth-utils' keccak; what is written by hand is only the
canonical form (dtype, order, layout) and the renaming from shard names to whole-model names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from node.errors import BsnsError
from node.hashing import keccak_hex


class AdapterStateError(BsnsError):
    """An adapter file or state is missing, not canonical, or does not fit the model."""


def canonical_state(state: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:  # noqa: F821
    """The state as fp32, contiguous CPU tensors in sorted key order (a copy; the input is untouched)."""
    import torch

    out = {}
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            raise AdapterStateError(f"adapter state entry {name!r} is not a tensor")
        # clone: tensors that share storage (tied weights) cannot be saved by safetensors
        out[name] = t.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()
    return out


def canonical_bytes(state: Mapping[str, "torch.Tensor"]) -> bytes:  # noqa: F821
    """safetensors bytes of ``canonical_state(state)``, with no metadata: the same weights, the same bytes."""
    from safetensors.torch import save

    if not state:
        raise AdapterStateError("adapter state is empty")
    return save(canonical_state(state))


def adapter_hash(state: Mapping[str, "torch.Tensor"]) -> str:  # noqa: F821
    """keccak-256 of the canonical bytes, as 0x-prefixed lower-case hex (the hash committed on chain)."""
    return keccak_hex(canonical_bytes(state))


def state_from_bytes(data: bytes, *, check_canonical: bool = True) -> dict[str, "torch.Tensor"]:  # noqa: F821
    """Parse adapter bytes (e.g. received from a peer); by default refuse bytes that are not canonical."""
    from safetensors.torch import load

    try:
        state = load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError / ValueError variants
        raise AdapterStateError(f"not a safetensors adapter: {str(exc).splitlines()[0]}") from None
    if check_canonical and canonical_bytes(state) != data:
        raise AdapterStateError("adapter bytes are not in canonical form (fp32, sorted keys, no metadata)")
    return state


def save_adapter(state: Mapping[str, "torch.Tensor"], path: str | Path) -> str:  # noqa: F821
    """Write the canonical bytes to ``path`` (atomically) and return the adapter hash."""
    data = canonical_bytes(state)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(p)
    return keccak_hex(data)


def load_adapter(path: str | Path, expected_hash: str | None = None) -> dict[str, "torch.Tensor"]:  # noqa: F821
    """Read an adapter file; with ``expected_hash``, refuse a file whose bytes hash differently."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise AdapterStateError(f"cannot read adapter file {p}: {exc.strerror}") from None
    if expected_hash is not None and keccak_hex(data).lower() != expected_hash.lower():
        raise AdapterStateError(f"adapter file {p} hashes to {keccak_hex(data)}, expected {expected_hash}")
    return state_from_bytes(data)


def file_adapter_hash(path: str | Path) -> str:
    """The adapter hash of a file: keccak-256 of its bytes, after checking they are canonical."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise AdapterStateError(f"cannot read adapter file {p}: {exc.strerror}") from None
    state_from_bytes(data)
    return keccak_hex(data)


# ---------------------------------------------------------------------------------------------------
# Merging


def merge_lora(module) -> int:
    """Fold every PEFT tuner layer (LoRA, IA3) inside ``module`` into its base layer, in place.

    Each tuner layer is replaced by its base layer carrying the merged weight (W + scale·BA for LoRA),
    so the module no longer holds adapter parameters and runs at the base model's speed. Returns the
    number of layers merged; raises if there is nothing to merge.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    targets = [(name, m) for name, m in module.named_modules() if isinstance(m, BaseTunerLayer)]
    if not targets:
        raise AdapterStateError("no LoRA/IA3 layers to merge in this model")
    for name, layer in targets:
        layer.merge(safe_merge=True)
        base = layer.get_base_layer()
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, base)
    return len(targets)


def merged_state(states: list[Mapping]) -> dict:
    """Union of per-shard states (each shard's names are distinct); refuses duplicate names."""
    out: dict = {}
    for s in states:
        for k, v in s.items():
            if k in out:
                raise AdapterStateError(f"adapter parameter {k!r} appears in two shards")
            out[k] = v
    return out


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
