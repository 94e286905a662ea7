"""GPT-2: a decoder with learned absolute positions and fused, transposed (``Conv1D``) projections."""

from __future__ import annotations

from node.model.families import Family, register_family


class Gpt2(Family):
    name = "gpt2"
    model_types = ("gpt2",)
    learned_positions = True

    embeddings = {"wte": "transformer.wte", "wpe": "transformer.wpe", "drop": "transformer.drop"}
    layers = "transformer.h"
    norm = "transformer.ln_f"
    word_embeddings = "wte"

    lora_targets = ("c_attn",)  # queries, keys and values in one projection
    ia3_targets = r"attn\.c_attn|mlp\.c_proj"
    ia3_feedforward = r"mlp\.c_proj"
    bottleneck_points = {"attn": ("attn.c_proj", "ln_1"), "ffn": ("mlp.c_proj", "ln_2")}
    transposed_projections = True

    def embed(self, embeddings, input_ids, prompt, token_type_ids, position_ids):
        import torch

        words = self.words(embeddings, input_ids, prompt)
        if position_ids is None:
            position_ids = torch.arange(words.shape[1], device=words.device)[None]
        return embeddings["drop"](words + embeddings["wpe"](position_ids))


register_family(Gpt2())
