"""The gossip service: small signed announcements on per-topic GossipSub.

Owns the GossipSub router and pubsub (strict signing: every message carries its sender's key), the
per-topic validator that asks ``authorize(address, "gossip:" + topic)`` (a refused message is neither
delivered nor relayed), the publishing limits (``MAX_GOSSIP_BYTES``, ``GOSSIP_RATE`` per topic,
enforced by waiting) and a dispatch thread so a slow subscriber callback never stalls the host.
Counters: messages published, delivered, refused by the validator, dropped (sender not a bsns node).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from typing import Any, Callable

from node.p2p.errors import P2PError
from node.p2p.host import Host, Service
from node.p2p.identity import eth_address_from_peer_id
from node.p2p.limits import GOSSIP_PREFIX, GOSSIP_RATE, MAX_GOSSIP_BYTES

log = logging.getLogger(__name__)

Callback = Callable[[str, bytes], None]


def session_topic(session_id: int) -> str:
    """The GossipSub topic of one training session."""
    return f"/bsns/session/{session_id}"


class GossipService(Service):
    def __init__(self, host: Host) -> None:
        self.host = host
        self._subs: dict[str, list[Callback]] = {}
        self._sent: dict[str, deque] = {}
        self._lock = threading.Lock()
        self._callbacks: queue.Queue = queue.Queue()
        self._dispatch: threading.Thread | None = None
        self._pubsub: Any = None
        self.published = 0
        self.delivered = 0
        self.refused = 0
        self.dropped = 0

    def start(self) -> None:
        self._dispatch = threading.Thread(target=self._dispatch_loop, name="bsns-p2p-gossip", daemon=True)
        self._dispatch.start()

    def attach(self) -> list[Any]:
        from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
        from libp2p.pubsub.pubsub import Pubsub

        router = GossipSub(protocols=[PROTOCOL_ID_V11], degree=6, degree_low=4, degree_high=12,
                           heartbeat_interval=1, heartbeat_initial_delay=0.1)
        self._pubsub = Pubsub(self.host.lp2p, router, strict_signing=True)
        return [self._pubsub, router]

    async def started(self) -> None:
        await self._pubsub.wait_until_ready()

    def close(self) -> None:
        self._callbacks.put(None)
        if self._dispatch is not None:
            self._dispatch.join(timeout=5)

    # ------------------------------------------------------------------ blocking API
    def subscribe(self, topic: str, callback: Callback) -> None:
        """Call ``callback(sender_eth_address, data)`` for each authorised message on ``topic``."""
        with self._lock:
            first = topic not in self._subs
            self._subs.setdefault(topic, []).append(callback)
        if first:
            self.host.call(self._subscribe, topic)

    def publish(self, topic: str, data: bytes) -> None:
        """Publish a small announcement (signed with the node key); blocks to stay under the rate limit."""
        if len(data) > MAX_GOSSIP_BYTES:
            raise P2PError(f"gossip message of {len(data)} bytes exceeds the {MAX_GOSSIP_BYTES}-byte limit")
        with self._lock:
            sent = self._sent.setdefault(topic, deque())
            now = time.monotonic()
            while sent and now - sent[0] > 1.0:
                sent.popleft()
            wait = (sent[0] + 1.0 - now) if len(sent) >= GOSSIP_RATE else 0.0
            sent.append(now + wait)
        if wait > 0:
            time.sleep(wait)
        self.host.call(self._publish, topic, bytes(data))
        self.published += 1

    def topic_peers(self, topic: str) -> list[str]:
        """Ethereum addresses of connected peers subscribed to ``topic``."""
        return self.host.call(self._topic_peers, topic)

    # ------------------------------------------------------------------ in the trio thread
    async def _subscribe(self, topic: str) -> None:
        sub = await self._pubsub.subscribe(topic)
        self._pubsub.set_topic_validator(topic, self._validator(topic), True)
        self.host.spawn(self._pump, topic, sub)

    def _validator(self, topic: str) -> Callable[[Any, Any], Any]:
        async def validate(_forwarder: Any, msg: Any) -> bool:
            from libp2p.peer.id import ID

            try:
                addr = eth_address_from_peer_id(ID(msg.from_id))
                ok = await self.host.is_authorized(addr, GOSSIP_PREFIX + topic)
            except Exception:
                ok = False
            if not ok:
                self.refused += 1
            return ok
        return validate

    async def _pump(self, topic: str, sub: Any) -> None:
        from libp2p.peer.id import ID

        while True:
            try:
                msg = await sub.get()
            except Exception as exc:  # an error here must not take the node's nursery down
                log.warning("gossip subscription %s ended: %s", topic, exc)
                return
            try:
                sender = eth_address_from_peer_id(ID(msg.from_id))
            except P2PError:
                self.dropped += 1
                continue
            self._callbacks.put((topic, sender, bytes(msg.data)))

    async def _publish(self, topic: str, data: bytes) -> None:
        await self._pubsub.publish(topic, data)

    async def _topic_peers(self, topic: str) -> list[str]:
        out = []
        for p in self._pubsub.peer_topics.get(topic, set()):
            try:
                out.append(eth_address_from_peer_id(p))
            except P2PError:
                pass
        return sorted(out)

    def _dispatch_loop(self) -> None:
        """Run gossip callbacks on their own thread so a slow callback never stalls the host."""
        while True:
            item = self._callbacks.get()
            if item is None:
                return
            topic, sender, data = item
            self.delivered += 1
            for cb in list(self._subs.get(topic, [])):
                try:
                    cb(sender, data)
                except Exception:
                    log.exception("gossip callback for %s failed", topic)
