"""Bottleneck adapters (Houlsby and Pfeiffer placement); ours, since PEFT has none."""

from node.tuners.bottleneck.config import BottleneckConfig, HoulsbyConfig, PfeifferConfig
from node.tuners.registry import Method, register_method

for _name, _config in (("houlsby", HoulsbyConfig), ("pfeiffer", PfeifferConfig)):
    register_method(Method(_name, _config, "node.tuners.bottleneck.model:inject_bottleneck", layer_local=True))

__all__ = ["BottleneckConfig", "HoulsbyConfig", "PfeifferConfig"]
