"""LoRA layers come from Hugging Face PEFT (``peft.tuners.lora.layer``); nothing is written here.

Kept so that every method has the same shape (config, layer, model).
"""

from peft.tuners.lora.layer import Linear as LoraLinear  # noqa: F401  (re-exported for callers)
