"""Configuration of QLoRA: LoRA over a frozen base whose layer weights are stored in 4-bit NF4."""

from typing import Literal

from node.tuners.lora.config import LoraConfig


class QLoraConfig(LoraConfig):
    """LoRA's fields plus compute_dtype (the dtype the 4-bit weights are dequantised to for matmuls)
    and double_quant (also quantise the quantisation constants)."""

    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    double_quant: bool = True
