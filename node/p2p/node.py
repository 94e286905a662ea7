"""``P2PNode``: a libp2p host in a background trio thread, driven from ordinary blocking code.

Owns the host (TCP + Noise + yamux only, secp256k1 identity), peer authorisation, the protocol
handlers of ``/bsns/pipeline/1`` and ``/bsns/adapter/1``, the per-session GossipSub topics, and the
workarounds for py-libp2p's known failures:

- every stream handler is wrapped: no exception escapes it (one that did would silently stop the
  connection from accepting streams);
- a write that times out is never resumed: the peer is disconnected (the connection may be corrupt)
  and the next call redials it;
- every known address of a peer is tried in turn (the library only dials the first per transport);
- ``close()`` disconnects every peer and awaits ``host.close()`` so no socket leaks.

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

``authorize(eth_address, protocol)`` is asked for each inbound stream with the protocol id, and for
each gossip message with ``"gossip:" + topic``; a refused peer gets ``ST_REFUSED`` before a byte of
its request is read. Pipeline messages travel on a *session* of the bulk channel (``node.p2p.bulk``):
keyed once per peer over ``/bsns/pipeline/1``, then written and read by ordinary threads, no trio hop
per message. Without a session (peer has ``bulk_channel=False`` or an unreachable bulk port), payloads
of at least ``bulk_threshold`` bytes and all blobs of that size take a single keyed bulk transfer;
smaller ones go on the libp2p stream itself. See docs/p2p.md for the security argument.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections import deque
from typing import Any, Callable

from node.p2p import bulk, wire
from node.p2p.errors import (HashMismatch, NotFound, P2PError, PeerUnavailable,
                             Unauthorized, WireError)
from node.p2p.identity import (eth_address_from_peer_id, eth_address_from_private_key,
                               keypair_from_private_key)
from node.p2p.inbox import Inbox
from node.hashing import keccak256, keccak_hasher
from node.p2p.store import BlobStore, parse_hash

log = logging.getLogger(__name__)

PIPELINE_PROTOCOL = "/bsns/pipeline/1"
ADAPTER_PROTOCOL = "/bsns/adapter/1"
KAD_PROTOCOL = "/ipfs/kad/1.0.0"
GOSSIP_PREFIX = "gossip:"
MAX_GOSSIP_BYTES = 64 * 1024   # far under GossipSub's silent 1 MiB drop
GOSSIP_RATE = 8                # messages per second per topic, under the library's 10/s limit
STREAM_CHUNK = 1 << 18         # write size on a libp2p stream (yamux cuts 64 KiB frames anyway)
MAX_IDLE_STREAMS = 4           # pooled streams per (peer, protocol)
IDLE_STREAM_TIMEOUT = 300.0    # a handler closes a stream idle this long between messages
AUTH_TTL = 2.0                 # seconds a positive authorisation answer is reused per (peer, protocol)
SESSION_IDLE_DIALLER = 60.0    # a dialled session idle this long is closed, not reused ...
SESSION_IDLE_LISTENER = 300.0  # ... well before the listening side gives up on it
SESSION_RETRY_AFTER = 60.0     # after a peer declined a session, use the stream path this long
MAX_HEADER_RECORD = 128 * 1024
MAX_SESSIONS_PER_PEER = 8      # sessions (and their threads) one peer may hold open at this node

Authorize = Callable[[str, str], bool]


def session_topic(session_id: int) -> str:
    """The GossipSub topic of one training session."""
    return f"/bsns/session/{session_id}"


class P2PNode:
    def __init__(self, private_key: bytes, authorize: Authorize, *,
                 listen: str = "/ip4/127.0.0.1/tcp/0", bulk_host: str | None = None, bulk_port: int = 0,
                 bulk_announce_port: int | None = None, bulk_threshold: int = 1 << 20,
                 max_frame: int = wire.DEFAULT_MAX_FRAME, timeout: float = 30.0,
                 bootstrap: list[str] | None = None, max_buffered: int = 256, bulk_channel: bool = True,
                 sessions: bool = True) -> None:
        self._key = bytes(private_key)
        self._keypair = keypair_from_private_key(self._key)
        self.eth_address = eth_address_from_private_key(self._key)
        self._authorize_fn = authorize
        self._listen = listen
        self._bulk_host = bulk_host or _ip_of(listen)
        self._bulk_port = bulk_port
        self._bulk_announce_port = bulk_announce_port
        self.bulk_threshold = bulk_threshold if bulk_channel else 1 << 62
        self._bulk_enabled = bulk_channel  # offer the bulk channel (single transfers and sessions)
        self._use_sessions = sessions      # send pipeline messages over sessions when peers offer them
        self.max_frame = max_frame
        self.timeout = timeout
        self._bootstrap = list(bootstrap or [])
        self.inbox = Inbox(max_buffered)
        self.store = BlobStore()
        self._addr_book: dict[str, list[str]] = {}
        self._subs: dict[str, list[Callable[[str, bytes], None]]] = {}
        self._sent: dict[str, deque] = {}
        self._callbacks: queue.Queue = queue.Queue()
        self._dialpool = bulk.DialPool()
        self._sessions: dict[str, list[bulk.SessionChannel]] = {}   # idle dialled sessions per peer
        self._no_session: dict[str, float] = {}                     # peer -> retry sessions after
        self._live_sessions: set[bulk.SessionChannel] = set()        # every open session, both sides
        self._pool: dict[tuple[str, str], list[Any]] = {}
        self._auth_cache: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._dispatch: threading.Thread | None = None
        self.refused = 0   # streams refused for lack of authorisation (observable in tests)
        self.bytes_sent = 0
        self.bytes_received = 0
        self.peer_id = ""
        self.addrs: list[str] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 30.0) -> "P2PNode":
        try:
            self._bulk = bulk.BulkListener(self._bulk_host, self._bulk_port)
        except OSError as exc:
            raise P2PError(f"cannot listen for the bulk channel on {self._bulk_host}:{self._bulk_port}: "
                           f"{exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._run, name="bsns-p2p", daemon=True)
        self._thread.start()
        self._dispatch = threading.Thread(target=self._dispatch_loop, name="bsns-p2p-gossip", daemon=True)
        self._dispatch.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self.close()
            raise P2PError(f"p2p host failed to start: {self._error or 'timed out'}")
        for addr in self._bootstrap:
            try:
                pid = addr.rsplit("/p2p/", 1)[1]
                self.connect(pid, [addr.rsplit("/p2p/", 1)[0]])
            except Exception as exc:  # a dead bootstrap peer must not stop the node
                log.warning("bootstrap peer %s unreachable: %s", addr, exc)
        return self

    def __enter__(self) -> "P2PNode":
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Disconnect every peer, close the host and the bulk listener; idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.inbox.close()
        if getattr(self, "_bulk", None) is not None:
            self._bulk.close()   # unblocks handler threads stuck on bulk sockets
        self._dialpool.close()
        with self._lock:
            live, self._live_sessions, self._sessions = list(self._live_sessions), set(), {}
        for ch in live:
            ch.close()
        if self._thread is not None and self._thread.is_alive() and self._ready.is_set():
            try:
                self._trio_from_thread_run_sync(self._stop_event.set)
            except Exception:
                pass
            self._thread.join(timeout=30)
        self._callbacks.put(None)
        if self._dispatch is not None:
            self._dispatch.join(timeout=5)

    # ------------------------------------------------------------------ public API
    def add_peer(self, peer_id: str, addrs: list[str] | str) -> None:
        """Remember a peer's addresses (e.g. from the NodeRegistry); it is dialled on first use."""
        import multiaddr

        if isinstance(addrs, str):
            addrs = [addrs]
        eth_address_from_peer_id(peer_id)  # a non-secp256k1 peer id is refused early
        clean = []
        for a in addrs:
            base = a.split("/p2p/")[0]
            try:
                multiaddr.Multiaddr(base)
            except Exception:
                raise P2PError(f"not a multiaddr: {a!r}") from None
            clean.append(base)
        with self._lock:
            # the newest addresses (e.g. re-registered after a restart) are tried first
            old = [a for a in self._addr_book.get(peer_id, []) if a not in clean]
            self._addr_book[peer_id] = clean + old

    def connect(self, peer_id: str, addrs: list[str] | str) -> None:
        """Remember a peer's addresses and dial it now (raises ``PeerUnavailable`` if none answers)."""
        self.add_peer(peer_id, addrs)
        self._call(self._ensure_connected, peer_id, self.timeout)

    def send_tensor(self, peer_id: str, tags: wire.Tags, tensor: Any, *, wire_dtype: str | None = None,
                    with_hash: bool = False, timeout: float | None = None) -> bool:
        """Send a tensor (or a dict of named tensors, as one message) for ``tags``.

        True once the peer holds it; False if the peer dropped it as stale or duplicate.
        """
        if isinstance(tensor, dict):
            header, view = wire.tensor_set_payload(tensor, wire_dtype)
        else:
            header, view = wire.tensor_payload(tensor, wire_dtype)
        header.tags = tags
        if header.payload_len > self.max_frame:
            raise WireError(f"tensor of {header.payload_len} bytes exceeds the {self.max_frame}-byte frame limit")
        if with_hash:
            header.hash = keccak256(view)
        timeout = timeout or self.timeout
        if self._use_sessions and self._no_session.get(peer_id, 0.0) < time.monotonic():
            try:
                return self._send_via_session(peer_id, header, view, timeout)
            except _NoSession:
                self._no_session[peer_id] = time.monotonic() + SESSION_RETRY_AFTER
        return self._call(self._send_tensor, peer_id, header, view, timeout)

    def recv(self, tags: wire.Tags, timeout: float | None = None) -> Any:
        """What was sent for exactly ``tags`` (a tensor or a dict of tensors), waiting up to ``timeout``.

        Consuming it makes older (round, step) messages of that session and direction stale.
        """
        tensor, _sender = self.inbox.take(tags, self.timeout if timeout is None else timeout)
        return tensor

    def recv_with_sender(self, tags: wire.Tags, timeout: float | None = None) -> tuple[Any, str]:
        """Like ``recv``, also returning the sender's Ethereum address."""
        return self.inbox.take(tags, self.timeout if timeout is None else timeout)

    def advance(self, session: int, round_: int, step: int, direction: str = "fwd") -> None:
        """Tell the inbox the trainer is at (round, step): anything older is dropped from now on."""
        self.inbox.advance(session, direction, round_, step)

    def reset_session(self, session: int) -> None:
        """Forget the inbox state of ``session`` so a retried round's steps are accepted again."""
        self.inbox.reset(session)

    def serve_blob(self, data: bytes) -> str:
        """Serve ``data`` on ``/bsns/adapter/1``; returns its ``0x`` keccak-256 hash."""
        return "0x" + self.store.add(data).hex()

    def fetch_blob(self, peer_id: str, blob_hash: str | bytes, timeout: float | None = None) -> bytes:
        """Fetch a blob by hash from a peer; raises ``HashMismatch`` unless its keccak-256 matches."""
        digest = parse_hash(blob_hash)
        local = self.store.get(digest)
        if local is not None:
            return local
        return self._call(self._fetch_blob, peer_id, digest, timeout or self.timeout)

    def announce_blob(self, blob_hash: str | bytes) -> bool:
        """Publish a Kademlia provider record "this node serves ``blob_hash``" (blob must be served here)."""
        digest = parse_hash(blob_hash)
        if self.store.get(digest) is None:
            raise NotFound(f"blob 0x{digest.hex()} is not served by this node")
        return self._call(self._provide, digest)

    def find_providers(self, blob_hash: str | bytes, timeout: float = 10.0) -> list[str]:
        """Peer ids with a provider record for ``blob_hash`` (their addresses go into the address book)."""
        return self._call(self._find_providers, parse_hash(blob_hash), timeout)

    def subscribe(self, topic: str, callback: Callable[[str, bytes], None]) -> None:
        """Call ``callback(sender_eth_address, data)`` for each authorised message on ``topic``."""
        with self._lock:
            first = topic not in self._subs
            self._subs.setdefault(topic, []).append(callback)
        if first:
            self._call(self._subscribe, topic)

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
        self._call(self._publish, topic, bytes(data))

    def topic_peers(self, topic: str) -> list[str]:
        """Ethereum addresses of connected peers subscribed to ``topic``."""
        return self._call(self._topic_peers, topic)

    def bytes_moved(self) -> tuple[int, int]:
        """(sent, received) payload bytes of tensors and blobs so far."""
        return self.bytes_sent, self.bytes_received

    def connected_peers(self) -> list[str]:
        return self._call(self._connected_peers)

    # ------------------------------------------------------------------ thread plumbing
    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        import trio

        if self._stopped.is_set() or not self._ready.is_set():
            raise P2PError("p2p node is not running")
        if threading.current_thread() is self._thread:
            raise P2PError("P2PNode methods are blocking: do not call them from the node's own thread")
        try:
            return trio.from_thread.run(fn, *args, trio_token=self._trio_token)
        except trio.RunFinishedError:
            raise P2PError("p2p node stopped") from None

    def _trio_from_thread_run_sync(self, fn: Callable[[], Any]) -> Any:
        import trio

        return trio.from_thread.run_sync(fn, trio_token=self._trio_token)

    def _run(self) -> None:
        import trio

        try:
            trio.run(self._main)
        except BaseException as exc:  # surface start-up failures to start()
            self._error = _root_cause(exc)
            if not isinstance(self._error, P2PError):
                log.exception("p2p host stopped with an error")
        finally:
            self._ready.set()

    async def _main(self) -> None:
        import multiaddr
        import trio
        from libp2p import new_host
        from libp2p.crypto.x25519 import create_new_key_pair as new_x25519
        from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
        from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
        from libp2p.pubsub.pubsub import Pubsub
        from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
        from libp2p.security.noise.transport import Transport as Noise
        from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_ID
        from libp2p.stream_muxer.yamux.yamux import Yamux
        from libp2p.tools.anyio_service import background_trio_service

        # Noise only and yamux only: the library's defaults also offer plaintext, secio and TLS, and
        # even its create_yamux_muxer_option() keeps mplex as a fallback.
        host = new_host(key_pair=self._keypair,
                        sec_opt={NOISE_ID: Noise(self._keypair, noise_privkey=new_x25519().private_key)},
                        muxer_opt={YAMUX_ID: Yamux})
        self._host = host
        self._stop_event = trio.Event()
        host.set_stream_handler(PIPELINE_PROTOCOL, self._guard(self._on_pipeline))
        host.set_stream_handler(ADAPTER_PROTOCOL, self._guard(self._on_adapter))
        router = GossipSub(protocols=[PROTOCOL_ID_V11], degree=6, degree_low=4, degree_high=12,
                           heartbeat_interval=1, heartbeat_initial_delay=0.1)
        self._pubsub = Pubsub(host, router, strict_signing=True)
        self._dht = KadDHT(host, DHTMode.SERVER)
        host.set_stream_handler(KAD_PROTOCOL, self._guard(self._on_kad))  # replaces the DHT's own handler
        try:
            async with host.run([multiaddr.Multiaddr(self._listen)]):
                async with background_trio_service(self._pubsub), background_trio_service(router), \
                        background_trio_service(self._dht):
                    await self._pubsub.wait_until_ready()
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        self.peer_id = host.get_id().to_base58()
                        self.addrs = [str(a) for a in host.get_addrs()]
                        if not self.addrs:  # the library logs a failed listen and carries on
                            raise P2PError(f"cannot listen on {self._listen} (address in use or not local)")
                        self._trio_token = trio.lowlevel.current_trio_token()
                        self._ready.set()
                        await self._stop_event.wait()
                        nursery.cancel_scope.cancel()
                    await self._disconnect_all()
        finally:
            with trio.CancelScope(shield=True):
                await self._disconnect_all()
                await host.close()

    async def _disconnect_all(self) -> None:
        import trio

        network = self._host.get_network()
        for pid in list(network.connections):
            with trio.move_on_after(5):
                try:
                    await self._host.disconnect(pid)
                except Exception as exc:
                    log.debug("disconnect %s: %s", pid, exc)

    def _dispatch_loop(self) -> None:
        """Run gossip callbacks on their own thread so a slow callback never stalls the host."""
        while True:
            item = self._callbacks.get()
            if item is None:
                return
            topic, sender, data = item
            for cb in list(self._subs.get(topic, [])):
                try:
                    cb(sender, data)
                except Exception:
                    log.exception("gossip callback for %s failed", topic)

    # ------------------------------------------------------------------ helpers in trio
    def _guard(self, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Wrap a stream handler so no exception escapes it (that would wedge the connection)."""
        async def guarded(stream: Any) -> None:
            try:
                await handler(stream)
            except Exception as exc:
                log.warning("%s handler failed: %s", handler.__name__, exc)
                try:
                    await stream.reset()
                except Exception:
                    pass
        guarded.__name__ = handler.__name__
        return guarded

    async def _authorized(self, stream: Any, protocol: str) -> str | None:
        """The peer's address if authorised for ``protocol``; otherwise tell it so and return None."""
        import trio

        try:
            addr = eth_address_from_peer_id(stream.muxed_conn.peer_id)
            ok = await self._is_authorized(addr, protocol)
        except Exception as exc:
            log.warning("authorisation check failed: %s", exc)
            addr, ok = "unknown", False
        if not ok:
            self.refused += 1
            with trio.move_on_after(2):
                await stream.write(wire.encode_reply(wire.ST_REFUSED, f"{addr} is not authorised for {protocol}".encode()))
            await stream.close()
            return None
        return addr

    async def _is_authorized(self, addr: str, protocol: str) -> bool:
        """Ask ``authorize`` off the trio thread (it may query the chain); a yes is reused briefly."""
        import trio

        if self._auth_cache.get((addr, protocol), 0.0) > time.monotonic():
            return True
        return await trio.to_thread.run_sync(self._is_authorized_sync, addr, protocol)

    def _is_authorized_sync(self, addr: str, protocol: str) -> bool:
        now = time.monotonic()
        if self._auth_cache.get((addr, protocol), 0.0) > now:
            return True
        try:
            ok = bool(self._authorize_fn(addr, protocol))
        except Exception as exc:
            log.warning("authorize(%s, %s) failed: %s", addr, protocol, exc)
            ok = False
        if ok:
            self._auth_cache[(addr, protocol)] = now + AUTH_TTL
        return ok

    async def _ensure_connected(self, peer_id: str, timeout: float) -> Any:
        import multiaddr
        import trio
        from libp2p.peer.id import ID
        from libp2p.peer.peerinfo import PeerInfo

        pid = ID.from_base58(peer_id)
        if self._host.get_network().connections.get(pid):
            return pid
        with self._lock:
            addrs = list(self._addr_book.get(peer_id, []))
        if not addrs:
            raise PeerUnavailable(f"no known address for peer {peer_id}")
        errors = []
        network = self._host.get_network()
        for a in addrs:  # one at a time: the library would only try the first
            # forget what the library remembers about this peer: stale addresses and its
            # "recently failed" block would otherwise keep it from dialling the address we give
            with contextlib.suppress(Exception):
                self._host.get_peerstore().clear_addrs(pid)
            with contextlib.suppress(Exception):
                network.unblock_peer(pid)
            with trio.move_on_after(timeout) as cs:
                try:
                    await self._host.connect(PeerInfo(pid, [multiaddr.Multiaddr(a)]))
                    with contextlib.suppress(Exception):
                        await self._dht.add_peer(pid)
                    return pid
                except Exception as exc:
                    errors.append(f"{a}: {exc}")
            if cs.cancelled_caught:
                errors.append(f"{a}: timed out")
        raise PeerUnavailable(f"cannot reach peer {peer_id}: {'; '.join(errors)}")

    async def _drop_peer(self, pid: Any) -> None:
        import trio

        for key in [k for k in self._pool if k[0] == str(pid)]:
            self._pool.pop(key, None)
        with trio.move_on_after(5):
            try:
                await self._host.disconnect(pid)
            except Exception:
                pass

    async def _write(self, stream: Any, data: bytes | memoryview, timeout: float) -> None:
        """Write all of ``data``; on a timeout never resume the write: disconnect (redial next time)."""
        import trio

        with trio.move_on_after(timeout) as cs:
            try:
                await stream.write(bytes(data) if isinstance(data, memoryview) else data)
            except Exception as exc:  # reset/closed stream or dead connection: libp2p raises several kinds
                raise PeerUnavailable(f"write failed: {type(exc).__name__}: {exc}") from None
        if cs.cancelled_caught:
            await self._drop_peer(stream.muxed_conn.peer_id)
            raise PeerUnavailable("write timed out; disconnected the peer (it is redialled on next use)")

    async def _read_exactly(self, stream: Any, n: int, timeout: float, eof_ok: bool = False) -> bytes:
        """Read ``n`` bytes; with ``eof_ok`` a clean end of stream before the first byte returns b''."""
        import trio
        from libp2p.network.stream.exceptions import StreamEOF, StreamReset

        out = bytearray()
        with trio.move_on_after(timeout) as cs:
            try:
                while len(out) < n:
                    chunk = await stream.read(n - len(out))
                    if not chunk:
                        raise StreamEOF()
                    out += chunk
            except (StreamEOF, StreamReset):
                if eof_ok and not out:
                    return b""
                raise PeerUnavailable("peer closed the stream mid-message") from None
            except P2PError:
                raise
            except Exception as exc:
                raise PeerUnavailable(f"read failed: {type(exc).__name__}: {exc}") from None
        if cs.cancelled_caught:
            raise PeerUnavailable(f"peer sent nothing for {timeout:g}s")
        return bytes(out)

    async def _read_into(self, stream: Any, view: memoryview, timeout: float, hasher: Any = None) -> None:
        import trio
        from libp2p.network.stream.exceptions import StreamEOF, StreamReset

        got = 0
        with trio.move_on_after(timeout) as cs:
            try:
                while got < len(view):
                    chunk = await stream.read(min(len(view) - got, STREAM_CHUNK))
                    if not chunk:
                        raise PeerUnavailable("peer closed the stream mid-payload")
                    view[got:got + len(chunk)] = chunk
                    if hasher is not None:
                        hasher.update(chunk)
                    got += len(chunk)
            except (StreamEOF, StreamReset):
                raise PeerUnavailable("peer closed the stream mid-payload") from None
            except P2PError:
                raise
            except Exception as exc:
                raise PeerUnavailable(f"read failed: {type(exc).__name__}: {exc}") from None
        if cs.cancelled_caught:
            raise PeerUnavailable(f"payload stalled for {timeout:g}s")

    async def _read_reply(self, stream: Any, timeout: float) -> tuple[int, bytes]:
        head = await self._read_exactly(stream, 3, timeout)
        n = int.from_bytes(head[1:3], "big")
        return head[0], await self._read_exactly(stream, n, timeout) if n else b""

    async def _read_header(self, stream: Any, timeout: float) -> wire.Header | None:
        """The next frame header, or None when the peer ended the stream between messages."""
        fixed = await self._read_exactly(stream, wire.HEADER_FIXED_SIZE, timeout, eof_ok=True)
        if not fixed:
            return None
        if fixed[:4] != wire.MAGIC:
            raise WireError(f"bad frame magic {fixed[:4]!r}: not a bsns peer")
        tail_len = wire.Header.tail_len(fixed)
        tail = await self._read_exactly(stream, tail_len, timeout) if tail_len else b""
        return wire.Header.decode(fixed + tail, self.max_frame)

    async def _open(self, peer_id: str, protocol: str, timeout: float) -> Any:
        """A new stream to the peer; a connection that turns out dead is dropped and redialled once."""
        import trio

        err: Exception | None = None
        for attempt in range(2):
            pid = await self._ensure_connected(peer_id, timeout)
            with trio.move_on_after(timeout) as cs:
                try:
                    return await self._host.new_stream(pid, [protocol])
                except Exception as exc:
                    err = exc
            await self._drop_peer(pid)   # dead or wedged connection (e.g. the peer restarted)
            if cs.cancelled_caught:
                raise PeerUnavailable(f"opening {protocol} to {peer_id} timed out; disconnected")
        raise PeerUnavailable(f"cannot open {protocol} to {peer_id}: {err}")

    async def _exchange(self, peer_id: str, protocol: str, timeout: float,
                        fn: Callable[[Any, bool], Any]) -> Any:
        """Run one request on a pooled stream (multistream negotiation costs a few ms per stream).

        ``fn(stream, reused)`` raises ``_StaleStream`` when a reused stream died before any payload
        moved (the peer closed an idle stream); the request is then retried once on a fresh stream.
        """
        key = (peer_id, protocol)
        for _attempt in range(2):
            idle = self._pool.get(key)
            reused = bool(idle)
            stream = idle.pop() if idle else await self._open(peer_id, protocol, timeout)
            try:
                result = await fn(stream, reused)
            except _StaleStream:
                await _end_stream(stream, "reset")
                continue
            except BaseException:
                await _end_stream(stream, "reset")
                raise
            idle = self._pool.setdefault(key, [])
            if len(idle) < MAX_IDLE_STREAMS:
                idle.append(stream)
            else:
                await _end_stream(stream, "close")
            return result
        raise PeerUnavailable(f"peer {peer_id} keeps closing {protocol} streams")

    async def _request(self, stream: Any, reused: bool, frame: bytes, timeout: float) -> tuple[int, bytes]:
        """Write a frame header and read the first reply; a dead reused stream is a ``_StaleStream``."""
        try:
            await self._write(stream, frame, timeout)
            return await self._read_reply(stream, timeout)
        except PeerUnavailable:
            if reused:
                raise _StaleStream() from None
            raise

    def _remote_ip(self, stream: Any) -> str:
        try:
            ip = stream.get_remote_address()[0]
        except Exception:
            ip = None
        return ip or "127.0.0.1"

    async def _offer_bulk(self, stream: Any, timeout: float) -> tuple[bytes, bytes, Any]:
        token, key = bulk.new_secret()
        pending = self._bulk.expect(token, timeout)
        port = self._bulk_announce_port or self._bulk.port
        await self._write(stream, wire.encode_reply(wire.ST_BULK, bulk.encode_offer(port, token, key)), timeout)
        return token, key, pending

    def _with_bulk_socket(self, ip: str, port: int, token: bytes, timeout: float,
                          transfer: Callable[[socket.socket], Any]) -> Any:
        """Run ``transfer`` on a side socket that presented ``token``, kept for reuse if it succeeds.

        A kept socket may have been closed by the peer while idle: that fails before the peer took
        the token, so the transfer is retried once on a fresh connection with the same token.
        """
        for attempt in range(2):
            sock, reused = self._dialpool.checkout(ip, port, token, timeout, fresh=attempt > 0)
            try:
                sock.settimeout(timeout)
                result = transfer(sock)
            except PeerUnavailable:
                self._dialpool.discard(sock)
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                self._dialpool.discard(sock)
                raise
            self._dialpool.checkin(ip, port, sock)
            return result
        raise PeerUnavailable("bulk channel unavailable")

    # ------------------------------------------------------------------ /bsns/pipeline/1
    async def _send_tensor(self, peer_id: str, header: wire.Header, view: memoryview, timeout: float) -> bool:
        frame = header.encode()

        async def exchange(stream: Any, reused: bool) -> bool:
            status, body = await self._request(stream, reused, frame, timeout)
            if status == wire.ST_REFUSED:
                raise Unauthorized(f"peer {peer_id} refused us: {body.decode(errors='replace')}")
            if status == wire.ST_DROPPED:
                log.info("peer %s dropped %s: %s", peer_id, header.tags, body.decode(errors="replace"))
                return False
            if status == wire.ST_ERROR:
                raise P2PError(f"peer {peer_id} rejected the tensor: {body.decode(errors='replace')}")
            await self._send_payload(stream, status, body, view, peer_id, timeout)
            if status == wire.ST_INLINE:  # a bulk transfer was acknowledged on its own socket
                status, body = await self._read_reply(stream, timeout)
                if status != wire.ST_DONE:
                    raise P2PError(f"peer {peer_id} rejected the tensor: {body.decode(errors='replace')}")
            self.bytes_sent += len(view)
            return True

        return await self._exchange(peer_id, PIPELINE_PROTOCOL, timeout, exchange)

    async def _send_payload(self, stream: Any, status: int, body: bytes, view: memoryview, peer_id: str,
                            timeout: float) -> None:
        """Send ``view`` the way the receiver asked: inline on the stream or on the bulk channel."""
        import trio

        if status == wire.ST_INLINE:
            for off in range(0, len(view), STREAM_CHUNK):
                await self._write(stream, view[off:off + STREAM_CHUNK], timeout)
        elif status == wire.ST_BULK:
            port, token, key = bulk.decode_offer(body)
            ip = self._remote_ip(stream)

            def transfer(sock: socket.socket) -> None:
                _send_guarded(sock, key, token, view)
                _ack_guarded(sock, key, token)   # the receiver holds the tensor once this returns

            def push() -> None:
                self._with_bulk_socket(ip, port, token, timeout, transfer)

            try:
                await trio.to_thread.run_sync(push, abandon_on_cancel=True)
            except PeerUnavailable:
                # the receiver may have stopped reading on purpose: prefer its stated reason
                try:
                    status, body = await self._read_reply(stream, 2)
                except P2PError:
                    status = None
                if status == wire.ST_ERROR:
                    raise P2PError(f"peer {peer_id} rejected the tensor: {body.decode(errors='replace')}") from None
                raise
        else:
            raise WireError(f"unexpected reply status {status} from {peer_id}")

    async def _on_pipeline(self, stream: Any) -> None:
        # one stream carries any number of messages, one at a time; authorisation is asked per message
        while True:
            sender = await self._authorized(stream, PIPELINE_PROTOCOL)
            if sender is None:
                return
            if not await self._one_tensor(stream, sender):
                await _end_stream(stream, "close")
                return

    async def _one_tensor(self, stream: Any, sender: str) -> bool:
        """Handle one tensor message; False when the stream is finished (ended or unusable)."""
        timeout = self.timeout
        try:
            header = await self._read_header(stream, IDLE_STREAM_TIMEOUT)
        except WireError as exc:
            return await self._fail(stream, sender, exc)
        if header is None:
            return False
        if header.kind == wire.KIND_SESSION:
            return await self._accept_session(stream, sender, timeout)
        if header.kind != wire.KIND_TENSOR:
            await self._write(stream, wire.encode_reply(wire.ST_ERROR, b"expected a tensor frame"), timeout)
            return False
        reason = self.inbox.admit(header.tags)
        if reason is not None:
            await self._write(stream, wire.encode_reply(wire.ST_DROPPED, reason.encode()), timeout)
            return True
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
            return await self._fail(stream, sender, exc)
        finally:
            if not delivered:
                self.inbox.abort(header.tags)
        if not acked:
            await self._write(stream, wire.encode_reply(wire.ST_DONE), timeout)
        return True

    def _deliver(self, header: wire.Header, buf, hasher, sender: str) -> None:
        """Check a received payload against its declared hash and hand it to the inbox."""
        if hasher is not None and hasher.digest() != header.hash:
            raise HashMismatch(f"tensor {header.tags} from {sender} does not match its declared keccak-256")
        value = wire.payload_to_tensor_set(buf, header) if header.meta else wire.payload_to_tensor(buf, header)
        self.inbox.deliver(header.tags, value, sender)
        self.bytes_received += header.payload_len

    # ------------------------------------------------------------------ pipeline sessions
    async def _accept_session(self, stream: Any, sender: str, timeout: float) -> bool:
        """Key a pipeline session for ``sender`` and serve it on a thread of its own."""
        import trio

        if not self._bulk_enabled:
            await self._write(stream, wire.encode_reply(wire.ST_ERROR, b"no bulk channel on this node"), timeout)
            return True
        with self._lock:
            mine = sum(1 for ch in self._live_sessions if getattr(ch, "peer", None) == sender)
        if mine >= MAX_SESSIONS_PER_PEER:  # an authorised peer still cannot pin unbounded threads here
            await self._write(stream, wire.encode_reply(wire.ST_ERROR, b"too many sessions from this peer"), timeout)
            return True
        token, key, pending = await self._offer_bulk(stream, timeout)
        sock = await trio.to_thread.run_sync(self._bulk.take, token, pending, timeout, abandon_on_cancel=True)
        ch = bulk.SessionChannel(sock, key, token, dialler=False)
        ch.peer = sender
        with self._lock:
            if self._stopped.is_set():
                ch.close()
                return False
            self._live_sessions.add(ch)
        threading.Thread(target=self._serve_session, args=(ch, sender), daemon=True,
                         name=f"bsns-session-{sender[:10]}").start()
        return True

    def _serve_session(self, ch: bulk.SessionChannel, sender: str) -> None:
        """Receive messages on a session until the peer closes it, goes idle, or misbehaves."""
        try:
            while not self._stopped.is_set():
                ch.sock.settimeout(SESSION_IDLE_LISTENER)
                try:
                    raw = ch.recv_record(limit=MAX_HEADER_RECORD)
                except (PeerUnavailable, OSError):
                    return  # closed or idle
                ch.sock.settimeout(self.timeout)
                if not self._session_message(ch, sender, raw):
                    return
        except Exception as exc:  # nothing escapes: the session just ends
            log.warning("pipeline session with %s ended: %s", sender, exc)
        finally:
            with self._lock:
                self._live_sessions.discard(ch)
            ch.close()

    def _session_message(self, ch: bulk.SessionChannel, sender: str, raw: bytes) -> bool:
        """One message on a session; False when the session must end."""
        def verdict(status: int, body: bytes = b"") -> None:
            ch.send_record(wire.encode_reply(status, body))

        try:
            header = wire.Header.decode(raw, self.max_frame)
            if header.kind != wire.KIND_TENSOR:
                raise WireError("expected a tensor frame")
        except WireError as exc:
            verdict(wire.ST_ERROR, str(exc).encode())
            return False
        if not self._is_authorized_sync(sender, PIPELINE_PROTOCOL):  # before a byte of payload
            self.refused += 1
            verdict(wire.ST_REFUSED, f"{sender} is not authorised for {PIPELINE_PROTOCOL}".encode())
            return False
        reason = self.inbox.admit(header.tags)
        if reason is not None:
            ch.skip_payload(header.payload_len)
            verdict(wire.ST_DROPPED, reason.encode())
            return True
        delivered = False
        try:
            buf, view = wire.empty_payload(header.payload_len)
            hasher = keccak_hasher() if header.hash is not None else None
            ch.recv_payload(view, hasher)
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

    def _send_via_session(self, peer_id: str, header: wire.Header, view: memoryview, timeout: float) -> bool:
        """Send one message on a pipeline session (set up on first use); runs in the caller's thread."""
        frame = header.encode()
        for attempt in range(2):
            ch, reused = self._checkout_session(peer_id, timeout)
            try:
                ch.sock.settimeout(timeout)
                ch.send_record(frame)
                ch.send_payload(view)
                reply = ch.recv_record(limit=MAX_HEADER_RECORD)
            except (PeerUnavailable, OSError) as exc:
                self._drop_session(ch)
                if reused and attempt == 0:
                    continue  # a kept session that died (peer restarted): one retry on a new one
                if isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                    # the same event as an end of stream while reading, seen from the writing side
                    exc = PeerUnavailable("peer closed the bulk channel mid-transfer")
                raise PeerUnavailable(f"pipeline session to {peer_id} broke: {exc}") from None
            except BaseException:
                self._drop_session(ch)
                raise
            status, body = reply[0], reply[3:].decode(errors="replace")
            if status == wire.ST_DONE:
                self._checkin_session(peer_id, ch)
                self.bytes_sent += len(view)
                return True
            if status == wire.ST_DROPPED:
                self._checkin_session(peer_id, ch)
                log.info("peer %s dropped %s: %s", peer_id, header.tags, body)
                # on a retry, "duplicate" means the first attempt arrived before its session broke
                return attempt == 1 and body.startswith("duplicate")
            self._drop_session(ch)
            if status == wire.ST_REFUSED:
                raise Unauthorized(f"peer {peer_id} refused us: {body}")
            raise P2PError(f"peer {peer_id} rejected the tensor: {body}")
        raise PeerUnavailable(f"pipeline session to {peer_id} unavailable")

    def _checkout_session(self, peer_id: str, timeout: float) -> tuple[bulk.SessionChannel, bool]:
        now = time.monotonic()
        with self._lock:
            idle = self._sessions.get(peer_id, [])
            while idle:
                ch = idle.pop()
                if now - ch.last_used < SESSION_IDLE_DIALLER:
                    return ch, True
                self._live_sessions.discard(ch)
                ch.close()
        ch = self._call(self._open_session, peer_id, timeout)
        with self._lock:
            if self._stopped.is_set():
                ch.close()
                raise P2PError("p2p node stopped")
            self._live_sessions.add(ch)
        return ch, False

    def _checkin_session(self, peer_id: str, ch: bulk.SessionChannel) -> None:
        ch.last_used = time.monotonic()
        with self._lock:
            idle = self._sessions.setdefault(peer_id, [])
            if not self._stopped.is_set() and len(idle) < MAX_IDLE_STREAMS:
                idle.append(ch)
                return
            self._live_sessions.discard(ch)
        ch.close()

    def _drop_session(self, ch: bulk.SessionChannel) -> None:
        with self._lock:
            self._live_sessions.discard(ch)
        ch.close()

    async def _open_session(self, peer_id: str, timeout: float) -> bulk.SessionChannel:
        import trio

        frame = wire.Header(kind=wire.KIND_SESSION, payload_len=0).encode()

        async def exchange(stream: Any, reused: bool) -> bulk.SessionChannel:
            status, body = await self._request(stream, reused, frame, timeout)
            if status == wire.ST_REFUSED:
                raise Unauthorized(f"peer {peer_id} refused us: {body.decode(errors='replace')}")
            if status != wire.ST_BULK:
                raise _NoSession()
            port, token, key = bulk.decode_offer(body)
            ip = self._remote_ip(stream)
            try:
                sock = await trio.to_thread.run_sync(bulk.dial, ip, port, token, timeout, abandon_on_cancel=True)
            except PeerUnavailable:
                raise _NoSession() from None  # e.g. the bulk port is firewalled: use the stream
            return bulk.SessionChannel(sock, key, token, dialler=True)

        return await self._exchange(peer_id, PIPELINE_PROTOCOL, timeout, exchange)

    async def _fail(self, stream: Any, peer: str, exc: Exception) -> bool:
        """Tell the peer why its message was rejected, then end the stream (its framing is lost)."""
        log.warning("rejected a message from %s: %s", peer, exc)
        with contextlib.suppress(Exception):
            await self._write(stream, wire.encode_reply(wire.ST_ERROR, str(exc).encode()), 2)
        return False

    async def _receive_payload(self, stream: Any, view: memoryview, timeout: float, hasher: Any,
                               accept: Callable[[], None]) -> bool:
        """Receive into ``view`` and run ``accept``; True when the sender was acknowledged on the bulk socket."""
        import trio

        if len(view) >= self.bulk_threshold:
            token, key, pending = await self._offer_bulk(stream, timeout)

            def pull() -> None:  # one thread hop for the wait, the transfer, the check and the ack
                sock = self._bulk.take(token, pending, timeout)
                clean = False
                try:
                    sock.settimeout(timeout)
                    _recv_guarded(sock, key, token, view, hasher)
                    accept()
                    bulk.send_ack(sock, key, token)
                    clean = True
                finally:
                    self._bulk.release(sock, reusable=clean)

            await trio.to_thread.run_sync(pull, abandon_on_cancel=True)
            return True
        await self._write(stream, wire.encode_reply(wire.ST_INLINE), timeout)
        await self._read_into(stream, view, timeout, hasher)
        accept()
        return False

    # ------------------------------------------------------------------ /bsns/adapter/1
    async def _fetch_blob(self, peer_id: str, digest: bytes, timeout: float) -> bytes:
        import trio

        frame = wire.Header(kind=wire.KIND_BLOB_REQUEST, payload_len=0, hash=digest).encode()

        async def exchange(stream: Any, reused: bool) -> bytes:
            status, body = await self._request(stream, reused, frame, timeout)
            if status == wire.ST_REFUSED:
                raise Unauthorized(f"peer {peer_id} refused us: {body.decode(errors='replace')}")
            if status == wire.ST_NOT_FOUND:
                return b""
            if status != wire.ST_BLOB:
                raise P2PError(f"peer {peer_id} failed the blob request: {body.decode(errors='replace')}")
            header = wire.Header.decode(body, self.max_frame)
            if header.kind != wire.KIND_BLOB or header.hash != digest:
                raise HashMismatch(f"peer {peer_id} offered a different blob than 0x{digest.hex()}")
            buf = bytearray(header.payload_len)
            view = memoryview(buf)
            status, body = await self._read_reply(stream, timeout)
            if status == wire.ST_INLINE:
                hasher = keccak_hasher()
                await self._read_into(stream, view, timeout, hasher)
                got = hasher.digest()
            elif status == wire.ST_BULK:
                port, token, key = bulk.decode_offer(body)
                ip = self._remote_ip(stream)

                def transfer(sock: socket.socket) -> bytes:
                    h = keccak_hasher()  # per attempt: a retried transfer starts from the first byte
                    _recv_guarded(sock, key, token, view, h)
                    return h.digest()

                got = await trio.to_thread.run_sync(
                    self._with_bulk_socket, ip, port, token, timeout, transfer, abandon_on_cancel=True)
            else:
                raise P2PError(f"peer {peer_id} failed the blob transfer: {body.decode(errors='replace')}")
            if got != digest:
                raise HashMismatch(f"blob from peer {peer_id} hashes to 0x{got.hex()}, "
                                   f"not the requested 0x{digest.hex()}")
            self.bytes_received += len(buf)
            return bytes(buf)

        data = await self._exchange(peer_id, ADAPTER_PROTOCOL, timeout, exchange)
        if not data and data is not None:
            # b"" is also a valid blob: only a NOT_FOUND reply yields b"" for a non-empty-blob hash
            if digest != keccak256(b""):
                raise NotFound(f"peer {peer_id} does not serve blob 0x{digest.hex()}")
        return data

    async def _on_adapter(self, stream: Any) -> None:
        while True:
            requester = await self._authorized(stream, ADAPTER_PROTOCOL)
            if requester is None:
                return
            if not await self._one_blob(stream):
                await _end_stream(stream, "close")
                return

    async def _one_blob(self, stream: Any) -> bool:
        import trio

        timeout = self.timeout
        try:
            header = await self._read_header(stream, IDLE_STREAM_TIMEOUT)
            if header is not None and (header.kind != wire.KIND_BLOB_REQUEST or header.hash is None):
                raise WireError("expected a blob request with a hash")
        except WireError as exc:
            return await self._fail(stream, "a peer", exc)
        if header is None:
            return False
        data = self.store.get(header.hash)
        if data is None:
            await self._write(stream, wire.encode_reply(wire.ST_NOT_FOUND), timeout)
            return True
        blob = wire.Header(kind=wire.KIND_BLOB, payload_len=len(data), hash=header.hash)
        await self._write(stream, wire.encode_reply(wire.ST_BLOB, blob.encode()), timeout)
        view = memoryview(data)
        self.bytes_sent += len(data)
        if len(data) >= self.bulk_threshold:
            token, key, pending = await self._offer_bulk(stream, timeout)

            def push() -> None:
                sock = self._bulk.take(token, pending, timeout)
                clean = False
                try:
                    sock.settimeout(timeout)
                    _send_guarded(sock, key, token, view)
                    clean = True
                finally:
                    self._bulk.release(sock, reusable=clean)

            await trio.to_thread.run_sync(push, abandon_on_cancel=True)
        else:
            await self._write(stream, wire.encode_reply(wire.ST_INLINE), timeout)
            for off in range(0, len(view), STREAM_CHUNK):
                await self._write(stream, view[off:off + STREAM_CHUNK], timeout)
        return True

    # ------------------------------------------------------------------ Kademlia
    async def _on_kad(self, stream: Any) -> None:
        try:
            addr = eth_address_from_peer_id(stream.muxed_conn.peer_id)
            ok = await self._is_authorized(addr, KAD_PROTOCOL)
        except Exception:
            ok = False
        if not ok:
            self.refused += 1
            await _end_stream(stream, "reset")
            return
        await self._dht.handle_stream(stream)

    async def _provide(self, digest: bytes) -> bool:
        import trio

        with trio.move_on_after(self.timeout):
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
            if pid == self.peer_id:
                continue
            try:
                eth_address_from_peer_id(pid)
            except P2PError:
                continue  # not a bsns node
            with self._lock:
                known = self._addr_book.setdefault(pid, [])
                for a in info.addrs:
                    base = str(a).split("/p2p/")[0]
                    if base not in known:
                        known.append(base)
            out.append(pid)
        return out

    # ------------------------------------------------------------------ gossip
    async def _subscribe(self, topic: str) -> None:
        sub = await self._pubsub.subscribe(topic)
        self._pubsub.set_topic_validator(topic, self._gossip_validator(topic), True)
        self._nursery.start_soon(self._pump, topic, sub)

    def _gossip_validator(self, topic: str) -> Callable[[Any, Any], Any]:
        async def validate(_forwarder: Any, msg: Any) -> bool:
            from libp2p.peer.id import ID

            try:
                addr = eth_address_from_peer_id(ID(msg.from_id))
                return await self._is_authorized(addr, GOSSIP_PREFIX + topic)
            except Exception:
                return False
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
                continue
            self._callbacks.put((topic, sender, bytes(msg.data)))

    async def _publish(self, topic: str, data: bytes) -> None:
        await self._pubsub.publish(topic, data)

    async def _topic_peers(self, topic: str) -> list[str]:
        peers = self._pubsub.peer_topics.get(topic, set())
        out = []
        for p in peers:
            try:
                out.append(eth_address_from_peer_id(p))
            except P2PError:
                pass
        return sorted(out)

    async def _connected_peers(self) -> list[str]:
        return sorted(eth_address_from_peer_id(p) for p, c in self._host.get_network().connections.items() if c)


def _recv_guarded(sock: socket.socket, key: bytes, token: bytes, view: memoryview, hasher: Any) -> None:
    try:
        bulk.recv_records(sock, key, token, view, hasher)
    except (socket.timeout, TimeoutError):
        raise PeerUnavailable("bulk channel stalled") from None
    except OSError as exc:
        raise PeerUnavailable(f"bulk channel broke: {exc}") from None


def _ack_guarded(sock: socket.socket, key: bytes, token: bytes) -> None:
    try:
        bulk.recv_ack(sock, key, token)
    except (socket.timeout, TimeoutError):
        raise PeerUnavailable("peer did not acknowledge the bulk transfer") from None
    except OSError as exc:
        raise PeerUnavailable(f"bulk channel broke before the acknowledgement: {exc}") from None


def _send_guarded(sock: socket.socket, key: bytes, token: bytes, view: memoryview) -> None:
    try:
        bulk.send_records(sock, key, token, view)
    except OSError as exc:
        raise PeerUnavailable(f"bulk channel broke: {exc}") from None


class _NoSession(Exception):
    """The peer does not offer pipeline sessions (or its bulk port is unreachable): use the stream."""


class _StaleStream(Exception):
    """A pooled stream turned out dead before any payload moved: retry on a fresh one."""


async def _end_stream(stream: Any, how: str) -> None:
    """``stream.reset()`` or ``stream.close()``, bounded in time and never raising: called on paths that
    are already failing or finishing, where a second error would hide the first."""
    import trio

    with trio.move_on_after(2):
        try:
            await getattr(stream, how)()
        except Exception:
            pass


def _root_cause(exc: BaseException) -> BaseException:
    """The first leaf of (nested) exception groups: trio wraps failures in them."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _ip_of(maddr: str) -> str:
    """The IP to bind the bulk listener to: the libp2p listen IP, or every interface for a DNS name."""
    parts = maddr.split("/")
    return parts[2] if len(parts) > 2 and parts[1] in ("ip4", "ip6") else "0.0.0.0"


__all__ = ["P2PNode", "PIPELINE_PROTOCOL", "ADAPTER_PROTOCOL", "KAD_PROTOCOL", "session_topic"]
