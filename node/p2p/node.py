"""``P2PNode``: the p2p layer's front, one object the daemon drives from ordinary blocking code.

Composes a ``Host`` (the libp2p host in its trio thread: dialling, authorisation, pooled streams; see
``node.p2p.host`` for the library workarounds) with the services that register on it: the bulk port
(``node.p2p.bulkport``), the pipeline (``node.p2p.pipeline``, links in ``node.p2p.links``), blobs
and Kademlia (``node.p2p.blobs``) and gossip (``node.p2p.gossip``). It holds no protocol logic of
its own; each method forwards to the part that owns it.

Usage (all methods are blocking and thread-safe; call them from any thread but the node's own)::

    node = P2PNode(private_key, authorize=lambda addr, proto: addr in members).start()
    node.peer_id, node.eth_address, node.addrs          # identity and dialable multiaddrs
    node.connect(peer_id, ["/ip4/1.2.3.4/tcp/4001"])    # from the NodeRegistry or a bootstrap list
    node.add_peer(peer_id, addrs)                        # same, dialled lazily on first use
    node.send_tensor(peer_id, Tags(session, rnd, step, micro, "fwd"), tensor, wire_dtype="bfloat16")
    t = node.recv(Tags(session, rnd, step, micro, "fwd"), timeout=30)
    h = node.serve_blob(data)                            # "0x" + keccak-256
    data = node.fetch_blob(peer_id, h, timeout=60)       # verified before it is returned
    node.announce_blob(h); node.find_providers(h)        # Kademlia provider records
    node.subscribe(topic, lambda sender_address, msg: ...)
    node.publish(topic, b"small signed announcement")
    node.close()

``authorize(eth_address, protocol)`` is asked for each inbound stream with the protocol id, for each
message on a link, and for each gossip message with ``"gossip:" + topic``; a refused peer gets
``ST_REFUSED`` before a byte of its request is read. A pipeline message must then pass the admission
rule (``node.p2p.admission``: by default only a declared session's expected sender, within a window of
steps, under the job's frame bound) and the inbox's quotas, still before any payload. Pipeline messages travel on a *link* (a keyed
side socket of the bulk channel, set up once per peer over ``/bsns/pipeline/1``, then written and
read by ordinary threads: no trio hop per message). Without a link (the peer has ``bulk_channel=False``
or an unreachable bulk port), payloads of at least ``bulk_threshold`` bytes and all blobs of that
size take a single keyed bulk transfer; smaller ones go on the libp2p stream itself. See docs/p2p.md
for the security argument.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from node.p2p import wire
from node.p2p.blobs import BlobService
from node.p2p.bulkport import BulkPort
from node.p2p.gossip import GossipService, session_topic
from node.p2p.host import Authorize, Host
from node.p2p.identity import eth_address_from_private_key, keypair_from_private_key
from node.p2p.admission import Admission, Expectation
from node.p2p.inbox import Inbox
from node.p2p.limits import (ADAPTER_PROTOCOL, BLOB_MEMORY, BULK_THRESHOLD, KAD_PROTOCOL, MAX_BUFFERED,
                             PIPELINE_PROTOCOL)
from node.p2p.pipeline import PipelineService
from node.p2p.presence import PresenceService
from node.p2p.store import BlobStore

log = logging.getLogger(__name__)


class P2PNode:
    def __init__(self, private_key: bytes, authorize: Authorize, *,
                 listen: str = "/ip4/127.0.0.1/tcp/0", bulk_host: str | None = None, bulk_port: int = 0,
                 bulk_announce_port: int | None = None, bulk_threshold: int = BULK_THRESHOLD,
                 max_frame: int = wire.DEFAULT_MAX_FRAME, timeout: float = 30.0,
                 bootstrap: list[str] | None = None, max_buffered: int = MAX_BUFFERED, bulk_channel: bool = True,
                 links: bool = True, admission: Admission | None = None,
                 blob_source: Callable[[bytes], bytes | None] | None = None,
                 blob_memory: int = BLOB_MEMORY) -> None:
        key = bytes(private_key)
        self.eth_address = eth_address_from_private_key(key)
        self._bootstrap = list(bootstrap or [])
        self.host = Host(keypair_from_private_key(key), authorize, listen=listen, timeout=timeout,
                         max_frame=max_frame)
        self.bulkport = BulkPort(self.host, bind_host=bulk_host or _ip_of(listen), port=bulk_port,
                             announce_port=bulk_announce_port, threshold=bulk_threshold, enabled=bulk_channel)
        self.pipeline = PipelineService(self.host, self.bulkport, admission=admission, max_buffered=max_buffered,
                                        use_links=links)
        self.gossip = GossipService(self.host)
        self.blobs = BlobService(self.host, self.bulkport, BlobStore(blob_memory, blob_source))
        self.presence = PresenceService(self.host)
        # the order is the order of start, attach and close: the bulk port closes first (it unblocks
        # handler threads stuck on side sockets), and gossip's library services start before the DHT
        for service in (self.bulkport, self.pipeline, self.gossip, self.blobs, self.presence):
            self.host.register(service)

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 30.0) -> "P2PNode":
        self.host.start(timeout)
        for addr in self._bootstrap:
            try:
                pid = addr.rsplit("/p2p/", 1)[1]
                self.connect(pid, [addr.rsplit("/p2p/", 1)[0]])
            except Exception as exc:  # a dead bootstrap peer must not stop the node
                log.warning("bootstrap peer %s unreachable: %s", addr, exc)
        return self

    def __enter__(self) -> "P2PNode":
        return self if self.host.started else self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close links, side sockets and gossip, disconnect every peer and close the host; idempotent."""
        self.host.close()

    # ------------------------------------------------------------------ identity and peers
    @property
    def peer_id(self) -> str:
        return self.host.peer_id

    @property
    def addrs(self) -> list[str]:
        return self.host.addrs

    @property
    def timeout(self) -> float:
        return self.host.timeout

    @property
    def max_frame(self) -> int:
        return self.host.max_frame

    @property
    def bulk_threshold(self) -> int:
        return self.bulkport.threshold

    def add_peer(self, peer_id: str, addrs: list[str] | str) -> None:
        """Remember a peer's addresses (e.g. from the NodeRegistry); it is dialled on first use."""
        self.host.add_peer(peer_id, addrs)

    def connect(self, peer_id: str, addrs: list[str] | str) -> None:
        """Remember a peer's addresses and dial it now (raises ``PeerUnavailable`` if none answers)."""
        self.host.add_peer(peer_id, addrs)
        self.host.call(self.host.ensure_connected, peer_id, self.host.timeout)

    def connected_peers(self) -> list[str]:
        return self.host.call(self.host.connected_peers)

    def peer_generation(self, peer_id: str) -> int:
        """How many times this node's last connection to ``peer_id`` closed (``node.p2p.presence``): a
        change means the peer went away (and may be back, restarted) in between."""
        return self.presence.generation(peer_id)

    def peer_gone_for(self, peer_id: str) -> float | None:
        """Seconds since the peer's last connection here closed while none is open; None while connected or
        never seen to leave."""
        return self.presence.gone_for(peer_id)

    # ------------------------------------------------------------------ pipeline
    @property
    def inbox(self) -> Inbox:
        return self.pipeline.inbox

    def send_tensor(self, peer_id: str, tags: wire.Tags, tensor: Any, *, wire_dtype: str | None = None,
                    with_hash: bool = False, timeout: float | None = None) -> bool:
        """Send a tensor (or a dict of named tensors, as one message) for ``tags``.

        True once the peer holds it; False if the peer dropped it as stale or duplicate.
        """
        return self.pipeline.send(peer_id, tags, tensor, wire_dtype=wire_dtype, with_hash=with_hash,
                                  timeout=timeout)

    def recv(self, tags: wire.Tags, timeout: float | None = None) -> Any:
        """What was sent for exactly ``tags`` (a tensor or a dict of tensors), waiting up to ``timeout``.

        Consuming it makes older (round, step) messages of that session and direction stale.
        """
        return self.recv_with_sender(tags, timeout)[0]

    def recv_with_sender(self, tags: wire.Tags, timeout: float | None = None) -> tuple[Any, str]:
        """Like ``recv``, also returning the sender's Ethereum address."""
        return self.inbox.take(tags, self.host.timeout if timeout is None else timeout)

    def advance(self, session: int, round_: int, step: int, direction: str = "fwd") -> None:
        """Tell the inbox the trainer is at (round, step): anything older is dropped from now on."""
        self.inbox.advance(session, direction, round_, step)

    def expect_session(self, session: int, round_: int, senders: dict[str, str], max_frame: int,
                       micro_batches: int | None = None) -> None:
        """Declare what ``session`` may send this node in ``round_`` (and the next): per direction the
        only address that sends it, and the largest frame the job can produce. Under the default
        ``SessionAdmission`` nothing else is taken (``PipelineTransport`` declares this itself)."""
        self.pipeline.expect(Expectation(session, round_, dict(senders), max_frame, micro_batches))

    def forget_session(self, session: int) -> None:
        """The session is over on this node: its messages are refused from now on."""
        self.pipeline.forget(session)
        self.inbox.reset(session)

    def reset_session(self, session: int) -> None:
        """Forget the inbox state of ``session`` so a retried round's steps are accepted again."""
        self.inbox.reset(session)

    # ------------------------------------------------------------------ blobs
    @property
    def store(self) -> BlobStore:
        return self.blobs.store

    def serve_blob(self, data: bytes, pin: bool = False) -> str:
        """Serve ``data`` on ``/bsns/adapter/1``; returns its ``0x`` keccak-256 hash. Unpinned blobs may be
        evicted from memory past ``blob_memory`` (and are then read back from ``blob_source``, if any)."""
        return self.blobs.serve(data, pin)

    def fetch_blob(self, peer_id: str, blob_hash: str | bytes, timeout: float | None = None,
                   max_size: int | None = None) -> bytes:
        """Fetch a blob by hash from a peer; raises ``HashMismatch`` unless its keccak-256 matches, and
        ``WireError`` if the peer announces more than ``max_size`` bytes (default: the frame limit)."""
        return self.blobs.fetch(peer_id, blob_hash, timeout, max_size)

    def announce_blob(self, blob_hash: str | bytes) -> bool:
        """Publish a Kademlia provider record "this node serves ``blob_hash``" (blob must be served here)."""
        return self.blobs.announce(blob_hash)

    def find_providers(self, blob_hash: str | bytes, timeout: float = 10.0) -> list[str]:
        """Peer ids with a provider record for ``blob_hash`` (their addresses go into the address book)."""
        return self.blobs.find_providers(blob_hash, timeout)

    # ------------------------------------------------------------------ gossip
    def subscribe(self, topic: str, callback: Callable[[str, bytes], None]) -> None:
        """Call ``callback(sender_eth_address, data)`` for each authorised message on ``topic``."""
        self.gossip.subscribe(topic, callback)

    def publish(self, topic: str, data: bytes) -> None:
        """Publish a small announcement (signed with the node key); blocks to stay under the rate limit."""
        self.gossip.publish(topic, data)

    def topic_peers(self, topic: str) -> list[str]:
        """Ethereum addresses of connected peers subscribed to ``topic``."""
        return self.gossip.topic_peers(topic)

    # ------------------------------------------------------------------ counters
    @property
    def refused(self) -> int:
        """Pipeline messages and adapter/Kademlia streams refused for lack of authorisation."""
        return self.pipeline.refused + self.blobs.refused

    @property
    def bytes_sent(self) -> int:
        return self.pipeline.bytes_sent + self.blobs.bytes_sent

    @property
    def bytes_received(self) -> int:
        return self.pipeline.bytes_received + self.blobs.bytes_received

    def bytes_moved(self) -> tuple[int, int]:
        """(sent, received) payload bytes of tensors and blobs so far."""
        return self.bytes_sent, self.bytes_received


def _ip_of(maddr: str) -> str:
    """The IP to bind the bulk listener to: the libp2p listen IP, or every interface for a DNS name."""
    parts = maddr.split("/")
    return parts[2] if len(parts) > 2 and parts[1] in ("ip4", "ip6") else "0.0.0.0"


__all__ = ["P2PNode", "PIPELINE_PROTOCOL", "ADAPTER_PROTOCOL", "KAD_PROTOCOL", "session_topic"]
