"""The bulk channel: large payloads on a side TCP socket that libp2p negotiates and keys.

Owns the side socket: a listener thread that hands incoming sockets to the transfer whose one-time
token they present, the dialling side's kept sockets, and the record layer that moves bytes over them
with AES-256-GCM, for single transfers and for ``Link`` (one socket carrying many pipeline messages).
How the services use it is ``node.p2p.bulkport``; links are pooled by ``node.p2p.links``.

Why it exists: py-libp2p moves one stream at ~0.1-0.3 GB/s on loopback (64 KiB yamux frames and
64 KiB Noise messages, each a trip through the trio scheduler), where a plain socket moves
~2 GB/s. Large tensors therefore go on a socket of their own, while everything that decides *who*
talks and *what* is sent stays on libp2p.

Security argument. The receiving side of a libp2p stream (already Noise-authenticated to the peer id,
hence to the peer's Ethereum address, and checked by ``authorize``) draws a fresh random 16-byte token
and 32-byte AES key and sends them, with its bulk port, on that Noise-encrypted stream. Only the
authenticated peer learns them. The dialler presents the token on the side socket (the listener
matches and forgets it: single use, expiring), then bytes travel as fixed-size AES-256-GCM records
with the record counter as nonce and the token as associated data. Hence: confidentiality and
integrity as strong as Noise (a fresh key per transfer, so nonces never repeat under one key);
reordering, replay, or truncation of records is detected (counter nonces, exact length known from
the header sent over libp2p); the receiver's acknowledgement is itself a sealed record (a nonce no data
record uses), so "delivered" cannot be forged either; a stranger who connects to the port learns
nothing and can inject nothing without the key. The side socket is never trusted for who the peer
is: identity comes only from the libp2p stream that carried the token and key.

Written by hand because no library offers "authenticated bulk socket keyed from a libp2p stream";
the cipher is ``cryptography``'s AES-GCM (OpenSSL, AES-NI).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from typing import Any, Callable

from node.p2p.errors import IntegrityError, PeerUnavailable

log = logging.getLogger(__name__)

RECORD = 1 << 20          # plaintext bytes per AES-GCM record
TAG = 16
TOKEN_LEN = 16
MAX_PARKED = 256          # sockets waiting to present a token (new or kept between transfers)
MAX_FRESH_PER_ADDR = 16   # new sockets from one IP that have not presented a token yet
HANDSHAKE_TIMEOUT = 5.0   # a new socket must present its token this soon (a dialler sends it at once)
KEY_LEN = 32
_NONCE_PREFIX = b"\0\0\0\0"


def _nonce(counter: int) -> bytes:
    return _NONCE_PREFIX + counter.to_bytes(8, "big")


def new_secret() -> tuple[bytes, bytes]:
    """A fresh (token, key) for one transfer."""
    return os.urandom(TOKEN_LEN), os.urandom(KEY_LEN)


def encode_offer(port: int, token: bytes, key: bytes) -> bytes:
    return struct.pack(">H", port) + token + key


def decode_offer(body: bytes) -> tuple[int, bytes, bytes]:
    if len(body) != 2 + TOKEN_LEN + KEY_LEN:
        raise IntegrityError("malformed bulk-channel offer")
    return struct.unpack(">H", body[:2])[0], body[2:2 + TOKEN_LEN], body[2 + TOKEN_LEN:]


def _recv_exactly(sock: socket.socket, view: memoryview) -> None:
    got = 0
    n = len(view)
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise PeerUnavailable("peer closed the bulk channel mid-transfer")
        got += k


def send_records(sock: socket.socket, key: bytes, token: bytes, data: memoryview,
                 on_record: Callable[[int], None] | None = None) -> None:
    """Encrypt ``data`` record by record and write it to ``sock`` (blocking)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)
    out = bytearray(RECORD + TAG)
    mv = memoryview(out)
    total = len(data)
    for counter, off in enumerate(range(0, total, RECORD)):
        n = min(RECORD, total - off)
        aead.encrypt_into(_nonce(counter), data[off:off + n], token, mv[:n + TAG])
        sock.sendall(mv[:n + TAG])
        if on_record is not None:
            on_record(counter)


class _HashPump:
    """Hash decrypted records on a second thread while the next ones arrive.

    pycryptodome's keccak runs in C through cffi, which releases the GIL, so on a machine with a spare
    core the hash of a blob costs no extra wall time beyond its last record.
    """

    def __init__(self, hasher: Any) -> None:
        import queue

        self.hasher = hasher
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (chunk := self.q.get()) is not None:
            self.hasher.update(chunk)

    def feed(self, chunk: memoryview) -> None:
        self.q.put(chunk)

    def finish(self) -> None:
        self.q.put(None)
        self.thread.join()


def recv_records(sock: socket.socket, key: bytes, token: bytes, out: memoryview,
                 hasher: Any = None) -> None:
    """Read, authenticate and decrypt records into ``out`` (blocking); feed plaintext to ``hasher``."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)
    inbuf = bytearray(RECORD + TAG)
    mv = memoryview(inbuf)
    total = len(out)
    pump = _HashPump(hasher) if hasher is not None else None
    try:
        for counter, off in enumerate(range(0, total, RECORD)):
            n = min(RECORD, total - off)
            _recv_exactly(sock, mv[:n + TAG])
            try:
                aead.decrypt_into(_nonce(counter), mv[:n + TAG], token, out[off:off + n])
            except InvalidTag:
                raise IntegrityError(f"bulk record {counter} failed authentication: corrupted or tampered bytes") from None
            if pump is not None:
                pump.feed(out[off:off + n])   # records are written once: the slice stays valid
    finally:
        if pump is not None:
            pump.finish()


_ACK_COUNTER = (1 << 64) - 1   # never a data record's counter: the ack's nonce is unique under the key


def send_ack(sock: socket.socket, key: bytes, token: bytes) -> None:
    """The receiver's sealed "all records received and accepted" (an empty AES-GCM record)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    sock.sendall(AESGCM(key).encrypt(_nonce(_ACK_COUNTER), b"", token + b"ack"))


def recv_ack(sock: socket.socket, key: bytes, token: bytes) -> None:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    tag = bytearray(TAG)
    _recv_exactly(sock, memoryview(tag))
    try:
        AESGCM(key).decrypt(_nonce(_ACK_COUNTER), bytes(tag), token + b"ack")
    except InvalidTag:
        raise IntegrityError("bulk transfer acknowledgement failed authentication") from None


def dial(host: str, port: int, token: bytes, timeout: float) -> socket.socket:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise PeerUnavailable(f"cannot open bulk channel to {host}:{port}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.sendall(token)
    except OSError as exc:
        sock.close()
        raise PeerUnavailable(f"bulk channel to {host}:{port} failed: {exc}") from None
    return sock


class _Pending:
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.sock: socket.socket | None = None
        self.ready = threading.Event()


class _Parked:
    """A socket waiting to present a token: new (``fresh``: nobody knows who it is), or kept open after
    a clean transfer for the next one (it presented a valid token once: an authorised peer's)."""

    def __init__(self, sock: socket.socket, deadline: float, addr: str = "", fresh: bool = False) -> None:
        self.sock = sock
        self.deadline = deadline
        self.addr = addr
        self.fresh = fresh
        self.since = time.monotonic()
        self.token = bytearray()


class BulkListener:
    """Hands each side socket to the pending transfer whose one-time token it presents.

    One selector thread accepts connections and reads tokens from every parked socket (no thread per
    connection). A socket whose transfer ended cleanly is parked again, so a dialler that keeps it
    can present the next transfer's token without a new TCP connection; an idle parked socket is
    closed after ``idle_timeout``.

    Strangers can connect here (the port is public), so a new socket must present its token within
    ``handshake_timeout``, one IP may have at most ``MAX_FRESH_PER_ADDR`` new sockets waiting, and
    when a limit is reached the *oldest* waiting socket is evicted, never the newcomer: a stranger
    holding idle sockets cannot keep a dialler that sends its token at once from getting in.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token_timeout: float = 30.0,
                 idle_timeout: float = 120.0, handshake_timeout: float = HANDSHAKE_TIMEOUT) -> None:
        import selectors

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._srv = socket.create_server((host, port), family=family, backlog=64)
        self._srv.setblocking(False)
        self.host = host
        self.port = self._srv.getsockname()[1]
        self._token_timeout = token_timeout
        self._idle_timeout = idle_timeout
        self._handshake_timeout = handshake_timeout
        self.evicted = 0  # waiting sockets closed to make room for newcomers
        self._pending: dict[bytes, _Pending] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._live: set[socket.socket] = set()
        self._to_park: list[socket.socket] = []
        self.parked = 0  # sockets waiting to present a token, as of the selector loop's last pass
        self._waker_r, self._waker_w = socket.socketpair()
        self._waker_r.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._srv, selectors.EVENT_READ, "accept")
        self._sel.register(self._waker_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._loop, name=f"bsns-bulk-{self.port}", daemon=True)
        self._thread.start()

    def expect(self, token: bytes, timeout: float) -> _Pending:
        pending = _Pending(time.monotonic() + timeout)
        with self._lock:
            self._pending[token] = pending
        return pending

    def take(self, token: bytes, pending: _Pending, timeout: float) -> socket.socket:
        """Wait for the dialler to present ``token``; the token is forgotten either way."""
        try:
            if not pending.ready.wait(timeout) or pending.sock is None:
                raise PeerUnavailable("peer did not open the bulk channel in time")
            return pending.sock
        finally:
            with self._lock:
                self._pending.pop(token, None)

    def release(self, sock: socket.socket, reusable: bool = False) -> None:
        """A transfer on ``sock`` ended: park it for the next token if it ended cleanly, else close it."""
        with self._lock:
            self._live.discard(sock)
            if reusable and not self._closed.is_set():
                self._to_park.append(sock)
                sock = None
        if sock is None:
            try:
                self._waker_w.send(b"x")
            except OSError:
                pass
            return
        _close(sock)

    def _loop(self) -> None:
        import selectors

        parked: dict[socket.socket, _Parked] = {}
        while not self._closed.is_set():
            try:
                events = self._sel.select(timeout=0.5)
            except OSError:
                break
            now = time.monotonic()
            for key, _ in events:
                if key.data == "accept":
                    try:
                        conn, peer = self._srv.accept()
                    except OSError:
                        continue
                    addr = str(peer[0])
                    self._make_room(parked, addr)
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    parked[conn] = _Parked(conn, now + min(self._token_timeout, self._handshake_timeout),
                                           addr, fresh=True)
                    self._sel.register(conn, selectors.EVENT_READ, "token")
                elif key.data == "wake":
                    try:
                        self._waker_r.recv(4096)
                    except OSError:
                        pass
                    with self._lock:
                        socks, self._to_park = self._to_park, []
                    for sock in socks:
                        sock.setblocking(False)
                        parked[sock] = _Parked(sock, now + self._idle_timeout)
                        self._sel.register(sock, selectors.EVENT_READ, "token")
                else:
                    self._read_token(parked, key.fileobj)
            for sock in [s for s, p in parked.items() if p.deadline < now]:
                self._drop(parked, sock)
            with self._lock:
                for token in [t for t, p in self._pending.items() if p.deadline < now]:
                    self._pending.pop(token).ready.set()
            self.parked = len(parked)
        for sock in list(parked):
            self._drop(parked, sock)

    def _make_room(self, parked: dict, addr: str) -> None:
        """Evict the oldest waiting sockets so a newcomer from ``addr`` fits both limits."""
        fresh_here = [p for p in parked.values() if p.fresh and p.addr == addr]
        if len(fresh_here) >= MAX_FRESH_PER_ADDR:
            self._evict(parked, min(fresh_here, key=lambda p: p.since))
        if len(parked) >= MAX_PARKED:  # descriptors stay bounded; strangers' sockets go first
            fresh = [p for p in parked.values() if p.fresh]
            self._evict(parked, min(fresh or parked.values(), key=lambda p: p.since))

    def _evict(self, parked: dict, entry: _Parked) -> None:
        self.evicted += 1
        self._drop(parked, entry.sock)

    def _read_token(self, parked: dict, sock: socket.socket) -> None:
        entry = parked[sock]
        try:
            chunk = sock.recv(TOKEN_LEN - len(entry.token))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:  # the dialler hung up (or dropped an idle pooled socket)
            self._drop(parked, sock)
            return
        entry.token += chunk
        if len(entry.token) < TOKEN_LEN:
            return
        self._sel.unregister(sock)
        del parked[sock]
        with self._lock:
            pending = self._pending.pop(bytes(entry.token), None)
            if pending is not None and not self._closed.is_set():
                sock.setblocking(True)
                pending.sock = sock
                self._live.add(sock)
        if pending is None:
            log.info("bulk channel: dropped a connection with an unknown token")
            _close(sock)
            return
        pending.ready.set()

    def _drop(self, parked: dict, sock: socket.socket) -> None:
        parked.pop(sock, None)
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass
        _close(sock)

    def close(self) -> None:
        self._closed.set()
        try:
            self._waker_w.send(b"x")
        except OSError:
            pass
        self._thread.join(timeout=5)
        for s in (self._srv, self._waker_r, self._waker_w):
            _close(s)
        self._sel.close()
        with self._lock:
            live, self._live = list(self._live), set()
            pending, self._pending = list(self._pending.values()), {}
            to_park, self._to_park = self._to_park, []
        for p in pending:
            p.ready.set()
        for s in live + to_park:
            _close(s)


class DialPool:
    """The dialling side's idle bulk sockets, per (host, port), kept after clean transfers."""

    def __init__(self, max_idle: int = 2, idle_timeout: float = 60.0) -> None:
        self._idle: dict[tuple[str, int], list[tuple[socket.socket, float]]] = {}
        self._all: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._max = max_idle
        self._idle_timeout = idle_timeout

    def checkout(self, host: str, port: int, token: bytes, timeout: float, fresh: bool = False
                 ) -> tuple[socket.socket, bool]:
        """A socket that has presented ``token``: a kept one if any (reused=True), else a new one."""
        now = time.monotonic()
        sock = None
        with self._lock:
            if self._closed:
                raise PeerUnavailable("p2p node stopped")
            idle = self._idle.get((host, port), [])
            while idle and not fresh:
                cand, since = idle.pop()
                if now - since < self._idle_timeout:
                    sock = cand
                    break
                self._all.discard(cand)
                _close(cand)
        if sock is not None:
            try:
                sock.settimeout(timeout)
                sock.sendall(token)
                return sock, True
            except OSError:
                self.discard(sock)
        sock = dial(host, port, token, timeout)
        with self._lock:
            if self._closed:
                _close(sock)
                raise PeerUnavailable("p2p node stopped")
            self._all.add(sock)
        return sock, False

    def idle(self, host: str, port: int) -> int:
        """How many kept sockets wait for the next transfer to (host, port)."""
        with self._lock:
            return len(self._idle.get((host, port), []))

    def checkin(self, host: str, port: int, sock: socket.socket) -> None:
        with self._lock:
            idle = self._idle.setdefault((host, port), [])
            if not self._closed and len(idle) < self._max:
                idle.append((sock, time.monotonic()))
                return
            self._all.discard(sock)
        _close(sock)

    def discard(self, sock: socket.socket) -> None:
        with self._lock:
            self._all.discard(sock)
        _close(sock)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            socks, self._all, self._idle = list(self._all), set(), {}
        for s in socks:
            _close(s)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class Link:
    """One end of a pipeline link: a side socket carrying many messages under one AES-GCM key.

    Set up once per peer over ``/bsns/pipeline/1`` (the listening side draws the token and key and
    sends them on the Noise stream, as for single transfers); afterwards a message is a sequence of
    sealed records written and read by ordinary threads, without a trip through the trio host.
    Records are ``len u32 | AES-GCM(ciphertext + tag)`` with the length and a direction-specific
    counter in the nonce/associated data, so records cannot be dropped, reordered, replayed across
    directions or cut without failing authentication. The dialler's counters and the listener's use
    different nonce prefixes, so one key serves both directions without nonce reuse.
    """

    DIAL, LISTEN = b"\0\0\0\2", b"\0\0\0\3"

    def __init__(self, sock: socket.socket, key: bytes, token: bytes, dialler: bool) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.sock, self.token = sock, token
        self._aead = AESGCM(key)
        self._tx_prefix = self.DIAL if dialler else self.LISTEN
        self._rx_prefix = self.LISTEN if dialler else self.DIAL
        self._tx = 0
        self._rx = 0
        self._out = bytearray(RECORD + TAG + 4)
        self._in = bytearray(RECORD + TAG)
        self.last_used = time.monotonic()
        self.peer: str | None = None   # the authenticated peer's address (listening side)

    def _aad(self, n: int) -> bytes:
        return self.token + n.to_bytes(4, "big")

    def send_record(self, data: memoryview | bytes) -> None:
        n = len(data)
        if n > RECORD:
            raise ValueError("record too large")
        mv = memoryview(self._out)
        mv[:4] = n.to_bytes(4, "big")
        self._aead.encrypt_into(self._tx_prefix + self._tx.to_bytes(8, "big"), data, self._aad(n),
                                mv[4:4 + n + TAG])
        self._tx += 1
        self.sock.sendall(mv[:4 + n + TAG])

    def send_payload(self, data: memoryview) -> None:
        for off in range(0, len(data), RECORD):
            self.send_record(data[off:off + RECORD])

    def recv_record(self, out: memoryview | None = None, limit: int = RECORD) -> int | bytes:
        """Next record: decrypted into ``out`` (returns its length) or returned as bytes."""
        from cryptography.exceptions import InvalidTag

        head = bytearray(4)
        _recv_exactly(self.sock, memoryview(head))
        n = int.from_bytes(head, "big")
        if n > limit or (out is not None and n > len(out)):
            raise IntegrityError(f"link record of {n} bytes exceeds what was announced")
        mv = memoryview(self._in)[:n + TAG]
        _recv_exactly(self.sock, mv)
        nonce = self._rx_prefix + self._rx.to_bytes(8, "big")
        self._rx += 1
        try:
            if out is None:
                return self._aead.decrypt(nonce, mv, self._aad(n))
            self._aead.decrypt_into(nonce, mv, self._aad(n), out[:n])
            return n
        except InvalidTag:
            raise IntegrityError(f"link record {self._rx - 1} failed authentication: corrupted or tampered bytes") from None

    def recv_payload(self, out: memoryview, hasher: Any = None) -> None:
        pump = _HashPump(hasher) if hasher is not None else None
        try:
            off = 0
            while off < len(out):
                n = self.recv_record(out[off:off + RECORD])
                if n != min(RECORD, len(out) - off):
                    raise IntegrityError("link payload record has the wrong length")
                if pump is not None:
                    pump.feed(out[off:off + n])
                off += n
        finally:
            if pump is not None:
                pump.finish()

    def skip_payload(self, nbytes: int) -> None:
        """Read and authenticate a payload that is being dropped (keeps the record counters in step)."""
        scratch = memoryview(bytearray(min(RECORD, nbytes) or 1))
        left = nbytes
        while left > 0:
            left -= self.recv_record(scratch[:min(RECORD, left)])

    def close(self) -> None:
        _close(self.sock)
