"""Full fine-tuning as a method: every parameter of the shard trains, and is the "adapter" state.

Registered like the adapters so that a job's method is always one registry lookup: the trainer, the
exporter and the hash of the trained state treat full fine-tuning like any other method.
"""

from node.tuners.full.config import FullConfig
from node.tuners.registry import Method, register_method

register_method(Method("full", FullConfig, "node.tuners.full.model:inject_full", trains_base=True))

__all__ = ["FullConfig"]
