"""Model loading and sharding: a contiguous range of transformer layers runs forward and backward on its own.

Public API: ``load_shard``, ``shard_skeleton``, ``ModelShard``, ``model_layer_count``, ``model_family``,
``resolve_model_path``, ``ModelError``, ``DEFAULT_MODEL``; the model families (``node.model.families``: one
file per family, registered by name and by Hugging Face ``model_type``) through ``get_family``,
``family_for_model_type``, ``family_names`` and ``model_types``. Torch and transformers are imported lazily
so that importing this package stays cheap.
"""

from node.model.errors import ModelError
from node.model.families import TASKS, Family, family_for_model_type, family_names, get_family, model_types
from node.model.loading import (
    DEFAULT_MODEL,
    MINILM_ALIASES,
    load_shard,
    model_family,
    model_layer_count,
    resolve_model_path,
    shard_skeleton,
    weights_hash,
)

resolve_model = resolve_model_path  # short name used by node.train


def __getattr__(name):
    if name == "ModelShard":
        from node.model.shard import ModelShard

        return ModelShard
    raise AttributeError(name)


__all__ = [
    "DEFAULT_MODEL", "Family", "MINILM_ALIASES", "TASKS", "ModelError", "ModelShard", "family_for_model_type",
    "family_names", "get_family", "load_shard", "model_family", "model_layer_count", "model_types", "resolve_model",
    "resolve_model_path", "shard_skeleton", "weights_hash",
]
