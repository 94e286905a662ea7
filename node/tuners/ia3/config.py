"""Configuration of IA3 (learned rescaling of keys, values and the feed-forward activation), through PEFT."""

from pydantic import Field

from node.tuners.base import TunerConfig

# per family, as regular expressions over module names inside one layer (PEFT full-matches a string
# pattern): keys, values and the feed-forward's second projection, as in the IA3 paper
DEFAULT_TARGETS = {
    "bert": r"attention\.self\.(key|value)|output\.dense",
    "gpt2": r"attn\.c_attn|mlp\.c_proj",
    "llama": r"self_attn\.(k_proj|v_proj)|mlp\.down_proj",
}
DEFAULT_FEEDFORWARD = {
    "bert": r"output\.dense",
    "gpt2": r"mlp\.c_proj",
    "llama": r"mlp\.down_proj",
}


class IA3Config(TunerConfig):
    """target_modules: module-name suffixes to rescale (None = family default); feedforward_modules:
    the subset whose input (not output) is rescaled; dropout is not part of IA3."""

    target_modules: tuple[str, ...] | None = None
    feedforward_modules: tuple[str, ...] = Field(default=())
