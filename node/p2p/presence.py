"""Which peers this node has seen go away: the libp2p connection events, kept per peer.

Owns one count per peer of the times its last connection to this node closed (``generation``) and, while
no connection to it is open, since when (``gone_for``). A daemon killed with SIGKILL has its sockets closed
by the kernel, so its peers learn it within a fraction of a second; this is what lets a pipeline neighbour
stop waiting for its messages (``node.p2p.transport``) and a round sync stop waiting for its update, instead
of waiting out their timeouts. A peer this node never connected to is unknown, not gone.

Only the last connection counts: libp2p may hold two connections to one peer (both dialled at once) and
close one of them, which is not the peer going away.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from node.p2p.host import Host, Service


class PresenceService(Service):
    def __init__(self, host: Host) -> None:
        self.host = host
        self._lock = threading.Lock()
        self._generation: dict[str, int] = {}      # peer id -> times its last connection closed
        self._gone_since: dict[str, float] = {}    # peer id -> monotonic time of that, while none is open

    def attach(self) -> list[Any]:
        self.host.lp2p.get_network().register_notifee(_watch(self))
        return []

    # ------------------------------------------------------------------ events (trio thread)
    def connected(self, peer_id: str) -> None:
        with self._lock:
            self._gone_since.pop(peer_id, None)

    def disconnected(self, peer_id: str, still_open: bool) -> None:
        if still_open:
            return
        with self._lock:
            self._generation[peer_id] = self._generation.get(peer_id, 0) + 1
            self._gone_since[peer_id] = time.monotonic()

    # ------------------------------------------------------------------ queries (any thread)
    def generation(self, peer_id: str) -> int:
        """How many times this node saw its last connection to ``peer_id`` close (0: never)."""
        with self._lock:
            return self._generation.get(peer_id, 0)

    def gone_for(self, peer_id: str) -> float | None:
        """Seconds since this node's last connection to ``peer_id`` closed, while none is open again; None
        while connected, or if no connection to it ever closed here."""
        with self._lock:
            since = self._gone_since.get(peer_id)
        return None if since is None else time.monotonic() - since


def _watch(presence: PresenceService) -> Any:
    """A libp2p notifee that forwards connection events to ``presence`` (libp2p is imported lazily)."""
    from libp2p.abc import INotifee

    class Watch(INotifee):
        async def connected(self, network: Any, conn: Any) -> None:
            presence.connected(conn.muxed_conn.peer_id.to_base58())

        async def disconnected(self, network: Any, conn: Any) -> None:
            pid = conn.muxed_conn.peer_id
            presence.disconnected(pid.to_base58(), still_open=bool(network.connections.get(pid)))

        async def opened_stream(self, network: Any, stream: Any) -> None:
            pass

        async def closed_stream(self, network: Any, stream: Any) -> None:
            pass

        async def listen(self, network: Any, multiaddr: Any) -> None:
            pass

        async def listen_close(self, network: Any, multiaddr: Any) -> None:
            pass

    return Watch()
