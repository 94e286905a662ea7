"""Phi-3: Llama's layout and rotary positions with fused projections (``qkv_proj``, ``gate_up_proj``), so
the tuners target other modules: a family of its own that shares Llama's code. Every layer attends within
``config.sliding_window`` positions when the config sets one."""

from __future__ import annotations

from node.model.families import register_family
from node.model.families.llama import Llama


class Phi3(Llama):
    name = "phi3"
    model_types = ("phi3",)

    lora_targets = ("qkv_proj",)  # W_q and W_v live in the fused projection (with W_k), as in GPT-2's c_attn
    ia3_targets = r"self_attn\.qkv_proj|mlp\.down_proj"

    def attention_window(self, config, layer) -> int | None:
        return getattr(config, "sliding_window", None)


register_family(Phi3())
