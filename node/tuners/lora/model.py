"""Injecting LoRA into a shard with ``peft.inject_adapter_in_model`` (works on any nn.Module).

Only the held layers are searched for target modules, so the task head and embeddings stay as
they are (the head is made trainable by ``finish_injection``, like PEFT's ``modules_to_save``).
"""

from __future__ import annotations

from node.tuners.base import TunerError
from node.tuners.lora.config import LoraConfig

PEFT_ADAPTER_NAME = "default"


def peft_lora_config(shard, cfg: LoraConfig):
    import peft

    targets = list(cfg.target_modules or shard.arch.lora_targets)
    return peft.LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
        fan_in_fan_out=shard.arch.transposed_projections, bias="none",
    )


def _check_targets(shard, targets) -> None:
    if isinstance(targets, str):
        return  # a regular expression (our defaults); PEFT reports it if nothing matches
    names = [n for n, _ in shard.layers.named_modules()]
    for t in targets:
        if not any(n == t or n.endswith("." + t) for n in names):
            raise TunerError(f"field 'target_modules': no module named {t!r} in the layers of this shard")


def inject_peft(shard, peft_config) -> None:
    """Inject a PEFT config into the shard's layers only, keeping the shard's own freezing."""
    import peft

    _check_targets(shard, peft_config.target_modules)
    for idx, layer in shard.layers.items():
        try:
            peft.inject_adapter_in_model(peft_config, layer, adapter_name=PEFT_ADAPTER_NAME)
        except ValueError as exc:
            if "not found" in str(exc) or "Target modules" in str(exc):
                continue  # this layer has none of the targets; another layer of the shard has
            raise TunerError(f"cannot inject {type(peft_config).__name__}: {exc}".splitlines()[0]) from None


def inject_lora(shard, cfg: LoraConfig) -> None:
    inject_peft(shard, peft_lora_config(shard, cfg))
