"""The training layer's base error."""

from node.errors import BsnsError


class TrainError(BsnsError):
    """A training run that cannot start or continue (bad device, method, or model)."""
