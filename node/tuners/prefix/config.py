"""Configuration of prefix tuning (Li & Liang 2021): trainable key/value prefixes in every held layer."""

from pydantic import Field

from node.tuners.base import TunerConfig


class PrefixConfig(TunerConfig):
    """num_virtual_tokens: prefix length p; init_std: std of the normal init of keys and values."""

    num_virtual_tokens: int = Field(10, gt=0)
    init_std: float = Field(0.02, ge=0)
