"""Turning a held layer's linear projections into bitsandbytes ``Linear4bit`` (NF4) modules.

bitsandbytes quantises when the weight moves to CUDA; PEFT's LoRA then wraps the 4-bit modules
(``peft.tuners.lora.bnb.Linear4bit``). GPT-2's ``Conv1D`` is converted to a transposed Linear first.
"""

from __future__ import annotations

import torch
from torch import nn


def to_linear4bit(module: nn.Module, compute_dtype: torch.dtype, double_quant: bool, device) -> nn.Module:
    import bitsandbytes as bnb
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, Conv1D):
        weight = module.weight.detach().t().contiguous()  # Conv1D stores (in, out)
        bias = module.bias
    else:
        weight, bias = module.weight.detach(), module.bias
    out_features, in_features = weight.shape
    q = bnb.nn.Linear4bit(in_features, out_features, bias=bias is not None, compute_dtype=compute_dtype,
                          compress_statistics=double_quant, quant_type="nf4", device="cpu")
    q.weight = bnb.nn.Params4bit(weight.to("cpu", torch.float16), requires_grad=False,
                                 compress_statistics=double_quant, quant_type="nf4")
    if bias is not None:
        q.bias = nn.Parameter(bias.detach().to("cpu", compute_dtype), requires_grad=False)
    return q.to(device)  # quantises here


def quantize_layer(layer: nn.Module, compute_dtype: torch.dtype, double_quant: bool, device) -> int:
    """Replace every Linear/Conv1D inside ``layer`` by its 4-bit form; returns how many."""
    from transformers.pytorch_utils import Conv1D

    targets = [(n, m) for n, m in layer.named_modules() if isinstance(m, (nn.Linear, Conv1D)) and n]
    for name, module in targets:
        parent_name, _, leaf = name.rpartition(".")
        parent = layer.get_submodule(parent_name) if parent_name else layer
        setattr(parent, leaf, to_linear4bit(module, compute_dtype, double_quant, device))
    return len(targets)
