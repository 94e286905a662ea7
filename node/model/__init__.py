"""Model loading and sharding: a contiguous range of transformer layers runs forward and backward on its own.

Public API: ``load_shard``, ``ModelShard``, ``model_layer_count``, ``model_family``,
``resolve_model_path``, ``ModelError``, ``DEFAULT_MODEL``. Torch and transformers are imported
lazily so that importing this package stays cheap.
"""

from node.model.errors import ModelError
from node.model.families import FAMILIES, TASKS
from node.model.loading import (
    DEFAULT_MODEL,
    MINILM_ALIASES,
    load_shard,
    model_family,
    model_layer_count,
    resolve_model_path,
    weights_hash,
)

resolve_model = resolve_model_path  # short name used by node.train


def __getattr__(name):
    if name == "ModelShard":
        from node.model.shard import ModelShard

        return ModelShard
    raise AttributeError(name)


__all__ = [
    "DEFAULT_MODEL", "FAMILIES", "MINILM_ALIASES", "TASKS", "ModelError", "ModelShard", "load_shard",
    "model_family", "model_layer_count", "resolve_model", "resolve_model_path", "weights_hash",
]
