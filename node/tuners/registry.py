"""The registry of PEFT methods: name -> Method(config_class, inject). Sub-packages load lazily."""

from __future__ import annotations

from node.tuners.base import Method, TunerError

METHODS = ("houlsby", "pfeiffer", "lora", "ia3", "prefix", "prompt", "qlora")


def _build(name: str) -> Method:
    if name in ("houlsby", "pfeiffer"):
        from node.tuners.bottleneck import HoulsbyConfig, PfeifferConfig, inject_bottleneck

        return Method(name, HoulsbyConfig if name == "houlsby" else PfeifferConfig, inject_bottleneck)
    if name == "lora":
        from node.tuners.lora import LoraConfig, inject_lora

        return Method(name, LoraConfig, inject_lora)
    if name == "ia3":
        from node.tuners.ia3 import IA3Config, inject_ia3

        return Method(name, IA3Config, inject_ia3)
    if name == "prefix":
        from node.tuners.prefix import PrefixConfig, inject_prefix

        return Method(name, PrefixConfig, inject_prefix)
    if name == "prompt":
        from node.tuners.prompt import PromptConfig, inject_prompt

        return Method(name, PromptConfig, inject_prompt)
    from node.tuners.qlora import QLoraConfig, inject_qlora

    return Method(name, QLoraConfig, inject_qlora)


_CACHE: dict[str, Method] = {}


def get_method(name: str) -> Method:
    """The PEFT method called ``name`` (one of METHODS)."""
    if name not in METHODS:
        raise TunerError(f"unknown PEFT method {name!r} (known: {', '.join(METHODS)})")
    if name not in _CACHE:
        _CACHE[name] = _build(name)
    return _CACHE[name]
