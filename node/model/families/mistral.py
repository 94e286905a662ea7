"""Mistral: Llama with one sliding attention window (``config.sliding_window``) on every layer."""

from __future__ import annotations

from node.model.families import register_family
from node.model.families.llama import Llama


class Mistral(Llama):
    model_types = ("mistral",)

    def attention_window(self, config, layer) -> int | None:
        return getattr(config, "sliding_window", None)


register_family(Mistral())
