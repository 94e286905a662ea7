"""Attaching a soft prompt to the first shard; every shard records its length to extend the mask.

Later shards hold no prompt parameters: their hidden states arrive already ``n`` positions longer,
and ``ModelShard`` pads a received original-length attention mask with ``n`` leading ones (or the
sender passes ``first_shard.extend_attention_mask(mask)``).
"""

from __future__ import annotations

import torch

from node.tuners.prompt.config import PromptConfig
from node.tuners.prompt.layer import SoftPrompt


def inject_prompt(shard, cfg: PromptConfig) -> None:
    n = cfg.num_virtual_tokens
    shard.num_virtual_tokens = n
    if not shard.is_first:
        return
    table = shard.word_embeddings.weight
    if cfg.init == "vocab":
        ids = torch.randint(0, table.shape[0], (n,))
        init = table.detach()[ids.to(table.device)]
    else:
        init = torch.randn(n, table.shape[1]) * cfg.init_std
    shard.prompt_encoder = SoftPrompt(init.to(dtype=table.dtype, device=table.device))
