"""Keccak-256, the one hash of the project: adapter, spec, data, weights and blob hashes are all keccak-256,
so a hash computed anywhere here can be compared with one on chain.

A leaf module (imports nothing of the project). ``keccak_hasher`` is incremental (pycryptodome) for bytes
that arrive in pieces; everything else is eth-utils' keccak, which gives the same digests.
"""

from __future__ import annotations

from pathlib import Path


def keccak256(data: bytes | bytearray | memoryview) -> bytes:
    """The 32-byte digest."""
    from eth_utils import keccak

    return keccak(bytes(data) if isinstance(data, memoryview) else data)


def keccak_hex(data: bytes | bytearray | memoryview) -> str:
    """The digest as 0x-prefixed lower-case hex (the form hashes take on chain and in files)."""
    return "0x" + keccak256(data).hex()


def keccak_text(text: str) -> bytes:
    """The digest of a UTF-8 string (seed material, labels)."""
    return keccak256(text.encode())


def file_keccak(path: str | Path) -> str:
    """keccak-256 of a file's bytes, as 0x-hex (the hash of a data set or weights file)."""
    return keccak_hex(Path(path).read_bytes())


def keccak_hasher():
    """An incremental keccak-256 (``update(chunk)``, ``digest()``): the same digest as ``keccak256``."""
    from Crypto.Hash import keccak

    return keccak.new(digest_bits=256)
