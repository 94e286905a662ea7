"""What every PEFT method shares: config validation, freezing, adapter state.

A registered method's ``inject(shard, cfg)`` (``node.tuners.registry``) freezes the whole shard, adds its
trainable parameters in place and calls ``finish_injection``, which also unfreezes the task head of a
classification shard (a new head must learn, as PEFT's ``modules_to_save`` does) and records which
parameters are the adapter's.
``adapter_state_dict`` returns exactly those, under shard-local names that are the same on every
replica of a shard (layers are named by their global index).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

from node.errors import BsnsError


class TunerError(BsnsError):
    """An unknown PEFT method, a bad method config, or adapter state that does not fit the shard."""


class UnsupportedBackend(BsnsError):
    """The method needs a backend (e.g. CUDA + bitsandbytes) that this machine does not have."""


class TunerConfig(BaseModel):
    """Fields every method accepts.

    train_head: train the task head too; None = yes for a sequence-classification head (it starts
    untrained), no for a pretrained language-model head.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    train_head: bool | None = None

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise TunerError(_describe(type(self).__name__, exc)) from None


def _describe(what: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "config"
    return f"invalid {what} field {field!r}: {err['msg']}"


def validate_config(method: str, config_class: type[TunerConfig], cfg) -> TunerConfig:
    """A config instance from an instance, a mapping or None; errors name the field."""
    if isinstance(cfg, config_class):
        return cfg
    if cfg is None:
        cfg = {}
    if isinstance(cfg, BaseModel):
        cfg = cfg.model_dump()
    if not isinstance(cfg, dict):
        raise TunerError(f"{method} config must be a mapping of fields, got {type(cfg).__name__}")
    return config_class(**cfg)


def freeze(shard) -> None:
    for p in shard.parameters():
        p.requires_grad_(False)


def finish_injection(shard, method: str, cfg: TunerConfig) -> None:
    train_head = cfg.train_head
    if train_head is None:
        train_head = shard.task == "sequence-classification"
    if train_head and shard.is_last:
        # only the head's output layer learns (like PEFT's SEQ_CLS default), not a pretrained pooler before it
        for p in shard.head[shard.arch.head_layer(shard.task)].parameters():
            p.requires_grad_(True)
    shard.peft_method = method
    shard.peft_config = cfg
    shard.adapter_param_names = tuple(sorted(n for n, p in shard.named_parameters() if p.requires_grad))


def adapter_param_names(shard) -> tuple[str, ...]:
    names = getattr(shard, "adapter_param_names", None)
    if names is None:
        raise TunerError("no PEFT method has been injected into this shard")
    return names


def adapter_state_dict(shard) -> dict:
    """The adapter's parameters (copies, sorted by name), shard-local names."""
    params = dict(shard.named_parameters())
    return {n: params[n].detach().clone() for n in adapter_param_names(shard)}


def load_adapter_state_dict(shard, state: dict) -> None:
    """Copy ``state`` into the shard's adapter; the keys and shapes must match exactly."""
    import torch

    names = adapter_param_names(shard)
    missing = sorted(set(names) - set(state))
    extra = sorted(set(state) - set(names))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[0]})")
        if extra:
            parts.append(f"unexpected {len(extra)} (e.g. {extra[0]})")
        raise TunerError("adapter state does not fit this shard: " + ", ".join(parts))
    params = dict(shard.named_parameters())
    for n in names:
        if tuple(state[n].shape) != tuple(params[n].shape):
            raise TunerError(
                f"adapter state tensor {n} has shape {tuple(state[n].shape)}, the shard expects "
                f"{tuple(params[n].shape)}"
            )
    with torch.no_grad():
        for n in names:
            params[n].copy_(state[n].to(device=params[n].device, dtype=params[n].dtype))
