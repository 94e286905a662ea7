"""Peer-to-peer layer on libp2p: identity, authorisation, wire format, pipeline/adapter/gossip protocols.

The entry point is ``P2PNode`` (``node.p2p.node``), a host (``node.p2p.host``) with the services that
register on it; see docs/p2p.md. Importing this package is cheap: libp2p, trio and torch load when a
node starts.
"""

from node.p2p.errors import (HashMismatch, IntegrityError, NotFound, P2PError, PeerUnavailable,
                             Unauthorized, WireError)
from node.p2p.identity import (eth_address_from_peer_id, eth_address_from_private_key,
                               eth_address_from_public_key, keypair_from_private_key,
                               peer_id_from_private_key)
from node.p2p.inbox import RecvTimeout
from node.p2p.gossip import session_topic
from node.p2p.limits import ADAPTER_PROTOCOL, PIPELINE_PROTOCOL
from node.p2p.node import P2PNode
from node.p2p.transport import PipelineTransport
from node.p2p.wire import Tags

__all__ = [
    "P2PNode", "PipelineTransport", "Tags", "PIPELINE_PROTOCOL", "ADAPTER_PROTOCOL", "session_topic",
    "P2PError", "WireError", "Unauthorized", "HashMismatch", "IntegrityError", "PeerUnavailable",
    "NotFound", "RecvTimeout",
    "peer_id_from_private_key", "eth_address_from_peer_id", "eth_address_from_private_key",
    "eth_address_from_public_key", "keypair_from_private_key",
]
