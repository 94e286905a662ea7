"""Bottleneck adapters (Houlsby and Pfeiffer placement); ours, since PEFT has none."""

from node.tuners.bottleneck.config import BottleneckConfig, HoulsbyConfig, PfeifferConfig
from node.tuners.bottleneck.layer import BottleneckAdapter
from node.tuners.bottleneck.model import inject_bottleneck, injection_points

__all__ = ["BottleneckAdapter", "BottleneckConfig", "HoulsbyConfig", "PfeifferConfig", "inject_bottleneck",
           "injection_points"]
