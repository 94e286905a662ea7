"""Tiny random-weight models of every supported family, saved as HF checkpoints, and a chain runner."""

from __future__ import annotations

import torch

N_LAYERS = 4
VOCAB = 64
_LLAMA_LIKE = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                   max_position_embeddings=64)
# One tiny configuration per supported model type; the shard and tuner exactness tests run over all of them
# (tests/model/test_families.py checks that every registered model type has one).
TINY_CONFIGS = {
    "bert": dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64),
    "gpt2": dict(n_embd=32, n_head=4, n_positions=64),
    "llama": _LLAMA_LIKE,
    # sliding window on the upper layers only: exercises per-layer masks
    "qwen2": dict(use_sliding_window=True, sliding_window=3, max_window_layers=2, **_LLAMA_LIKE),
    "mistral": dict(sliding_window=3, **_LLAMA_LIKE),
    "phi3": dict(sliding_window=3, bos_token_id=1, eos_token_id=2, **_LLAMA_LIKE),
}
MODEL_TYPES = tuple(TINY_CONFIGS)


def tiny_config(model_type: str):
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, vocab_size=VOCAB, num_hidden_layers=N_LAYERS, pad_token_id=0,
                                **TINY_CONFIGS[model_type])


def save_tiny(root, model_type: str, task: str, seed: int = 0) -> str:
    """Save a random tiny model for ``task`` under root and return its directory."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cfg = tiny_config(model_type)
    torch.manual_seed(seed)
    if task == "sequence-classification":
        cfg.num_labels = 3
        model = AutoModelForSequenceClassification.from_config(cfg)
    else:
        model = AutoModelForCausalLM.from_config(cfg)
    path = root / f"{model_type}-{task}"
    model.save_pretrained(path)
    return str(path)


def batch(seed: int = 1, b: int = 3, length: int = 7):
    """input_ids and a right-padded attention mask (pad id 0 where the mask is 0)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (b, length), generator=g)
    mask = torch.ones(b, length, dtype=torch.long)
    mask[1, length - 2:] = 0
    mask[2, length - 4:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return ids, mask


def run_chain(shards, ids, mask, grad_out: torch.Tensor | None = None, loss_fn=None):
    """Forward through shards as separate nodes would (detached hand-offs, later shards get the
    first shard's extended mask), then backward from the end with ``grad_out`` (default: ones),
    passing each received tensor's gradient upstream; with ``loss_fn`` the last shard backpropagates
    ``loss_fn(output)`` instead. Returns (output, received tensors)."""
    later_mask = shards[0].extend_attention_mask(mask)
    received, outputs = [], []
    for i, shard in enumerate(shards):
        if i == 0:
            out = shard(input_ids=ids, attention_mask=mask)
        else:
            h = outputs[-1].detach().requires_grad_()
            received.append(h)
            out = shard(hidden_states=h, attention_mask=later_mask)
        outputs.append(out)
    grad = torch.ones_like(outputs[-1]) if grad_out is None else grad_out
    for i in range(len(shards) - 1, -1, -1):
        if i == len(shards) - 1 and loss_fn is not None:
            loss_fn(outputs[i]).backward()
        else:
            outputs[i].backward(grad)
        if i > 0:
            grad = received[i - 1].grad
    return outputs[-1].detach(), received
