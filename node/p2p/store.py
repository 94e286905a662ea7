"""A node's local content-addressed blob store: bytes keyed by their keccak-256 hash, under a memory bound.

Owns what ``/bsns/adapter/1`` serves. Blobs live in memory (adapters are megabytes); the hash is
computed once, when a blob is added, so serving never re-hashes. The store holds at most
``max_bytes``: adding past it evicts the least recently used blobs that are not pinned (a published
adapter, a final aggregate: whatever the owner pins). An evicted blob is not lost when the owner
gave a ``source`` (the daemon's durable store): a request for it reads it back from there, and a
blob read back is not cached again, so serving old rounds never crowds out the current one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

from node.hashing import keccak256
from node.p2p.errors import P2PError
from node.p2p.limits import BLOB_MEMORY

Source = Callable[[bytes], "bytes | None"]


def parse_hash(value: str | bytes) -> bytes:
    """A 32-byte hash from ``0x``-hex or raw bytes, with a clear error otherwise."""
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 32:
            raise P2PError(f"a blob hash is 32 bytes, not {len(value)}")
        return bytes(value)
    text = value[2:] if value.startswith(("0x", "0X")) else value
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise P2PError(f"not a hex hash: {value!r}") from None
    if len(raw) != 32:
        raise P2PError(f"a blob hash is 32 bytes (64 hex digits), not {len(raw)}: {value!r}")
    return raw


class BlobStore:
    def __init__(self, max_bytes: int = BLOB_MEMORY, source: Source | None = None) -> None:
        self._blobs: OrderedDict[bytes, bytes] = OrderedDict()   # least recently used first
        self._pinned: set[bytes] = set()
        self._bytes = 0
        self.max_bytes = max_bytes
        self._source = source
        self._lock = threading.Lock()
        self.evicted = 0

    @property
    def nbytes(self) -> int:
        """Bytes held in memory now (never above ``max_bytes`` plus the pinned blobs)."""
        with self._lock:
            return self._bytes

    def add(self, data: bytes, pin: bool = False) -> bytes:
        digest = keccak256(data)
        with self._lock:
            if digest not in self._blobs:
                self._blobs[digest] = bytes(data)
                self._bytes += len(data)
            self._blobs.move_to_end(digest)
            if pin:
                self._pinned.add(digest)
            self._evict()
        return digest

    def pin(self, digest: bytes, pinned: bool = True) -> None:
        """Keep (or stop keeping) ``digest`` in memory whatever the bound."""
        with self._lock:
            if pinned and digest in self._blobs:
                self._pinned.add(digest)
            elif not pinned:
                self._pinned.discard(digest)
                self._evict()

    def _evict(self) -> None:
        if self._bytes <= self.max_bytes:
            return
        for digest in [d for d in self._blobs if d not in self._pinned]:
            if self._bytes <= self.max_bytes:
                break
            self._bytes -= len(self._blobs.pop(digest))
            self.evicted += 1

    def cached(self, digest: bytes) -> bytes | None:
        """The blob if it is in memory (never reads the source: safe in the host's event loop)."""
        with self._lock:
            data = self._blobs.get(digest)
            if data is not None:
                self._blobs.move_to_end(digest)
            return data

    @property
    def has_source(self) -> bool:
        return self._source is not None

    def get(self, digest: bytes) -> bytes | None:
        """The blob from memory, else from the source (blocking: may read a file)."""
        data = self.cached(digest)
        if data is not None:
            return data
        if self._source is None:
            return None
        try:
            data = self._source(digest)
        except Exception:  # a failing source is a miss, never a failed handler
            return None
        if data is not None and keccak256(data) != digest:
            return None   # the source is not trusted to be right: only bytes that match are served
        return data

    def remove(self, digest: bytes) -> None:
        with self._lock:
            data = self._blobs.pop(digest, None)
            if data is not None:
                self._bytes -= len(data)
            self._pinned.discard(digest)

    def hashes(self) -> list[bytes]:
        with self._lock:
            return list(self._blobs)
