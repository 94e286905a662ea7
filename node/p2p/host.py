"""The p2p host: a libp2p host in a background trio thread, and what every service shares on it.

Owns the trio thread and the blocking-call bridge (``call``), the libp2p host itself (TCP + Noise +
yamux only, secp256k1 identity), dialling (the address book and the library's dialling workarounds),
authorisation (``authorize`` off the trio thread, a yes cached briefly), the pooled request/response
exchange on streams (with the stream limits) and the write side of framing. It knows no protocol:
services (``Service``) register their handlers, the library services they need run, and their
clean-up, and the host never imports one. Hand-written because py-libp2p is trio-only and offers
neither a blocking API nor request pooling, and hivemind's split (a daemon plus servicers) needs its
Go daemon.

The workarounds for py-libp2p's known failures live here, each measured:

- every stream handler is wrapped (``handle``): no exception escapes it, since one that did would
  silently stop the connection from accepting streams;
- a write that times out is never resumed: the peer is disconnected (the connection may be corrupt)
  and the next call redials it;
- every known address of a peer is tried in turn (the library only dials the first per transport);
- ``close()`` disconnects every peer and awaits ``host.close()``, or leaving ``host.run()`` leaks
  outgoing sockets; a disconnect that overruns or is cancelled half-way still closes its socket
  (see ``_close_peer``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Awaitable, Callable

from node.p2p import framing, wire
from node.p2p.errors import P2PError, PeerUnavailable
from node.p2p.gate import PeerGate
from node.p2p.identity import eth_address_from_peer_id
from node.p2p.limits import AUTH_TTL, AUTH_WORKERS, DISCONNECT_TIMEOUT, MAX_IDLE_STREAMS

log = logging.getLogger(__name__)

Authorize = Callable[[str, str], bool]


class Service:
    """What the host asks of a service it runs; every hook is optional."""

    def start(self) -> None:
        """Blocking, before the host's thread starts; may raise ``P2PError`` (e.g. a port in use)."""

    def attach(self) -> list[Any]:
        """In the trio thread, before the host listens: register handlers with ``host.handle``; return
        the library's background services (pubsub, DHT) to run while the host runs."""
        return []

    async def started(self) -> None:
        """In the trio thread, once the background services run and before the host reports ready."""

    def close(self) -> None:
        """Blocking, from the closing thread, before the trio loop stops: release sockets and threads."""


class StaleStream(Exception):
    """A pooled stream turned out dead before any payload moved: retry on a fresh one."""


class Host:
    def __init__(self, keypair: Any, authorize: Authorize, *, listen: str, timeout: float,
                 max_frame: int) -> None:
        self._keypair = keypair
        self._authorize_fn = authorize
        self._listen = listen
        self.timeout = timeout
        self.max_frame = max_frame
        self.peer_id = ""
        self.addrs: list[str] = []
        self.lp2p: Any = None                       # the libp2p host, once the trio thread made it
        self.gate = PeerGate()                      # the library's resource manager plus ours (node.p2p.gate)
        self._services: list[Service] = []
        self._connect_hooks: list[Callable[[Any], Awaitable[Any]]] = []
        self._addr_book: dict[str, list[str]] = {}
        self._pool: dict[tuple[str, str], list[Any]] = {}
        self._auth_cache: dict[tuple[str, str], float] = {}
        self._pools: dict[str, Any] = {}            # name -> trio.CapacityLimiter (see ``pool``)
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.closing = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ services
    def register(self, service: Service) -> None:
        """Run ``service`` with the host (before ``start``); hooks run in registration order."""
        self._services.append(service)

    def on_connect(self, hook: Callable[[Any], Awaitable[Any]]) -> None:
        """``await hook(peer ID)`` after each dial this host makes (errors ignored)."""
        self._connect_hooks.append(hook)

    def handle(self, protocol: str, handler: Callable[[Any], Awaitable[None]]) -> None:
        """Serve ``protocol`` with ``handler(stream)``; nothing it raises escapes (that would wedge the
        connection): the stream is reset instead. Call from ``Service.attach``."""
        async def guarded(stream: Any) -> None:
            try:
                await handler(stream)
            except Exception as exc:
                log.warning("%s handler failed: %s", protocol, exc)
                try:
                    await stream.reset()
                except Exception:
                    pass
        self.lp2p.set_stream_handler(protocol, guarded)

    def pool(self, name: str, size: int) -> Any:
        """The worker-thread pool ``name`` (a ``trio.CapacityLimiter`` of ``size``), made on first use.

        Each kind of blocking work gets its own pool instead of trio's one shared default of 40, so
        requests on an open protocol that occupy every blob worker cannot delay an authorisation
        check (measured before: a registered peer's first message took 26 s behind 40 blob requests).
        Trio thread only.
        """
        import trio

        if name not in self._pools:
            self._pools[name] = trio.CapacityLimiter(size)
        return self._pools[name]

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in the host's nursery until the host stops (trio thread only)."""
        self._nursery.start_soon(fn, *args)

    # ------------------------------------------------------------------ lifecycle
    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self, timeout: float = 30.0) -> None:
        for service in self._services:
            try:
                service.start()
            except BaseException:
                self.close()
                raise
        self._thread = threading.Thread(target=self._run, name="bsns-p2p", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self.close()
            raise P2PError(f"p2p host failed to start: {self._error or 'timed out'}")

    def close(self) -> None:
        """Close every service, disconnect every peer and close the host; idempotent."""
        if self.closing.is_set():
            return
        self.closing.set()
        for service in self._services:
            try:
                service.close()
            except Exception as exc:  # one service failing to close must not keep the others open
                log.warning("closing %s failed: %s", type(service).__name__, exc)
        if self._thread is not None and self._thread.is_alive() and self._ready.is_set():
            try:
                import trio

                trio.from_thread.run_sync(self._stop_event.set, trio_token=self._trio_token)
            except Exception:
                pass
            self._thread.join(timeout=30)

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``fn(*args)`` in the trio thread and wait for its result (from any other thread)."""
        import trio

        if self.closing.is_set() or not self._ready.is_set():
            raise P2PError("p2p node is not running")
        if threading.current_thread() is self._thread:
            raise P2PError("P2PNode methods are blocking: do not call them from the node's own thread")
        try:
            return trio.from_thread.run(fn, *args, trio_token=self._trio_token)
        except trio.RunFinishedError:
            raise P2PError("p2p node stopped") from None

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
        from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
        from libp2p.security.noise.transport import Transport as Noise
        from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_ID
        from libp2p.stream_muxer.yamux.yamux import Yamux
        from libp2p.tools.anyio_service import background_trio_service

        # Noise only and yamux only: the library's defaults also offer plaintext, secio and TLS, and
        # even its create_yamux_muxer_option() keeps mplex as a fallback.
        host = new_host(key_pair=self._keypair,
                        sec_opt={NOISE_ID: Noise(self._keypair, noise_privkey=new_x25519().private_key)},
                        muxer_opt={YAMUX_ID: Yamux}, resource_manager=self.gate)
        self.lp2p = host
        self._stop_event = trio.Event()
        background = [svc for service in self._services for svc in service.attach()]
        try:
            async with host.run([multiaddr.Multiaddr(self._listen)]):
                async with contextlib.AsyncExitStack() as running:
                    for svc in background:
                        await running.enter_async_context(background_trio_service(svc))
                    for service in self._services:
                        await service.started()
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
        for pid in list(self.lp2p.get_network().connections):
            await self._close_peer(pid)

    async def _close_peer(self, pid: Any) -> None:
        """Close every connection to ``pid`` and its socket, whatever happens half-way.

        The library marks a connection closed before it closes the muxer and the socket, and every
        later close of a marked connection (``host.close()`` included) returns at once: a close
        cancelled in between leaks an ESTABLISHED socket for good. So the close is shielded from the
        caller's cancellation, bounded by ``DISCONNECT_TIMEOUT``, and any connection whose muxer did
        not end up closed (a close stuck or cancelled half-way, here or inside the library) gets its
        secured connection, hence its socket, closed directly.
        """
        import trio

        conns = list(self.lp2p.get_network().connections.get(pid, []))
        with trio.CancelScope(shield=True):
            with trio.move_on_after(DISCONNECT_TIMEOUT):
                try:
                    await self.lp2p.disconnect(pid)
                except Exception as exc:
                    log.debug("disconnect %s: %s", pid, exc)
            for conn in conns:
                muxed = getattr(conn, "muxed_conn", None)
                if muxed is not None and not getattr(muxed, "is_closed", True):
                    with trio.move_on_after(DISCONNECT_TIMEOUT), contextlib.suppress(Exception):
                        await muxed.secured_conn.close()

    # ------------------------------------------------------------------ authorisation
    async def authorized(self, stream: Any, protocol: str) -> str | None:
        """The stream's peer address if authorised for ``protocol``; otherwise tell it so (``ST_REFUSED``),
        close the stream and return None. The caller counts the refusal."""
        import trio

        try:
            addr = eth_address_from_peer_id(stream.muxed_conn.peer_id)
            ok = await self.is_authorized(addr, protocol)
        except Exception as exc:
            log.warning("authorisation check failed: %s", exc)
            addr, ok = "unknown", False
        if not ok:
            with trio.move_on_after(2):
                await stream.write(wire.encode_reply(wire.ST_REFUSED, f"{addr} is not authorised for {protocol}".encode()))
            await stream.close()
            return None
        return addr

    async def is_authorized(self, addr: str, protocol: str) -> bool:
        """Ask ``authorize`` off the trio thread (it may query the chain); a yes is reused briefly."""
        import trio

        if self._auth_cache.get((addr, protocol), 0.0) > time.monotonic():
            return True
        return await trio.to_thread.run_sync(self.is_authorized_sync, addr, protocol,
                                             limiter=self.pool("auth", AUTH_WORKERS))

    def is_authorized_sync(self, addr: str, protocol: str) -> bool:
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

    # ------------------------------------------------------------------ peers sent away
    def send_away(self, address: str) -> None:
        """Disconnect ``address`` and refuse its connections and streams for a cool-down (``node.p2p.gate``).

        Any thread: the gate refuses it at once; its connections are closed in the host's nursery, never
        from inside the handler whose stream is being refused.
        """
        import trio

        self.gate.send_away(address)
        log.warning("sent %s away: too many refused messages", address)
        if self.closing.is_set() or not self._ready.is_set():
            return
        if threading.current_thread() is self._thread:
            self._nursery.start_soon(self._disconnect_address, address.lower())
        else:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._nursery.start_soon, self._disconnect_address, address.lower(),
                                          trio_token=self._trio_token)

    async def _disconnect_address(self, address: str) -> None:
        for pid in list(self.lp2p.get_network().connections):
            with contextlib.suppress(Exception):
                if eth_address_from_peer_id(pid).lower() == address:
                    await self.drop_peer(pid)

    # ------------------------------------------------------------------ peers
    def add_peer(self, peer_id: str, addrs: list[str] | str) -> None:
        """Remember a peer's addresses, newest first (e.g. re-registered after a restart)."""
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
            old = [a for a in self._addr_book.get(peer_id, []) if a not in clean]
            self._addr_book[peer_id] = clean + old

    def learn_addrs(self, peer_id: str, addrs: list[Any]) -> None:
        """Addresses heard from the network (e.g. a provider record): tried after the known ones."""
        with self._lock:
            known = self._addr_book.setdefault(peer_id, [])
            for a in addrs:
                base = str(a).split("/p2p/")[0]
                if base not in known:
                    known.append(base)

    async def ensure_connected(self, peer_id: str, timeout: float) -> Any:
        """The peer's libp2p ID, dialling its known addresses one at a time if not connected."""
        import multiaddr
        import trio
        from libp2p.peer.id import ID
        from libp2p.peer.peerinfo import PeerInfo

        pid = ID.from_base58(peer_id)
        network = self.lp2p.get_network()
        if network.connections.get(pid):
            return pid
        with self._lock:
            addrs = list(self._addr_book.get(peer_id, []))
        if not addrs:
            raise PeerUnavailable(f"no known address for peer {peer_id}")
        errors = []
        for a in addrs:  # one at a time: the library would only try the first
            # forget what the library remembers about this peer: stale addresses and its
            # "recently failed" block would otherwise keep it from dialling the address we give
            with contextlib.suppress(Exception):
                self.lp2p.get_peerstore().clear_addrs(pid)
            with contextlib.suppress(Exception):
                network.unblock_peer(pid)
            with trio.move_on_after(timeout) as cs:
                try:
                    await self.lp2p.connect(PeerInfo(pid, [multiaddr.Multiaddr(a)]))
                    for hook in self._connect_hooks:
                        with contextlib.suppress(Exception):
                            await hook(pid)
                    return pid
                except Exception as exc:
                    errors.append(f"{a}: {exc}")
            if cs.cancelled_caught:
                errors.append(f"{a}: timed out")
        raise PeerUnavailable(f"cannot reach peer {peer_id}: {'; '.join(errors)}")

    async def drop_peer(self, pid: Any) -> None:
        """Forget the peer's pooled streams and disconnect it (it is redialled on next use)."""
        for key in [k for k in self._pool if k[0] == str(pid)]:
            self._pool.pop(key, None)
        await self._close_peer(pid)

    async def connected_peers(self) -> list[str]:
        return sorted(eth_address_from_peer_id(p) for p, c in self.lp2p.get_network().connections.items() if c)

    # ------------------------------------------------------------------ streams
    async def write(self, stream: Any, data: bytes | memoryview, timeout: float) -> None:
        """Write all of ``data``; on a timeout never resume the write: disconnect (redial next time)."""
        import trio

        with trio.move_on_after(timeout) as cs:
            try:
                await stream.write(bytes(data) if isinstance(data, memoryview) else data)
            except Exception as exc:  # reset/closed stream or dead connection: libp2p raises several kinds
                raise PeerUnavailable(f"write failed: {type(exc).__name__}: {exc}") from None
        if cs.cancelled_caught:
            await self.drop_peer(stream.muxed_conn.peer_id)
            raise PeerUnavailable("write timed out; disconnected the peer (it is redialled on next use)")

    async def reject(self, stream: Any, peer: str, exc: Exception) -> bool:
        """Tell the peer why its message was rejected, for a handler that then ends the stream (its
        framing is lost); returns False, the handler's "stream finished"."""
        log.warning("rejected a message from %s: %s", peer, exc)
        with contextlib.suppress(Exception):
            await self.write(stream, wire.encode_reply(wire.ST_ERROR, str(exc).encode()), 2)
        return False

    async def read_header(self, stream: Any, timeout: float) -> wire.Header | None:
        """The next frame header under this node's frame limit (None: the peer ended the stream)."""
        return await framing.read_header(stream, timeout, self.max_frame)

    async def _open(self, peer_id: str, protocol: str, timeout: float) -> Any:
        """A new stream to the peer; a connection that turns out dead is dropped and redialled once."""
        import trio

        err: Exception | None = None
        for _attempt in range(2):
            pid = await self.ensure_connected(peer_id, timeout)
            with trio.move_on_after(timeout) as cs:
                try:
                    return await self.lp2p.new_stream(pid, [protocol])
                except Exception as exc:
                    err = exc
            await self.drop_peer(pid)   # dead or wedged connection (e.g. the peer restarted)
            if cs.cancelled_caught:
                raise PeerUnavailable(f"opening {protocol} to {peer_id} timed out; disconnected")
        raise PeerUnavailable(f"cannot open {protocol} to {peer_id}: {err}")

    async def exchange(self, peer_id: str, protocol: str, timeout: float,
                       fn: Callable[[Any, bool], Awaitable[Any]]) -> Any:
        """Run one request on a pooled stream (multistream negotiation costs a few ms per stream).

        ``fn(stream, reused)`` raises ``StaleStream`` when a reused stream died before any payload
        moved (the peer closed an idle stream); the request is then retried once on a fresh stream.
        """
        key = (peer_id, protocol)
        for _attempt in range(2):
            idle = self._pool.get(key)
            reused = bool(idle)
            stream = idle.pop() if idle else await self._open(peer_id, protocol, timeout)
            try:
                result = await fn(stream, reused)
            except StaleStream:
                await framing.end_stream(stream, "reset")
                continue
            except BaseException:
                await framing.end_stream(stream, "reset")
                raise
            idle = self._pool.setdefault(key, [])
            if len(idle) < MAX_IDLE_STREAMS:
                idle.append(stream)
            else:
                await framing.end_stream(stream, "close")
            return result
        raise PeerUnavailable(f"peer {peer_id} keeps closing {protocol} streams")

    async def request(self, stream: Any, reused: bool, frame: bytes, timeout: float) -> tuple[int, bytes]:
        """Write a frame header and read the first reply; a dead reused stream is a ``StaleStream``."""
        try:
            await self.write(stream, frame, timeout)
            return await framing.read_reply(stream, timeout)
        except PeerUnavailable:
            if reused:
                raise StaleStream() from None
            raise


def check_listen(listen: str) -> None:
    """Raise ``P2PError`` (one line) when ``listen`` parses but cannot be bound on this host: a port in use, an
    address that is not this machine's. The library only logs a failed listen and carries on, so without this
    the failure surfaced late, after the chain was contacted, beside the library's own log lines. Binds with
    ``SO_REUSEADDR`` as trio's listeners do, so a port the last run left in TIME_WAIT passes here as there."""
    import socket

    import multiaddr

    try:
        maddr = multiaddr.Multiaddr(listen)
        protos = {p.name for p in maddr.protocols()}
        family = socket.AF_INET6 if "ip6" in protos else socket.AF_INET
        ip = maddr.value_for_protocol("ip6" if "ip6" in protos else "ip4")
        port = int(maddr.value_for_protocol("tcp"))
    except Exception:
        return   # not an /ip4|ip6/.../tcp/... address: the config's validator says what is wrong with it
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
        except OSError as exc:
            raise P2PError(f"cannot listen on {listen}: {exc.strerror or exc}") from None


def _root_cause(exc: BaseException) -> BaseException:
    """The first leaf of (nested) exception groups: trio wraps failures in them."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
