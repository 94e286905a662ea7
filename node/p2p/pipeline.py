"""The pipeline service: tensor messages (activations, gradients) on ``/bsns/pipeline/1``.

Owns sending a message (on a link when the peer offers one, else on the libp2p stream with large
payloads on a single keyed bulk transfer), receiving one on either path into the inbox (authorisation
asked per message, then the admission rule and the inbox's stale/duplicate/quota checks, all at the
header before a byte of payload is read or allocated; a declared hash checked), asking again when a
receiver says "not now" (``ST_RETRY``), and the service's counters: payload bytes sent and received,
refused messages; ``dropped`` is the inbox's. Links themselves (keying, pooling, their threads) are
``node.p2p.links``; who may send what is ``node.p2p.admission``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from typing import Any, Callable

from node.hashing import keccak256, keccak_hasher
from node.p2p import bulk, framing, wire
from node.p2p.bulkport import BulkPort, ack_guarded, recv_guarded, send_guarded
from node.p2p.errors import HashMismatch, P2PError, PeerUnavailable, Unauthorized, WireError
from node.p2p.admission import Admission, Expectation, Refusal, SessionAdmission
from node.p2p.gate import RefusalBudget
from node.p2p.host import Host, Service
from node.p2p.identity import eth_address_from_peer_id
from node.p2p.inbox import Inbox
from node.p2p.limits import (IDLE_STREAM_TIMEOUT, MAX_BUFFERED, MAX_HEADER_RECORD, PIPELINE_PROTOCOL,
                             PIPELINE_WORKERS, RETRY_BACKOFF, STREAM_CHUNK)
from node.p2p.links import LinkPool, NoLink

log = logging.getLogger(__name__)


class _NotNow(Exception):
    """The receiver said ``ST_RETRY``: nothing was taken, ask again later."""


class PipelineService(Service):
    def __init__(self, host: Host, port: BulkPort, *, admission: Admission | None = None,
                 max_buffered: int = MAX_BUFFERED, use_links: bool = True) -> None:
        self.host, self.port = host, port
        self.admission = admission if admission is not None else SessionAdmission()
        self.inbox = Inbox(max_buffered)
        self.links = LinkPool(host, port, self._link_message)
        self.use_links = use_links      # send on links when peers offer them
        self.bytes_sent = 0
        self.bytes_received = 0
        self.refused = 0                # messages refused for lack of authorisation
        self.budget = RefusalBudget()   # refused messages per peer before it is sent away
        self.sent_away = 0

    @property
    def dropped(self) -> int:
        """Messages dropped as stale or duplicate."""
        return self.inbox.dropped

    def attach(self) -> list[Any]:
        self.host.handle(PIPELINE_PROTOCOL, self._on_stream)
        return []

    def close(self) -> None:
        self.inbox.close()
        self.links.close()

    # ------------------------------------------------------------------ admission
    def expect(self, exp: Expectation) -> None:
        """Declare who sends this node which messages of a session (see ``node.p2p.admission``)."""
        self.admission.expect(exp)

    def forget(self, session: int) -> None:
        self.admission.forget(session)

    def _screen(self, sender: str, header: wire.Header) -> Refusal | None:
        """The admission rule, then the inbox (which reserves the tags if it takes the message)."""
        tags = header.tags
        refusal = self.admission.check(sender, header, self.inbox.watermark(tags.session, tags.direction))
        if refusal is None:
            refusal = self.inbox.admit(tags, sender)
        if refusal is not None and refusal.status in (wire.ST_REFUSED, wire.ST_ERROR):
            self._count_refusal(sender, refusal.status == wire.ST_REFUSED)
        return refusal

    def _count_refusal(self, sender: str, unauthorised: bool = True) -> None:
        """A message from ``sender`` was refused (not told "retry": early messages are not refusals). Past
        its budget the peer is sent away (``node.p2p.gate``): each refusal cost this node a stream
        negotiation and a reply, without end. A member of a declared session is never sent away."""
        if unauthorised:
            self.refused += 1
        if sender == "unknown" or self.admission.is_member(sender) or not self.budget.spend(sender):
            return
        self.sent_away += 1
        self.links.penalise(sender)
        self.host.send_away(sender)

    # ------------------------------------------------------------------ sending
    def send(self, peer_id: str, tags: wire.Tags, tensor: Any, *, wire_dtype: str | None = None,
             with_hash: bool = False, timeout: float | None = None) -> bool:
        """Send a tensor (or a dict of named tensors, as one message) for ``tags``.

        True once the peer holds it; False if the peer dropped it as stale or duplicate.
        """
        if isinstance(tensor, dict):
            header, view = wire.tensor_set_payload(tensor, wire_dtype)
        else:
            header, view = wire.tensor_payload(tensor, wire_dtype)
        header.tags = tags
        if header.payload_len > self.host.max_frame:
            raise WireError(f"tensor of {header.payload_len} bytes exceeds the {self.host.max_frame}-byte frame limit")
        if with_hash:
            header.hash = keccak256(view)
        timeout = timeout or self.host.timeout
        deadline = time.monotonic() + timeout
        pause = RETRY_BACKOFF[0]
        while True:
            try:
                return self._send_once(peer_id, header, view, timeout)
            except _NotNow as exc:
                # e.g. the receiver has not reached this session or step yet: it held nothing for us
                if time.monotonic() + pause > deadline:
                    raise PeerUnavailable(f"peer {peer_id} did not take {tags} within {timeout:g}s: {exc}") from None
                time.sleep(pause)
                pause = min(pause * 2, RETRY_BACKOFF[1])

    def _send_once(self, peer_id: str, header: wire.Header, view: memoryview, timeout: float) -> bool:
        if self.use_links and self.links.offered_by(peer_id):
            try:
                return self._send_on_link(peer_id, header, view, timeout)
            except NoLink:
                self.links.declined(peer_id)
        return self.host.call(self._send_on_stream, peer_id, header, view, timeout)

    def _send_on_link(self, peer_id: str, header: wire.Header, view: memoryview, timeout: float) -> bool:
        """Send one message on a link (set up on first use); runs in the caller's thread."""
        frame = header.encode()
        for attempt in range(2):
            link, reused = self.links.checkout(peer_id, timeout)
            try:
                link.sock.settimeout(timeout)
                link.send_record(frame)
                link.send_payload(view)
                reply = link.recv_record(limit=MAX_HEADER_RECORD)
            except (PeerUnavailable, OSError) as exc:
                stated = self._stated_reason(link)   # the receiver may have stopped reading on purpose
                self.links.drop(link)
                if stated is not None:
                    raise stated from None
                if reused and attempt == 0:
                    continue  # a kept link that died (peer restarted): one retry on a new one
                if isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                    # the same event as an end of stream while reading, seen from the writing side
                    exc = PeerUnavailable("peer closed the bulk channel mid-transfer")
                raise PeerUnavailable(f"pipeline link to {peer_id} broke: {exc}") from None
            except BaseException:
                self.links.drop(link)
                raise
            status, body = reply[0], reply[3:].decode(errors="replace")
            if status == wire.ST_DONE:
                self.links.checkin(peer_id, link)
                self.bytes_sent += len(view)
                return True
            if status == wire.ST_DROPPED:
                self.links.checkin(peer_id, link)
                log.info("peer %s dropped %s: %s", peer_id, header.tags, body)
                # on a retry, "duplicate" means the first attempt arrived before its link broke
                return attempt == 1 and body.startswith("duplicate")
            if status == wire.ST_RETRY:
                self.links.checkin(peer_id, link)
                raise _NotNow(body)
            self.links.drop(link)
            if status == wire.ST_REFUSED:
                raise Unauthorized(f"peer {peer_id} refused us: {body}")
            raise P2PError(f"peer {peer_id} rejected the tensor: {body}")
        raise PeerUnavailable(f"pipeline link to {peer_id} unavailable")

    @staticmethod
    def _stated_reason(link: bulk.Link) -> P2PError | None:
        """The receiver's refusal if it sent one before closing the link (e.g. a frame over the job's
        bound, refused at its header while the payload was still going out)."""
        try:
            link.sock.settimeout(2)
            reply = link.recv_record(limit=MAX_HEADER_RECORD)
        except Exception:
            return None
        body = reply[3:].decode(errors="replace")
        if reply[:1] == bytes([wire.ST_REFUSED]):
            return Unauthorized(f"peer refused us: {body}")
        if reply[:1] == bytes([wire.ST_ERROR]):
            return P2PError(f"peer rejected the tensor: {body}")
        return None

    async def _send_on_stream(self, peer_id: str, header: wire.Header, view: memoryview, timeout: float) -> bool:
        frame = header.encode()

        async def exchange(stream: Any, reused: bool) -> bool:
            status, body = await self.host.request(stream, reused, frame, timeout)
            if status == wire.ST_REFUSED:
                raise Unauthorized(f"peer {peer_id} refused us: {body.decode(errors='replace')}")
            if status == wire.ST_DROPPED:
                log.info("peer %s dropped %s: %s", peer_id, header.tags, body.decode(errors="replace"))
                return False
            if status == wire.ST_RETRY:
                raise _NotNow(body.decode(errors="replace"))
            if status == wire.ST_ERROR:
                raise P2PError(f"peer {peer_id} rejected the tensor: {body.decode(errors='replace')}")
            await self._send_payload(stream, status, body, view, peer_id, timeout)
            if status == wire.ST_INLINE:  # a bulk transfer was acknowledged on its own socket
                status, body = await framing.read_reply(stream, timeout)
                if status != wire.ST_DONE:
                    raise P2PError(f"peer {peer_id} rejected the tensor: {body.decode(errors='replace')}")
            self.bytes_sent += len(view)
            return True

        return await self.host.exchange(peer_id, PIPELINE_PROTOCOL, timeout, exchange)

    async def _send_payload(self, stream: Any, status: int, body: bytes, view: memoryview, peer_id: str,
                            timeout: float) -> None:
        """Send ``view`` the way the receiver asked: inline on the stream or on the bulk channel."""
        import trio

        if status == wire.ST_INLINE:
            for off in range(0, len(view), STREAM_CHUNK):
                await self.host.write(stream, view[off:off + STREAM_CHUNK], timeout)
        elif status == wire.ST_BULK:
            port, token, key = bulk.decode_offer(body)
            ip = framing.remote_ip(stream)

            def transfer(sock: socket.socket) -> None:
                send_guarded(sock, key, token, view)
                ack_guarded(sock, key, token)   # the receiver holds the tensor once this returns

            def push() -> None:
                self.port.with_socket(ip, port, token, timeout, transfer)

            try:
                await trio.to_thread.run_sync(push, abandon_on_cancel=True)
            except PeerUnavailable:
                # the receiver may have stopped reading on purpose: prefer its stated reason
                try:
                    status, body = await framing.read_reply(stream, 2)
                except P2PError:
                    status = None
                if status == wire.ST_ERROR:
                    raise P2PError(f"peer {peer_id} rejected the tensor: {body.decode(errors='replace')}") from None
                raise
        else:
            raise WireError(f"unexpected reply status {status} from {peer_id}")

    # ------------------------------------------------------------------ receiving on a stream
    async def _on_stream(self, stream: Any) -> None:
        # one stream carries any number of messages, one at a time; authorisation is asked per message
        while True:
            sender = await self.host.authorized(stream, PIPELINE_PROTOCOL)
            if sender is None:
                self._count_refusal(_peer_address(stream))
                return
            if not await self._one_message(stream, sender):
                await framing.end_stream(stream, "close")
                return

    async def _one_message(self, stream: Any, sender: str) -> bool:
        """Handle one message (or a link request); False when the stream is finished (ended or unusable)."""
        timeout = self.host.timeout
        try:
            header = await self.host.read_header(stream, IDLE_STREAM_TIMEOUT)
        except WireError as exc:
            return await self.host.reject(stream, sender, exc)
        if header is None:
            return False
        if header.kind == wire.KIND_LINK:
            return await self.links.accept(stream, sender, timeout)
        if header.kind != wire.KIND_TENSOR:
            await self.host.write(stream, wire.encode_reply(wire.ST_ERROR, b"expected a tensor frame"), timeout)
            return False
        refusal = self._screen(sender, header)
        if refusal is not None:
            await self.host.write(stream, wire.encode_reply(refusal.status, refusal.reason.encode()), timeout)
            # the stream stays usable: no payload follows a refused header on a stream
            return refusal.status in (wire.ST_DROPPED, wire.ST_RETRY)
        delivered = False
        try:
            buf, view = wire.empty_payload(header.payload_len)
            hasher = keccak_hasher() if header.hash is not None else None

            def accept() -> None:
                """Runs on the bulk thread for bulk transfers."""
                nonlocal delivered
                self._deliver(header, buf, hasher, sender)
                delivered = True

            acked = await self._receive_payload(stream, view, timeout, hasher, accept)
        except P2PError as exc:
            return await self.host.reject(stream, sender, exc)
        finally:
            if not delivered:
                self.inbox.abort(header.tags)
        if not acked:
            await self.host.write(stream, wire.encode_reply(wire.ST_DONE), timeout)
        return True

    async def _receive_payload(self, stream: Any, view: memoryview, timeout: float, hasher: Any,
                               accept: Callable[[], None]) -> bool:
        """Receive into ``view`` and run ``accept``; True when the sender was acknowledged on the bulk socket."""
        import trio

        if len(view) >= self.port.threshold:
            token, key, pending = await self.port.offer(stream, timeout)

            def pull(sock: socket.socket) -> None:  # one thread hop: the transfer, the check and the ack
                recv_guarded(sock, key, token, view, hasher)
                accept()
                bulk.send_ack(sock, key, token)

            await trio.to_thread.run_sync(self.port.serve, token, pending, timeout, pull, abandon_on_cancel=True,
                                          limiter=self.host.pool("pipeline", PIPELINE_WORKERS))
            return True
        await self.host.write(stream, wire.encode_reply(wire.ST_INLINE), timeout)
        await framing.read_into(stream, view, timeout, hasher)
        accept()
        return False

    def _deliver(self, header: wire.Header, buf: Any, hasher: Any, sender: str) -> None:
        """Check a received payload against its declared hash and hand it to the inbox."""
        if hasher is not None and hasher.digest() != header.hash:
            raise HashMismatch(f"tensor {header.tags} from {sender} does not match its declared keccak-256")
        value = wire.payload_to_tensor_set(buf, header) if header.meta else wire.payload_to_tensor(buf, header)
        self.inbox.deliver(header.tags, value, sender)
        self.bytes_received += header.payload_len

    # ------------------------------------------------------------------ receiving on a link
    def _link_message(self, link: bulk.Link, sender: str, raw: bytes) -> bool:
        """One message on a link (runs on the link's thread); False when the link must end."""
        def verdict(status: int, body: bytes = b"") -> None:
            link.send_record(wire.encode_reply(status, body))

        try:
            header = wire.Header.decode(raw, self.host.max_frame)
            if header.kind != wire.KIND_TENSOR:
                raise WireError("expected a tensor frame")
        except WireError as exc:
            verdict(wire.ST_ERROR, str(exc).encode())
            return False
        if not self.host.is_authorized_sync(sender, PIPELINE_PROTOCOL):  # before a byte of payload
            self._count_refusal(sender)
            verdict(wire.ST_REFUSED, f"{sender} is not authorised for {PIPELINE_PROTOCOL}".encode())
            return False
        refusal = self._screen(sender, header)
        if refusal is not None:
            if refusal.status not in (wire.ST_DROPPED, wire.ST_RETRY):
                if refusal.status == wire.ST_REFUSED:
                    self.links.penalise(sender)
                verdict(refusal.status, refusal.reason.encode())
                _linger(link.sock)
                return False  # the payload already on its way is not read: the link ends
            link.skip_payload(header.payload_len)  # read in 1 MiB records into scratch, never held
            verdict(refusal.status, refusal.reason.encode())
            return True
        delivered = False
        try:
            buf, view = wire.empty_payload(header.payload_len)
            hasher = keccak_hasher() if header.hash is not None else None
            link.recv_payload(view, hasher)
            self._deliver(header, buf, hasher, sender)
            delivered = True
        except P2PError as exc:
            log.warning("rejected a message from %s: %s", sender, exc)
            with contextlib.suppress(Exception):
                verdict(wire.ST_ERROR, str(exc).encode())
            return False
        finally:
            if not delivered:
                self.inbox.abort(header.tags)
        verdict(wire.ST_DONE)
        return True


def _peer_address(stream: Any) -> str:
    try:
        return eth_address_from_peer_id(stream.muxed_conn.peer_id)
    except Exception:
        return "unknown"


def _linger(sock: socket.socket, seconds: float = 1.0) -> None:
    """Half-close after a refusal and discard what the peer still sends, briefly: closing with unread
    bytes would reset the connection and could destroy the refusal before the peer reads it."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0.2)
        scratch = bytearray(1 << 16)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and sock.recv_into(scratch):
            pass
