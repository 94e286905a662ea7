"""This node's end of the bulk channel, as the pipeline and blob services use it.

Owns the listening bulk port (``bulk.BulkListener``), the dialling side's kept sockets
(``bulk.DialPool``), the offer of a fresh token and key on an authorised libp2p stream, and single
keyed transfers in both directions with socket errors turned into ``PeerUnavailable``. The record
layer and the security argument are in ``node.p2p.bulk``; this module only wires it to the host.
"""

from __future__ import annotations

import socket
from typing import Any, Callable

from node.p2p import bulk, wire
from node.p2p.errors import P2PError, PeerUnavailable
from node.p2p.host import Host, Service
from node.p2p.limits import NO_BULK


class BulkPort(Service):
    def __init__(self, host: Host, *, bind_host: str, port: int = 0, announce_port: int | None = None,
                 threshold: int, enabled: bool = True) -> None:
        self.host = host
        self.enabled = enabled                       # offered to peers (single transfers and links)
        self.threshold = threshold if enabled else NO_BULK
        self._bind = (bind_host, port)
        self._announce_port = announce_port
        self.listener: bulk.BulkListener | None = None
        self.dialpool = bulk.DialPool()

    def start(self) -> None:
        try:
            self.listener = bulk.BulkListener(*self._bind)
        except OSError as exc:
            raise P2PError(f"cannot listen for the bulk channel on {self._bind[0]}:{self._bind[1]}: "
                           f"{exc.strerror or exc}") from None

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()   # unblocks handler threads stuck on bulk sockets
        self.dialpool.close()

    # ------------------------------------------------------------------ listening side
    async def offer(self, stream: Any, timeout: float) -> tuple[bytes, bytes, Any]:
        """Send ``ST_BULK`` with a fresh token and key on ``stream``; (token, key, pending) to ``take``."""
        token, key = bulk.new_secret()
        pending = self.listener.expect(token, timeout)
        port = self._announce_port or self.listener.port
        await self.host.write(stream, wire.encode_reply(wire.ST_BULK, bulk.encode_offer(port, token, key)), timeout)
        return token, key, pending

    def take(self, token: bytes, pending: Any, timeout: float) -> socket.socket:
        """The side socket that presented ``token`` (blocking; ``PeerUnavailable`` if none came in time)."""
        return self.listener.take(token, pending, timeout)

    def serve(self, token: bytes, pending: Any, timeout: float, transfer: Callable[[socket.socket], None]) -> None:
        """Run ``transfer`` on the socket that presents ``token``; the socket is kept for the peer's next
        token if the transfer succeeded (blocking: runs on a worker thread)."""
        sock = self.listener.take(token, pending, timeout)
        clean = False
        try:
            sock.settimeout(timeout)
            transfer(sock)
            clean = True
        finally:
            self.listener.release(sock, reusable=clean)

    # ------------------------------------------------------------------ dialling side
    def with_socket(self, ip: str, port: int, token: bytes, timeout: float,
                    transfer: Callable[[socket.socket], Any]) -> Any:
        """Run ``transfer`` on a side socket that presented ``token``, kept for reuse if it succeeds.

        A kept socket may have been closed by the peer while idle: that fails before the peer took
        the token, so the transfer is retried once on a fresh connection with the same token.
        """
        for attempt in range(2):
            sock, reused = self.dialpool.checkout(ip, port, token, timeout, fresh=attempt > 0)
            try:
                sock.settimeout(timeout)
                result = transfer(sock)
            except PeerUnavailable:
                self.dialpool.discard(sock)
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                self.dialpool.discard(sock)
                raise
            self.dialpool.checkin(ip, port, sock)
            return result
        raise PeerUnavailable("bulk channel unavailable")


def recv_guarded(sock: socket.socket, key: bytes, token: bytes, view: memoryview, hasher: Any) -> None:
    try:
        bulk.recv_records(sock, key, token, view, hasher)
    except (socket.timeout, TimeoutError):
        raise PeerUnavailable("bulk channel stalled") from None
    except OSError as exc:
        raise PeerUnavailable(f"bulk channel broke: {exc}") from None


def ack_guarded(sock: socket.socket, key: bytes, token: bytes) -> None:
    try:
        bulk.recv_ack(sock, key, token)
    except (socket.timeout, TimeoutError):
        raise PeerUnavailable("peer did not acknowledge the bulk transfer") from None
    except OSError as exc:
        raise PeerUnavailable(f"bulk channel broke before the acknowledgement: {exc}") from None


def send_guarded(sock: socket.socket, key: bytes, token: bytes, view: memoryview) -> None:
    try:
        bulk.send_records(sock, key, token, view)
    except OSError as exc:
        raise PeerUnavailable(f"bulk channel broke: {exc}") from None
