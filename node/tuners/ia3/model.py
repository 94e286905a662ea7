"""Injecting IA3 into a shard's layers with ``peft.inject_adapter_in_model`` (same path as LoRA)."""

from __future__ import annotations

from node.tuners.base import TunerError
from node.tuners.ia3.config import IA3Config
from node.tuners.lora.model import inject_peft


def peft_ia3_config(shard, cfg: IA3Config):
    import peft

    if cfg.target_modules is None:
        targets, ff = shard.arch.ia3_targets, shard.arch.ia3_feedforward
    else:
        targets, ff = list(cfg.target_modules), list(cfg.feedforward_modules)
        stray = [m for m in ff if m not in targets]
        if stray:
            raise TunerError(f"field 'feedforward_modules': {stray[0]!r} is not in target_modules")
    return peft.IA3Config(target_modules=targets, feedforward_modules=ff,
                          fan_in_fan_out=shard.arch.transposed_projections)


def inject_ia3(shard, cfg: IA3Config) -> None:
    inject_peft(shard, peft_ia3_config(shard, cfg))
