"""Building an emulator: the model with its adapter-bearing layers kept and its frozen middle layer-dropped.

Offsite-Tuning (Xiao et al., 2023) keeps the first and last ``k`` transformer layers, where the adapters
live, and replaces the frozen middle with a compressed stand-in. Here the compression is layer drop: a
``retention`` fraction of the middle layers stays, chosen uniformly or by a layer-importance rule
(Block Influence, ShortGPT: ``1 - cos(h_in, h_out)`` on calibration text; layers that barely change the
hidden state go first). No library builds emulators, so the layer surgery is written here; it works on any
module that holds its transformer layers in an ``nn.ModuleList`` (Hugging Face BERT, GPT-2, Llama families
and ``node.model`` shards).

The emulator is content-addressed like adapters: its hash is keccak-256 over the canonical safetensors
bytes of its weights (``node.train.canonical_bytes``) followed by its canonical JSON manifest.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal

from node.errors import BsnsError
from node.hashing import keccak_hex
from node.train.build import adapter_layer_indices
from node.train.errors import TrainError

# Where the transformer layers live, by family; the first attribute path that resolves to a ModuleList wins.
LAYER_PATHS = (
    "bert.encoder.layer", "encoder.layer", "roberta.encoder.layer", "distilbert.transformer.layer",
    "transformer.h", "model.layers", "model.model.layers", "layers", "h", "blocks",
)


class EmulatorError(BsnsError):
    """An emulator cannot be built, loaded or plugged with the given arguments."""


@dataclass(frozen=True)
class EmulatorManifest:
    """What an emulator is: which of the model's layers it keeps and how it was made (full-model indices)."""

    base_model: str
    num_layers: int
    layer_path: str
    adapter_layers: tuple[int, ...]
    middle_layers: tuple[int, ...]
    kept_middle: tuple[int, ...]
    retention: float
    rule: str
    distill_steps: int = 0
    keyed: bool = False  # layers in a ModuleDict keyed by global index (node.model shards): names never change

    @property
    def kept_layers(self) -> tuple[int, ...]:
        """Full-model indices of every layer the emulator holds, in order."""
        return tuple(sorted(set(self.adapter_layers) | set(self.kept_middle)))

    def emulator_index(self, full_index: int) -> int:
        """Where a kept layer sits in the emulator: its own index in a shard, its position in a ModuleList."""
        try:
            pos = self.kept_layers.index(full_index)
            return full_index if self.keyed else pos
        except ValueError:
            raise EmulatorError(f"layer {full_index} is not in the emulator (kept: {list(self.kept_layers)})") from None

    def to_json(self) -> str:
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "EmulatorManifest":
        d = json.loads(text)
        for k in ("adapter_layers", "middle_layers", "kept_middle"):
            d[k] = tuple(d[k])
        return cls(**d)


@dataclass
class Emulator:
    """A compressed, frozen stand-in for a model; ``model`` runs like the original (same inputs, same head)."""

    model: Any
    manifest: EmulatorManifest
    digest: str = ""

    def __post_init__(self) -> None:
        if not self.digest:
            self.digest = emulator_hash(self.model, self.manifest)

    def hash(self) -> str:
        """Content address of the emulator as built or distilled (weights + manifest), before adapters are injected."""
        return self.digest

    def num_bytes(self) -> int:
        """Bytes of the emulator's weights in fp32 (what a device downloads)."""
        return sum(4 * t.numel() for t in self.model.state_dict().values())


def find_layers(model) -> tuple[str, Any]:
    """(attribute path, layers) of the model's transformer layers: an ``nn.ModuleList`` (Hugging Face models)
    or the ``nn.ModuleDict`` keyed by global layer index of a ``node.model.ModelShard``."""
    import torch.nn as nn

    for path in LAYER_PATHS:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, (nn.ModuleList, nn.ModuleDict)) and len(obj) > 0:
            return path, obj
    raise EmulatorError(f"cannot find the transformer layers of {type(model).__name__} (tried {', '.join(LAYER_PATHS)})")


def layer_at(layers, index: int):
    """Layer ``index`` as the model names it: a ModuleDict's key, a ModuleList's position."""
    import torch.nn as nn

    return layers[str(index)] if isinstance(layers, nn.ModuleDict) else layers[index]


def select_layers(layers, keep: list[int]):
    """A new ModuleList / ModuleDict holding only the layers at positions ``keep`` (keys preserved)."""
    import torch.nn as nn

    if isinstance(layers, nn.ModuleDict):
        items = list(layers.items())
        return nn.ModuleDict([items[i] for i in keep])
    return nn.ModuleList([layers[i] for i in keep])


def _set_layers(model, path: str, layers) -> None:
    parent = model
    *head, last = path.split(".")
    for part in head:
        parent = getattr(parent, part)
    setattr(parent, last, layers)


def middle_keep_count(n_middle: int, retention: float) -> int:
    if not (isinstance(retention, (int, float)) and 0.0 <= retention <= 1.0 and math.isfinite(retention)):
        raise EmulatorError(f"retention must be a number in [0, 1], got {retention!r}")
    return int(math.floor(retention * n_middle + 0.5))


def uniform_selection(middle: tuple[int, ...], n_keep: int) -> tuple[int, ...]:
    """Evenly spaced middle layers (the centre of each of ``n_keep`` equal slices)."""
    n = len(middle)
    if n_keep == 0:
        return ()
    return tuple(middle[min(n - 1, int((j + 0.5) * n / n_keep))] for j in range(n_keep))


def block_influence(model, batches: Iterable[dict], layer_ids: Iterable[int]) -> dict[int, float]:
    """Block Influence of each layer: mean over real tokens of ``1 - cos(input, output)`` (ShortGPT)."""
    import torch

    path, layers = find_layers(model)
    wanted = set(layer_ids)
    sums = {i: 0.0 for i in wanted}
    count = {i: 0 for i in wanted}
    mask_holder: dict[str, Any] = {}
    handles = []

    def make_hook(i):
        def hook(module, args, kwargs, output):
            h_in = args[0] if args else kwargs["hidden_states"]
            h_out = output[0] if isinstance(output, (tuple, list)) else output
            cos = torch.nn.functional.cosine_similarity(h_in.float(), h_out.float(), dim=-1)
            m = mask_holder.get("mask")
            if m is not None and m.shape == cos.shape:
                sums[i] += float(((1 - cos) * m).sum())
                count[i] += int(m.sum())
            else:
                sums[i] += float((1 - cos).sum())
                count[i] += cos.numel()
        return hook

    for i in wanted:
        handles.append(layer_at(layers, i).register_forward_hook(make_hook(i), with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                mask_holder["mask"] = batch.get("attention_mask")
                model(**{k: v for k, v in batch.items() if k != "labels"})
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {i: sums[i] / max(count[i], 1) for i in wanted}


def build_emulator(model, *, retention: float, k: int = 1, adapter_layers: Iterable[int] | None = None,
                   rule: Literal["uniform", "importance"] = "uniform", calibration: Iterable[dict] | None = None,
                   base_model: str = "", copy_model: bool = True) -> Emulator:
    """Compress ``model`` into an emulator that keeps the adapter layers and ``retention`` of the middle.

    ``rule="importance"`` needs ``calibration`` batches (dicts of model inputs) to score the middle layers.
    The original model is left untouched unless ``copy_model=False``.
    """
    import torch.nn as nn

    path, layers = find_layers(model)
    n = len(layers)
    keyed = isinstance(layers, nn.ModuleDict)
    if keyed and list(layers.keys()) != [str(i) for i in range(getattr(model, "n_layers", n))]:
        raise EmulatorError("an emulator is built from a shard that holds all of the model's layers "
                            f"(this one holds {list(layers.keys())})")
    try:
        adapters = adapter_layer_indices(n, k, adapter_layers)
    except TrainError as exc:
        raise EmulatorError(str(exc)) from None
    middle = tuple(i for i in range(adapters[0], adapters[-1] + 1) if i not in adapters)
    outside = tuple(i for i in range(n) if i not in adapters and i not in middle)
    if outside:
        raise EmulatorError(f"layers {list(outside)} lie outside the adapter layers; adapters must span the model's ends")
    n_keep = middle_keep_count(len(middle), retention)
    if rule == "uniform":
        kept_middle = uniform_selection(middle, n_keep)
    elif rule == "importance":
        if calibration is None:
            raise EmulatorError("rule 'importance' needs calibration batches")
        scores = block_influence(model, calibration, middle)
        kept_middle = tuple(sorted(sorted(middle, key=lambda i: (-scores[i], i))[:n_keep]))
    else:
        raise EmulatorError(f"unknown layer-drop rule {rule!r} (uniform, importance)")

    emu = copy.deepcopy(model) if copy_model else model
    _, emu_layers = find_layers(emu)
    keep = sorted(set(adapters) | set(kept_middle))
    _set_layers(emu, path, select_layers(emu_layers, keep))
    if not keyed:  # a Hugging Face model counts its layers in its config; a shard keeps the full model's
        cfg = getattr(emu, "config", None)
        if cfg is not None:
            for attr in ("num_hidden_layers", "n_layer", "num_layers"):
                if hasattr(cfg, attr):
                    setattr(cfg, attr, len(keep))
    # Llama-style attention indexes its KV cache by layer_idx; renumber so a cache (if used) stays consistent.
    # (a shard's layers keep their global index, which its prefix cache is keyed by)
    if not keyed:
        for j, layer in enumerate(find_layers(emu)[1]):
            for mod in layer.modules():
                if hasattr(mod, "layer_idx"):
                    mod.layer_idx = j
    manifest = EmulatorManifest(
        base_model=base_model, num_layers=n, layer_path=path, adapter_layers=adapters,
        middle_layers=middle, kept_middle=kept_middle, retention=float(retention), rule=rule, keyed=keyed,
    )
    return Emulator(model=emu, manifest=manifest)


def canonical_weight_bytes(state: dict) -> bytes:
    """The adapter hashing format (``node.train.canonical_bytes``: safetensors, sorted keys, fp32, contiguous)."""
    from node.train.adapter_state import canonical_bytes

    return canonical_bytes(state)


def emulator_hash(model, manifest: EmulatorManifest) -> str:
    return keccak_hex(canonical_weight_bytes(model.state_dict()) + manifest.to_json().encode())

