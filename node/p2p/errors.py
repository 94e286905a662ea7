"""Errors of the p2p layer: each is a ``BsnsError`` with a one-line message."""

from node.errors import BsnsError


class P2PError(BsnsError):
    """Any failure in the p2p layer the caller can act on."""


class WireError(P2PError):
    """A frame that does not parse: bad magic, unknown version/kind/dtype, or over the size limit."""


class Unauthorized(P2PError):
    """The remote peer refused us, or we refused it: its address is not authorised for the protocol."""


class HashMismatch(P2PError):
    """Received bytes whose keccak-256 differs from the hash they were requested or announced by."""


class IntegrityError(P2PError):
    """A bulk-channel record failed authentication (corrupted or tampered bytes)."""


class PeerUnavailable(P2PError):
    """The peer could not be dialled, went away mid-transfer, or did not answer in time."""


class PeerLeft(PeerUnavailable):
    """The peer's connection closed while a message to or from it was still due (it died or restarted)."""


class NotFound(P2PError):
    """The peer does not serve the requested blob."""
