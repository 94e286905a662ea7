"""Configuration of prompt tuning (Lester et al. 2021): a soft prompt prepended on the first shard."""

from typing import Literal

from pydantic import Field

from node.tuners.base import TunerConfig


class PromptConfig(TunerConfig):
    """num_virtual_tokens: soft-prompt length n; init: "vocab" copies the embeddings of n random
    vocabulary tokens (the paper's best simple choice), "normal" draws N(0, init_std)."""

    num_virtual_tokens: int = Field(20, gt=0)
    init: Literal["vocab", "normal"] = "vocab"
    init_std: float = Field(0.02, ge=0)
