"""The bulk channel: large payloads on a side TCP socket that libp2p negotiates and keys.

Owns the side socket: a listener thread that hands incoming sockets to the transfer whose one-time
token they present, and the record layer that moves bytes over them with AES-256-GCM.

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
nothing and can inject nothing without the key. The side socket is never trusted for who the peer is: identity comes only
from the libp2p stream that carried the token and key.

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


class BulkListener:
    """Accepts side sockets and hands each to the pending transfer whose token it presents."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token_timeout: float = 30.0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._srv = socket.create_server((host, port), family=family, backlog=64)
        self._srv.settimeout(0.2)
        self.host = host
        self.port = self._srv.getsockname()[1]
        self._token_timeout = token_timeout
        self._pending: dict[bytes, _Pending] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._live: set[socket.socket] = set()
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

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._live.add(sock)

    def release(self, sock: socket.socket) -> None:
        with self._lock:
            self._live.discard(sock)
        try:
            sock.close()
        except OSError:
            pass

    def _loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._srv.accept()
            except socket.timeout:
                self._expire()
                continue
            except OSError:
                break
            threading.Thread(target=self._admit, args=(conn,), daemon=True).start()

    def _admit(self, conn: socket.socket) -> None:
        """Read the token (bounded wait) and hand the socket over, or drop it."""
        try:
            conn.settimeout(self._token_timeout)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            token = bytearray(TOKEN_LEN)
            _recv_exactly(conn, memoryview(token))
        except Exception:
            conn.close()
            return
        with self._lock:
            pending = self._pending.pop(bytes(token), None)
            if pending is not None and not self._closed.is_set():
                pending.sock = conn
                self._live.add(conn)
        if pending is None:
            log.info("bulk channel: dropped a connection with an unknown token")
            conn.close()
            return
        pending.ready.set()

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            for token in [t for t, p in self._pending.items() if p.deadline < now]:
                self._pending.pop(token).ready.set()

    def close(self) -> None:
        self._closed.set()
        try:
            self._srv.close()
        except OSError:
            pass
        self._thread.join(timeout=5)
        with self._lock:
            live, self._live = list(self._live), set()
            pending, self._pending = list(self._pending.values()), {}
        for p in pending:
            p.ready.set()
        for s in live:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
