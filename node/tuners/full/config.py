"""Configuration of full fine-tuning: nothing beyond what every method accepts."""

from node.tuners.base import TunerConfig


class FullConfig(TunerConfig):
    """Every parameter trains; ``train_head`` has nothing left to add."""
