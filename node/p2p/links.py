"""The pipeline's links: keyed side sockets that each carry many pipeline messages.

Owns both ends of a link's life. The dialling side asks a peer for a link once over
``/bsns/pipeline/1`` (a ``KIND_LINK`` frame), dials the bulk port it is offered, and keeps idle links
per peer for the next message (closed after ``LINK_IDLE_DIALLER``); a peer that declines (bulk channel
off, bulk port unreachable) is sent to the stream path for ``LINK_RETRY_AFTER``. The listening side
answers the request with a bulk offer and serves the link on a thread of its own until the peer closes
it, it idles ``LINK_IDLE_LISTENER``, or a message on it fails; at most ``MAX_LINKS_PER_PEER`` per peer.
What a message on a link means is the pipeline service's business (``on_message``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from node.p2p import bulk, framing, wire
from node.p2p.bulkport import BulkPort
from node.p2p.errors import P2PError, PeerUnavailable, Unauthorized
from node.p2p.host import Host
from node.p2p.limits import (LINK_IDLE_DIALLER, LINK_IDLE_LISTENER, LINK_RETRY_AFTER, MAX_HEADER_RECORD,
                             MAX_IDLE_LINKS, MAX_LINKS_PER_PEER, PIPELINE_PROTOCOL, PIPELINE_WORKERS)

log = logging.getLogger(__name__)

OnMessage = Callable[[bulk.Link, str, bytes], bool]


class NoLink(Exception):
    """The peer does not offer links (or its bulk port is unreachable): use the stream."""


class LinkPool:
    def __init__(self, host: Host, port: BulkPort, on_message: OnMessage) -> None:
        self.host, self.port = host, port
        self._on_message = on_message        # (link, sender, header record) -> keep the link open
        self._idle: dict[str, list[bulk.Link]] = {}   # idle dialled links per peer
        self._declined: dict[str, float] = {}          # peer -> use the stream path until
        self._penalised: dict[str, float] = {}         # peer -> refuse its link requests until
        self._live: set[bulk.Link] = set()             # every open link, both sides
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            live, self._live, self._idle = list(self._live), set(), {}
        for link in live:
            link.close()

    # ------------------------------------------------------------------ dialling side
    def offered_by(self, peer_id: str) -> bool:
        """False while ``peer_id`` is known to decline links."""
        return self._declined.get(peer_id, 0.0) < time.monotonic()

    def declined(self, peer_id: str) -> None:
        self._declined[peer_id] = time.monotonic() + LINK_RETRY_AFTER

    def checkout(self, peer_id: str, timeout: float) -> tuple[bulk.Link, bool]:
        """An idle link to the peer (reused=True) or a new one; raises ``NoLink`` if the peer declines."""
        now = time.monotonic()
        with self._lock:
            idle = self._idle.get(peer_id, [])
            while idle:
                link = idle.pop()
                if now - link.last_used < LINK_IDLE_DIALLER:
                    return link, True
                self._live.discard(link)
                link.close()
        link = self.host.call(self._open, peer_id, timeout)
        with self._lock:
            if self.host.closing.is_set():
                link.close()
                raise P2PError("p2p node stopped")
            self._live.add(link)
        return link, False

    def checkin(self, peer_id: str, link: bulk.Link) -> None:
        link.last_used = time.monotonic()
        with self._lock:
            idle = self._idle.setdefault(peer_id, [])
            if not self.host.closing.is_set() and len(idle) < MAX_IDLE_LINKS:
                idle.append(link)
                return
            self._live.discard(link)
        link.close()

    def drop(self, link: bulk.Link) -> None:
        with self._lock:
            self._live.discard(link)
        link.close()

    async def _open(self, peer_id: str, timeout: float) -> bulk.Link:
        import trio

        frame = wire.Header(kind=wire.KIND_LINK, payload_len=0).encode()

        def dial(ip: str, port: int, token: bytes) -> Any:
            sock = bulk.dial(ip, port, token, timeout)
            if self.host.closing.is_set():  # the node closed while we dialled: nobody takes this socket
                sock.close()
                raise PeerUnavailable("p2p node stopped")
            return sock

        async def exchange(stream: Any, reused: bool) -> bulk.Link:
            status, body = await self.host.request(stream, reused, frame, timeout)
            if status == wire.ST_REFUSED:
                raise Unauthorized(f"peer {peer_id} refused us: {body.decode(errors='replace')}")
            if status != wire.ST_BULK:
                raise NoLink()
            port, token, key = bulk.decode_offer(body)
            ip = framing.remote_ip(stream)
            try:
                sock = await trio.to_thread.run_sync(dial, ip, port, token, abandon_on_cancel=True)
            except PeerUnavailable:
                raise NoLink() from None  # e.g. the bulk port is firewalled: use the stream
            return bulk.Link(sock, key, token, dialler=True)

        return await self.host.exchange(peer_id, PIPELINE_PROTOCOL, timeout, exchange)

    # ------------------------------------------------------------------ listening side
    def penalise(self, peer: str) -> None:
        """``peer`` sent a message it had no right to send: no links for it for a while. A link costs this
        node a thread and a keyed socket, and a refused message ends its link; on the stream path a
        refusal is one reply, so a peer that keeps sending refused messages is sent there."""
        with self._lock:
            self._penalised[peer] = time.monotonic() + LINK_RETRY_AFTER
            if len(self._penalised) > 4096:   # bounded: forget the expired ones
                now = time.monotonic()
                self._penalised = {p: t for p, t in self._penalised.items() if t > now}

    async def accept(self, stream: Any, sender: str, timeout: float) -> bool:
        """Key a link for ``sender`` and serve it on a thread of its own; False ends the stream."""
        import trio

        if self._penalised.get(sender, 0.0) > time.monotonic():
            await self.host.write(stream, wire.encode_reply(wire.ST_ERROR, b"no links for this peer now"), timeout)
            return True
        if not self.port.enabled:
            await self.host.write(stream, wire.encode_reply(wire.ST_ERROR, b"no bulk channel on this node"), timeout)
            return True
        with self._lock:
            mine = sum(1 for link in self._live if link.peer == sender)
        if mine >= MAX_LINKS_PER_PEER:  # an authorised peer still cannot pin unbounded threads here
            await self.host.write(stream, wire.encode_reply(wire.ST_ERROR, b"too many links from this peer"), timeout)
            return True
        token, key, pending = await self.port.offer(stream, timeout)
        sock = await trio.to_thread.run_sync(self.port.take, token, pending, timeout, abandon_on_cancel=True,
                                             limiter=self.host.pool("pipeline", PIPELINE_WORKERS))
        link = bulk.Link(sock, key, token, dialler=False)
        link.peer = sender
        with self._lock:
            if self.host.closing.is_set():
                link.close()
                return False
            self._live.add(link)
        threading.Thread(target=self._serve, args=(link, sender), daemon=True,
                         name=f"bsns-link-{sender[:10]}").start()
        return True

    def _serve(self, link: bulk.Link, sender: str) -> None:
        """Receive messages on a link until the peer closes it, it idles, or a message fails."""
        try:
            while not self.host.closing.is_set():
                link.sock.settimeout(LINK_IDLE_LISTENER)
                try:
                    raw = link.recv_record(limit=MAX_HEADER_RECORD)
                except (PeerUnavailable, OSError):
                    return  # closed or idle
                link.sock.settimeout(self.host.timeout)
                if not self._on_message(link, sender, raw):
                    return
        except Exception as exc:  # nothing escapes: the link just ends
            log.warning("pipeline link with %s ended: %s", sender, exc)
        finally:
            with self._lock:
                self._live.discard(link)
            link.close()
