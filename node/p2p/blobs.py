"""The blob service: content-addressed blobs on ``/bsns/adapter/1`` and Kademlia provider records.

Owns the node's blob store (``BlobStore``), serving a blob by its keccak-256 (inline on the stream, or
a single keyed bulk transfer from ``bulk_threshold`` up), fetching one (hashed while it arrives; no
byte is returned unless the digest is the requested hash; memory is committed only as bytes arrive,
never for the size a peer merely announces, and the announced size is bounded by the caller), the
Kademlia DHT with its stream handler (authorised like the bsns protocols) and provider records, and
the service's counters: blob bytes sent and received, refused streams.

``/bsns/adapter/1`` is open to strangers (blobs are published and content-addressed), so serving it
is fenced: peers not authorised for the pipeline (strangers: ``bsns adapter fetch``, attackers) get
per-peer bandwidth and concurrency limits (``PeerLimiter``, charged per MiB served; a
peer's requests queue for its own slots, and a request over the rate is answered after a delay) and its own bounded worker pool
(``BLOB_WORKERS``; a request that cannot get a worker within ``BLOB_QUEUE_WAIT`` is told "busy"),
never the pool authorisation checks use.
"""

from __future__ import annotations

import socket
from typing import Any

from node.hashing import keccak256, keccak_hasher
from node.p2p import bulk, framing, wire
from node.p2p.bulkport import BulkPort, recv_guarded, send_guarded
from node.p2p.errors import HashMismatch, NotFound, P2PError, Unauthorized, WireError
from node.p2p.host import Host, Service
from node.p2p.identity import eth_address_from_peer_id
from node.p2p.limits import (ADAPTER_PROTOCOL, BLOB_CONCURRENT, BLOB_QUEUE_WAIT, BLOB_RATE, BLOB_WORKERS,
                             BULK_TAKE_TIMEOUT, IDLE_STREAM_TIMEOUT, KAD_PROTOCOL, PIPELINE_PROTOCOL, REFUSAL_DELAY,
                             STREAM_CHUNK)
from node.p2p.ratelimit import PeerLimiter
from node.p2p.store import BlobStore, parse_hash


class BlobService(Service):
    def __init__(self, host: Host, port: BulkPort, store: BlobStore | None = None) -> None:
        self.host, self.port = host, port
        self.store = store if store is not None else BlobStore()
        self.limiter = PeerLimiter(BLOB_RATE[0], BLOB_RATE[1], BLOB_CONCURRENT)
        self._slots: dict[str, list] = {}   # peer -> [trio.Semaphore, requests waiting or in progress]
        self.bytes_sent = 0
        self.bytes_received = 0
        self.refused = 0                # adapter and Kademlia streams refused for lack of authorisation
        self._dht: Any = None

    def attach(self) -> list[Any]:
        from libp2p.kad_dht.kad_dht import DHTMode, KadDHT

        self.host.handle(ADAPTER_PROTOCOL, self._on_adapter)
        self._dht = KadDHT(self.host.lp2p, DHTMode.SERVER)
        self.host.handle(KAD_PROTOCOL, self._on_kad)  # replaces the DHT's own handler
        self.host.on_connect(self._dht.add_peer)
        return [self._dht]

    # ------------------------------------------------------------------ blocking API
    def serve(self, data: bytes, pin: bool = False) -> str:
        """Serve ``data`` on ``/bsns/adapter/1``; returns its ``0x`` keccak-256 hash. A pinned blob stays
        in memory whatever the store's bound (see ``node.p2p.store``)."""
        return "0x" + self.store.add(data, pin=pin).hex()

    def fetch(self, peer_id: str, blob_hash: str | bytes, timeout: float | None = None,
              max_size: int | None = None) -> bytes:
        """Fetch a blob by hash from a peer; raises ``HashMismatch`` unless its keccak-256 matches, and
        ``WireError`` if the peer announces more than ``max_size`` bytes (default: the frame limit)."""
        digest = parse_hash(blob_hash)
        local = self.store.get(digest)
        if local is not None:
            return local
        limit = self.host.max_frame if max_size is None else min(max_size, self.host.max_frame)
        return self.host.call(self._fetch, peer_id, digest, timeout or self.host.timeout, limit)

    def announce(self, blob_hash: str | bytes) -> bool:
        """Publish a Kademlia provider record "this node serves ``blob_hash``" (blob must be served here)."""
        digest = parse_hash(blob_hash)
        if self.store.get(digest) is None:
            raise NotFound(f"blob 0x{digest.hex()} is not served by this node")
        return self.host.call(self._provide, digest)

    def find_providers(self, blob_hash: str | bytes, timeout: float = 10.0) -> list[str]:
        """Peer ids with a provider record for ``blob_hash`` (their addresses go into the address book)."""
        return self.host.call(self._find_providers, parse_hash(blob_hash), timeout)

    # ------------------------------------------------------------------ fetching
    async def _fetch(self, peer_id: str, digest: bytes, timeout: float, limit: int) -> bytes:
        import trio

        frame = wire.Header(kind=wire.KIND_BLOB_REQUEST, payload_len=0, hash=digest).encode()

        async def exchange(stream: Any, reused: bool) -> bytes:
            status, body = await self.host.request(stream, reused, frame, timeout)
            if status == wire.ST_REFUSED:
                raise Unauthorized(f"peer {peer_id} refused us: {body.decode(errors='replace')}")
            if status == wire.ST_NOT_FOUND:
                return b""
            if status != wire.ST_BLOB:
                raise P2PError(f"peer {peer_id} failed the blob request: {body.decode(errors='replace')}")
            header = wire.Header.decode(body, limit)
            if header.kind != wire.KIND_BLOB or header.hash != digest:
                raise HashMismatch(f"peer {peer_id} offered a different blob than 0x{digest.hex()}")
            # uninitialised (not zero-filled) memory: pages are committed as received bytes land in
            # them, so a peer that announces a size and sends nothing costs address space, not memory
            buf, view = wire.empty_payload(header.payload_len)
            status, body = await framing.read_reply(stream, timeout)
            if status == wire.ST_INLINE:
                hasher = keccak_hasher()
                await framing.read_into(stream, view, timeout, hasher)
                got = hasher.digest()
            elif status == wire.ST_BULK:
                port, token, key = bulk.decode_offer(body)
                ip = framing.remote_ip(stream)

                def transfer(sock: socket.socket) -> bytes:
                    h = keccak_hasher()  # per attempt: a retried transfer starts from the first byte
                    recv_guarded(sock, key, token, view, h)
                    return h.digest()

                got = await trio.to_thread.run_sync(
                    self.port.with_socket, ip, port, token, timeout, transfer, abandon_on_cancel=True)
            else:
                raise P2PError(f"peer {peer_id} failed the blob transfer: {body.decode(errors='replace')}")
            if got != digest:
                raise HashMismatch(f"blob from peer {peer_id} hashes to 0x{got.hex()}, "
                                   f"not the requested 0x{digest.hex()}")
            self.bytes_received += len(view)
            return view.tobytes()

        data = await self.host.exchange(peer_id, ADAPTER_PROTOCOL, timeout, exchange)
        # b"" is also a valid blob: only a NOT_FOUND reply yields b"" for a non-empty-blob hash
        if not data and digest != keccak256(b""):
            raise NotFound(f"peer {peer_id} does not serve blob 0x{digest.hex()}")
        return data

    # ------------------------------------------------------------------ serving
    async def _on_adapter(self, stream: Any) -> None:
        while True:
            requester = await self.host.authorized(stream, ADAPTER_PROTOCOL)
            if requester is None:
                self.refused += 1
                return
            if not await self._one_request(stream, requester):
                await framing.end_stream(stream, "close")
                return

    async def _one_request(self, stream: Any, requester: str) -> bool:
        """Answer one blob request; False when the stream is finished."""
        timeout = self.host.timeout
        try:
            header = await self.host.read_header(stream, IDLE_STREAM_TIMEOUT)
            if header is not None and (header.kind != wire.KIND_BLOB_REQUEST or header.hash is None):
                raise WireError("expected a blob request with a hash")
        except WireError as exc:
            return await self.host.reject(stream, requester, exc)
        if header is None:
            return False
        import trio

        if await self.host.is_authorized(requester, PIPELINE_PROTOCOL):
            # a registered node (stake at risk; syncs fetch every round): only the blob pool bounds it
            return await self._answer(stream, header, timeout, requester)
        # a peer's requests queue for its own BLOB_CONCURRENT slots: a hammering peer waits (costing
        # this node a parked task, not CPU) instead of being refused as fast as it can ask again
        slot = self._slots.setdefault(requester, [trio.Semaphore(BLOB_CONCURRENT), 0])
        slot[1] += 1
        try:
            with trio.move_on_after(BLOB_QUEUE_WAIT) as waited:
                await slot[0].acquire()
            if waited.cancelled_caught:
                why = "busy: too many requests from this peer"
            else:
                try:
                    why = self.limiter.acquire(requester)
                    if why is None:
                        try:
                            return await self._answer(stream, header, timeout, requester)
                        finally:
                            self.limiter.release(requester)
                    await trio.sleep(REFUSAL_DELAY)   # over its rate: the answer waits, and so does the peer
                finally:
                    slot[0].release()
            await self.host.write(stream, wire.encode_reply(wire.ST_ERROR, why.encode()), timeout)
            return False
        finally:
            slot[1] -= 1
            if slot[1] == 0:
                self._slots.pop(requester, None)

    async def _answer(self, stream: Any, header: wire.Header, timeout: float, requester: str) -> bool:
        import trio

        data = self.store.cached(header.hash)
        if data is None and self.store.has_source:
            data = await trio.to_thread.run_sync(self.store.get, header.hash,
                                                 limiter=self.host.pool("blob", BLOB_WORKERS))
        if data is None:
            await self.host.write(stream, wire.encode_reply(wire.ST_NOT_FOUND), timeout)
            return True
        self.limiter.charge(requester, len(data) / (1 << 20))   # a stranger's bandwidth, not its request count
        blob = wire.Header(kind=wire.KIND_BLOB, payload_len=len(data), hash=header.hash)
        await self.host.write(stream, wire.encode_reply(wire.ST_BLOB, blob.encode()), timeout)
        view = memoryview(data)
        self.bytes_sent += len(data)
        if len(data) >= self.port.threshold:
            pool = self.host.pool("blob", BLOB_WORKERS)
            with trio.move_on_after(BLOB_QUEUE_WAIT) as waited:
                await pool.acquire()
            if waited.cancelled_caught:
                await self.host.write(stream, wire.encode_reply(wire.ST_ERROR, b"busy: every blob worker is busy"),
                                      timeout)
                return False
            try:
                token, key, pending = await self.port.offer(stream, timeout)

                def push(sock: socket.socket) -> None:
                    send_guarded(sock, key, token, view)

                # a requester that never dials in holds a blob worker only briefly
                await trio.to_thread.run_sync(self.port.serve, token, pending, min(timeout, BULK_TAKE_TIMEOUT), push,
                                              abandon_on_cancel=True, limiter=_Unlimited())
            finally:
                pool.release()
        else:
            await self.host.write(stream, wire.encode_reply(wire.ST_INLINE), timeout)
            for off in range(0, len(view), STREAM_CHUNK):
                await self.host.write(stream, view[off:off + STREAM_CHUNK], timeout)
        return True

    # ------------------------------------------------------------------ Kademlia
    async def _on_kad(self, stream: Any) -> None:
        try:
            addr = eth_address_from_peer_id(stream.muxed_conn.peer_id)
            ok = await self.host.is_authorized(addr, KAD_PROTOCOL)
        except Exception:
            ok = False
        if not ok:
            self.refused += 1
            await framing.end_stream(stream, "reset")
            return
        await self._dht.handle_stream(stream)

    async def _provide(self, digest: bytes) -> bool:
        import trio

        with trio.move_on_after(self.host.timeout):
            return bool(await self._dht.provide(digest.hex()))
        return False

    async def _find_providers(self, digest: bytes, timeout: float) -> list[str]:
        import trio

        found: list[Any] = []
        with trio.move_on_after(timeout):
            found = await self._dht.find_providers(digest.hex())
        out = []
        for info in found:
            pid = info.peer_id.to_base58()
            if pid == self.host.peer_id:
                continue
            try:
                eth_address_from_peer_id(pid)
            except P2PError:
                continue  # not a bsns node
            self.host.learn_addrs(pid, list(info.addrs))
            out.append(pid)
        return out


class _Unlimited:
    """A limiter that never waits: the blob pool's token is already held around the thread."""

    async def acquire_on_behalf_of(self, borrower: Any) -> None:
        return None

    def release_on_behalf_of(self, borrower: Any) -> None:
        return None
