"""A node's local content-addressed blob store: bytes keyed by their keccak-256 hash.

Owns what ``/bsns/adapter/1`` serves. Blobs live in memory (adapters are megabytes); the hash is
computed once, when a blob is added, so serving never re-hashes.
"""

from __future__ import annotations

import threading

from node.hashing import keccak256
from node.p2p.errors import P2PError


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
    def __init__(self) -> None:
        self._blobs: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def add(self, data: bytes) -> bytes:
        digest = keccak256(data)
        with self._lock:
            self._blobs[digest] = bytes(data)
        return digest

    def get(self, digest: bytes) -> bytes | None:
        with self._lock:
            return self._blobs.get(digest)

    def remove(self, digest: bytes) -> None:
        with self._lock:
            self._blobs.pop(digest, None)

    def hashes(self) -> list[bytes]:
        with self._lock:
            return list(self._blobs)
