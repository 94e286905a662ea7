"""One secp256k1 key is both a node's Ethereum account and its libp2p identity.

Owns: turning the private-key bytes the keystore hands us into a libp2p key pair and peer id, and
mapping a peer id (or public key) back to the checksummed Ethereum address that registered on chain.
A secp256k1 public key serialises to 37 bytes, under libp2p's 42-byte inlining limit, so the peer id
is an identity multihash that carries the key itself: anyone can recover the address from the id
alone, and Noise has already proven that the remote side holds that key.
"""

from __future__ import annotations

from typing import Any

from node.p2p.errors import P2PError


def keypair_from_private_key(private_key: bytes) -> Any:
    """libp2p ``KeyPair`` for a 32-byte secp256k1 private key (the node's Ethereum key)."""
    from libp2p.crypto.secp256k1 import create_new_key_pair

    if not isinstance(private_key, (bytes, bytearray)) or len(private_key) != 32:
        raise P2PError("node key must be 32 bytes of secp256k1 private key")
    try:
        return create_new_key_pair(bytes(private_key))
    except Exception as exc:  # coincurve rejects 0 and values >= the group order
        raise P2PError(f"invalid secp256k1 private key: {exc}") from None


def eth_address_from_public_key(public_key: Any) -> str:
    """Checksummed Ethereum address of a libp2p secp256k1 public key (or its 33/65 raw bytes)."""
    import coincurve
    from eth_utils import keccak, to_checksum_address

    raw = public_key if isinstance(public_key, (bytes, bytearray)) else public_key.to_bytes()
    try:
        point = coincurve.PublicKey(bytes(raw)).format(compressed=False)
    except Exception as exc:
        raise P2PError(f"not a secp256k1 public key: {exc}") from None
    return to_checksum_address(keccak(point[1:])[-20:])


def peer_id_from_private_key(private_key: bytes) -> str:
    """Base58 libp2p peer id of a node key (what the NodeRegistry stores as ``peerId``)."""
    from libp2p.peer.id import ID

    return ID.from_pubkey(keypair_from_private_key(private_key).public_key).to_base58()


def eth_address_from_peer_id(peer_id: Any) -> str:
    """Ethereum address behind a peer id (``ID``, base58 string or raw bytes).

    Raises ``P2PError`` for a peer id that does not inline a secp256k1 key (e.g. an RSA or
    Ed25519 peer): such a peer cannot be a bsns node.
    """
    from libp2p.crypto.keys import KeyType
    from libp2p.peer.id import ID

    if isinstance(peer_id, str):
        try:
            peer_id = ID.from_base58(peer_id)
        except Exception:
            raise P2PError(f"not a peer id: {peer_id!r}") from None
    elif isinstance(peer_id, (bytes, bytearray)):
        peer_id = ID(bytes(peer_id))
    try:
        key = peer_id.extract_public_key()
    except Exception:
        key = None
    if key is None or key.get_type() != KeyType.Secp256k1:
        raise P2PError(f"peer {peer_id} does not carry a secp256k1 key")
    return eth_address_from_public_key(key)


def eth_address_from_private_key(private_key: bytes) -> str:
    """Ethereum address of a node key, computed the same way as for remote peers."""
    return eth_address_from_public_key(keypair_from_private_key(private_key).public_key)
