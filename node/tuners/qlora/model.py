"""QLoRA injection: quantise the held layers to 4-bit NF4, then inject LoRA through PEFT.

Needs CUDA and bitsandbytes; anywhere else ``UnsupportedBackend`` says so before anything changes.
"""

from __future__ import annotations

from node.tuners.base import UnsupportedBackend
from node.tuners.lora.model import inject_peft, peft_lora_config
from node.tuners.qlora.config import QLoraConfig


def check_backend(shard) -> None:
    import torch

    device = next(shard.parameters()).device
    if device.type != "cuda" or not torch.cuda.is_available():
        raise UnsupportedBackend(
            f"qlora needs a CUDA device (4-bit NF4 weights via bitsandbytes); this shard is on {device.type}"
            " - use method 'lora' here"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UnsupportedBackend(
            "qlora needs the bitsandbytes package for 4-bit NF4 weights: pip install bitsandbytes"
        ) from None


def inject_qlora(shard, cfg: QLoraConfig) -> None:
    import torch

    from node.tuners.qlora.layer import quantize_layer

    check_backend(shard)
    device = next(shard.parameters()).device
    compute_dtype = getattr(torch, cfg.compute_dtype)
    for layer in shard.layers.values():
        quantize_layer(layer, compute_dtype, cfg.double_quant, device)
    peft_cfg = peft_lora_config(shard, cfg)
    peft_cfg.fan_in_fan_out = False  # transposed (Conv1D) projections are plain (out, in) Linear4bit now
    inject_peft(shard, peft_cfg)
