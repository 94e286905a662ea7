"""Configuration of LoRA (W' = W + (alpha / r) B A), applied through Hugging Face PEFT."""

from pydantic import Field

from node.tuners.base import TunerConfig

# per family: the attention projections LoRA adapts by default (the LoRA paper's W_q, W_v choice)
DEFAULT_TARGETS = {
    "bert": ("query", "value"),
    "gpt2": ("c_attn",),
    "llama": ("q_proj", "v_proj"),
}


class LoraConfig(TunerConfig):
    """r: rank; alpha: scaling numerator; dropout: on the LoRA input; target_modules: module-name
    suffixes inside the held layers (None = the family default)."""

    r: int = Field(8, gt=0)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] | None = None
