"""Llama: a decoder with rotary position embeddings, computed once per forward and handed to every layer.

Llama-shaped model types with a quirk of their own subclass ``Llama`` in their own file (``qwen2.py``,
``mistral.py``) and keep Llama's family name: their parameter names, checkpoints and tuner targets are
Llama's, and the name is what exports record. A model type whose tuner targets differ is a family of its own.
"""

from __future__ import annotations

from node.model.families import Family, register_family


class Llama(Family):
    name = "llama"
    model_types = ("llama",)

    embeddings = {"embed_tokens": "model.embed_tokens"}
    layers = "model.layers"
    norm = "model.norm"
    rotary = "model.rotary_emb"
    word_embeddings = "embed_tokens"

    lora_targets = ("q_proj", "v_proj")
    ia3_targets = r"self_attn\.(k_proj|v_proj)|mlp\.down_proj"
    ia3_feedforward = r"mlp\.down_proj"
    bottleneck_points = {"attn": ("self_attn.o_proj", "input_layernorm"),
                         "ffn": ("mlp.down_proj", "post_attention_layernorm")}

    def layer_kwargs(self, rotary, h, position_ids) -> dict:
        return {"position_embeddings": rotary(h, position_ids=position_ids), "position_ids": position_ids}


register_family(Llama())
