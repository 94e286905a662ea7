"""Configuration of LoRA (W' = W + (alpha / r) B A), applied through Hugging Face PEFT."""

from pydantic import Field

from node.tuners.base import TunerConfig


class LoraConfig(TunerConfig):
    """r: rank; alpha: scaling numerator; dropout: on the LoRA input; target_modules: module-name
    suffixes inside the held layers (None = the family's default, ``Family.lora_targets``: the attention's
    W_q and W_v, as in the LoRA paper)."""

    r: int = Field(8, gt=0)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] | None = None
