"""Model families: what differs between BERT, GPT-2, Llama, ... lives in one file per family, here.

Each module of this package (``bert.py``, ``gpt2.py``, ``llama.py``, ...) defines a ``Family`` subclass and
registers an instance with ``register_family``; this module holds the base class and the registry, keyed by
family name and by Hugging Face ``model_type``, and imports every module of the package when it is imported.
Adding a family is adding a file (and its tiny checkpoint in ``tests/model/tiny.py``, which the exactness
tests of shards and tuners run over).

A family owns: where a shard's parts live in the Hugging Face task model (embeddings, layers, final norm,
rotary embedding, task heads) and so how shard-local parameter names map to the model's and to checkpoint
keys; whether it is causal; the embedding forward (soft prompt prepended); the position limit; per-layer
keyword arguments; a layer's attention window; how the classification head pools; and the module names
the tuners adapt (``node.tuners`` reads them here; ``node.model`` never imports the tuners).
Nothing here imports torch or transformers at import time.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from functools import cached_property
from typing import Any, NamedTuple

from node.model.errors import ModelError

TASKS = ("sequence-classification", "causal-lm")


class BaseParts(NamedTuple):
    """The submodules a shard takes from a task model (any of them may be None)."""

    embeddings: Any  # one module, or a dict of modules keyed by their shard-local name
    layers: list
    norm: Any
    rotary: Any


def _submodule(model, path: str | None):
    """``model``'s submodule at a dotted attribute path; None for no path or an absent (None) module."""
    if path is None:
        return None
    module = model
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


class Family:
    """A model family. Subclasses set the class attributes below and override the hooks whose default, a
    causal decoder without learned positions classifying from its last attended token, does not fit.

    Paths are dotted attribute paths inside the Hugging Face ``*ForSequenceClassification`` /
    ``*ForCausalLM`` model; they also give the shard's parameter names their full-model form
    (``hf_name``). Tuner targets are module names inside one transformer layer.
    """

    name: str = ""                    # what exports record and ``model_family`` reports
    model_types: tuple[str, ...] = ()  # the Hugging Face ``config.model_type`` values served
    causal: bool = True               # decoder (causal attention; can serve causal-lm) or encoder
    learned_positions: bool = False   # a position table of ``max_position_embeddings`` rows (a length limit)

    # where a shard's parts live
    embeddings: str | dict[str, str]  # one module ("embeddings.*" in the shard) or several ("embeddings.<key>.*")
    layers: str
    norm: str | None = None
    rotary: str | None = None
    classifier: str = "score"         # the classification head's output layer (a new, trained layer)
    lm_head: str = "lm_head"          # the language-model head (pretrained; tied to the embeddings in some models)
    word_embeddings: str              # the token embedding table, as a path inside the shard's embeddings

    # what the tuners adapt, inside one layer
    lora_targets: tuple[str, ...]     # LoRA's default: the attention's W_q and W_v (fused ones where fused)
    ia3_targets: str                  # IA3's default, a regex PEFT full-matches: keys, values, FFN output projection
    ia3_feedforward: str              # the part of ia3_targets whose input (not output) IA3 rescales
    bottleneck_points: dict[str, tuple[str, str]]  # "attn"/"ffn" -> (output projection, that sub-layer's norm)
    transposed_projections: bool = False  # projections stored (in, out), as GPT-2's Conv1D

    _REQUIRED = ("name", "model_types", "embeddings", "layers", "word_embeddings", "lora_targets", "ia3_targets",
                 "ia3_feedforward", "bottleneck_points")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} family {self.name!r} for {', '.join(self.model_types)}>"

    # one registered object per model type: copies of a shard (deepcopy, pickle) share it
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        return family_for_model_type, (self.model_types[0],)

    @property
    def tasks(self) -> tuple[str, ...]:
        return TASKS if self.causal else ("sequence-classification",)

    # ---- the parts of a task model ------------------------------------------------------------
    def head_paths(self, task: str) -> dict[str, str]:
        """The task head's modules: shard-local name (under ``head.``) -> path (absent ones are skipped)."""
        if task == "causal-lm":
            return {self.lm_head: self.lm_head}
        return {self.classifier: self.classifier}

    def head_layer(self, task: str) -> str:
        """The head's output layer: what training the head trains (anything else in the head is pretrained)."""
        return self.lm_head if task == "causal-lm" else self.classifier

    def parts(self, model) -> BaseParts:
        if isinstance(self.embeddings, str):
            embeddings = _submodule(model, self.embeddings)
        else:
            embeddings = {key: _submodule(model, path) for key, path in self.embeddings.items()}
        return BaseParts(embeddings, list(_submodule(model, self.layers)), _submodule(model, self.norm),
                         _submodule(model, self.rotary))

    def head(self, model, task: str) -> dict:
        modules = {key: _submodule(model, path) for key, path in self.head_paths(task).items()}
        return {key: m for key, m in modules.items() if m is not None}

    # ---- names ------------------------------------------------------------------------------------
    @cached_property
    def _prefixes(self) -> tuple[tuple[str, str], ...]:
        """(shard-local prefix, full-model prefix) of everything but the layers."""
        if isinstance(self.embeddings, str):
            pairs = [("embeddings.", self.embeddings + ".")]
        else:
            pairs = [(f"embeddings.{key}.", path + ".") for key, path in self.embeddings.items()]
        if self.norm is not None:
            pairs.append(("norm.", self.norm + "."))
        for task in self.tasks:
            pairs += [(f"head.{key}.", path + ".") for key, path in self.head_paths(task).items()]
        return tuple(pairs)

    def hf_name(self, shard_name: str) -> str:
        """Full-model parameter name for a shard-local one (``layers.3.x`` -> ``model.layers.3.x``)."""
        if shard_name.startswith("layers."):
            idx, _, tail = shard_name[len("layers."):].partition(".")
            return f"{self.layers}.{idx}.{tail}"
        for local, full in self._prefixes:
            if shard_name.startswith(local):
                return full + shard_name[len(local):]
        raise KeyError(shard_name)

    def hf_layer_pattern(self) -> str:
        """A regex matching the full-model prefix of any layer (``model\\.layers\\.\\d+\\.``)."""
        return re.escape(self.layers + ".") + r"\d+" + re.escape(".")

    @property
    def checkpoint_prefix(self) -> str:
        """The base model's prefix in a task checkpoint's keys (``model.``); a bare base-model checkpoint,
        such as all-MiniLM-L6-v2's, has its keys without it."""
        return self.layers.split(".")[0] + "."

    @property
    def tied_embedding_key(self) -> str:
        """The checkpoint key of the token embedding, which a tied LM head shares."""
        return self.hf_name(f"embeddings.{self.word_embeddings}.weight")

    # ---- forward ------------------------------------------------------------------------------------
    def position_limit(self, config) -> int | None:
        """The most positions an input may have, or None when positions are not a table."""
        return getattr(config, "max_position_embeddings", None) if self.learned_positions else None

    def word_embedding(self, embeddings):
        return embeddings.get_submodule(self.word_embeddings)

    def words(self, embeddings, input_ids, prompt):
        """Token embeddings with the soft prompt (b, n, d), when there is one, in front."""
        import torch

        words = self.word_embedding(embeddings)(input_ids)
        if prompt is None:
            return words
        return torch.cat([prompt.to(words.dtype), words], dim=1)

    def embed(self, embeddings, input_ids, prompt, token_type_ids, position_ids):
        """The hidden states entering the first layer (``prompt``: the soft prompt, or None)."""
        return self.words(embeddings, input_ids, prompt)

    def layer_kwargs(self, rotary, h, position_ids) -> dict:
        """Keyword arguments every layer's forward takes besides the hidden states and the mask."""
        return {}

    def attention_window(self, config, layer) -> int | None:
        """How many positions back (itself included) a query of ``layer`` sees; None = all."""
        return None

    def classify(self, head: dict, h, mask2d):
        """Sequence-classification logits from the normed last hidden states; decoders classify from the
        last attended token, as Hugging Face's ``*ForSequenceClassification`` does."""
        import torch

        positions = torch.arange(h.shape[1], device=h.device)
        last = (positions * mask2d.to(positions.dtype)).argmax(-1)
        pooled = h[torch.arange(h.shape[0], device=h.device), last]
        return head[self.classifier](pooled)


# ---- registry ---------------------------------------------------------------------------------------
_BY_NAME: dict[str, Family] = {}
_BY_MODEL_TYPE: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Serve ``family.model_types`` with ``family`` (called by each module of this package on import).

    Several objects may share a family name when they differ only in a model type's quirk (Qwen2 and
    Mistral are Llama with their own attention windows): each must then be a subclass of the first one
    registered under the name, which is the one ``get_family`` returns.
    """
    missing = [a for a in Family._REQUIRED if not getattr(family, a, None)]
    if missing:
        raise ModelError(f"model family {type(family).__name__} does not set {', '.join(missing)}")
    first = _BY_NAME.get(family.name, family)
    if first is not family and not isinstance(family, type(first)):
        raise ModelError(f"model family {family.name!r} is registered twice")
    taken = [t for t in family.model_types if _BY_MODEL_TYPE.get(t, family) is not family]
    if taken:
        raise ModelError(f"model type {taken[0]!r} is served by two families")
    _BY_NAME.setdefault(family.name, family)
    _BY_MODEL_TYPE.update(dict.fromkeys(family.model_types, family))
    return family


def model_types() -> tuple[str, ...]:
    return tuple(sorted(_BY_MODEL_TYPE))


def family_names() -> tuple[str, ...]:
    return tuple(sorted(_BY_NAME))


def family_for_model_type(model_type: str) -> Family:
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise ModelError(f"model type {model_type!r} is not supported (supported: {', '.join(model_types())})") \
            from None


def get_family(name: str) -> Family:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ModelError(f"unknown model family {name!r} (known: {', '.join(family_names())})") from None


# every module of this package is a family that registers itself; sorted, so the order never depends on
# the file system
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_module}")
