"""Qwen2: Llama with sliding-window attention on some layers (those from ``max_window_layers`` on, when
``use_sliding_window``); each attention module knows its own window."""

from __future__ import annotations

from node.model.families import register_family
from node.model.families.llama import Llama


class Qwen2(Llama):
    model_types = ("qwen2",)

    def attention_window(self, config, layer) -> int | None:
        return getattr(layer.self_attn, "sliding_window", None)


register_family(Qwen2())
