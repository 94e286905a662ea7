"""Errors raised while loading or running model shards."""

from node.errors import BsnsError


class ModelError(BsnsError):
    """A model id, shard range, task or shard input the user gave cannot be served."""
