"""Configuration of IA3 (learned rescaling of keys, values and the feed-forward activation), through PEFT."""

from pydantic import Field

from node.tuners.base import TunerConfig


class IA3Config(TunerConfig):
    """target_modules: module-name suffixes to rescale (None = the family's default, ``Family.ia3_targets`` and
    ``ia3_feedforward``: keys, values and the feed-forward's second projection, as in the IA3 paper);
    feedforward_modules: the subset whose input (not output) is rescaled; dropout is not part of IA3."""

    target_modules: tuple[str, ...] | None = None
    feedforward_modules: tuple[str, ...] = Field(default=())
