"""Configuration of bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020 placement)."""

from typing import Literal

from pydantic import Field

from node.tuners.base import TunerConfig


class BottleneckConfig(TunerConfig):
    """bottleneck_size: m, the down-projection width; non_linearity: φ; init_std: std of the
    down-projection's normal init (the up-projection starts at zero, so a fresh adapter is the
    identity); skip_layers: leave out layers with global index < k; train_layer_norm: also train the
    layer norm that belongs to each wrapped sub-layer (as Houlsby et al. do)."""

    placement: Literal["houlsby", "pfeiffer"] = "houlsby"
    bottleneck_size: int = Field(64, gt=0)
    non_linearity: Literal["relu", "gelu", "tanh", "silu"] = "relu"
    init_std: float = Field(1e-2, ge=0)
    skip_layers: int = Field(0, ge=0)
    train_layer_norm: bool = True


class HoulsbyConfig(BottleneckConfig):
    """Adapters after the attention and after the feed-forward sub-layer."""

    placement: Literal["houlsby"] = "houlsby"


class PfeifferConfig(BottleneckConfig):
    """One adapter per layer, after the feed-forward sub-layer."""

    placement: Literal["pfeiffer"] = "pfeiffer"
