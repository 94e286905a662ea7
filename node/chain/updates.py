"""Signed local updates: the digest a replica binds on chain before revealing its update, its EIP-191
signature, and who signed one.

The contract (``contracts/sessions/SessionsUpdates.sol``, ``updateDigest``) is the home of the encoding; this
module computes the same digest off chain so that peers can check each received update without a call per
update (``tests/chain/test_updates.py`` compares the two on a deployed contract). A digest names the chain, the
contract, the (session, round, shard) slot and the author, so a signature is worth something in one place only.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_abi import encode
from eth_utils import keccak, to_checksum_address

#: SessionsUpdates.UPDATE_TAG
UPDATE_TAG = keccak(text="bsns.TrainingSessions.update.v1")


@dataclass(frozen=True)
class UpdateSlot:
    """Where an update belongs: one replica's local update of one round of one shard of one session."""

    chain_id: int
    contract: str
    session: int
    round: int
    shard: int


def update_digest(slot: UpdateSlot, author: str, update_hash: bytes) -> bytes:
    """``updateDigest(session, round, shard, author, updateHash)`` of the deployment in ``slot``."""
    return keccak(encode(
        ["bytes32", "uint256", "address", "uint256", "uint256", "uint256", "address", "bytes32"],
        [UPDATE_TAG, slot.chain_id, to_checksum_address(slot.contract), slot.session, slot.round, slot.shard,
         to_checksum_address(author), update_hash]))


def sign_digest(private_key: bytes, digest: bytes) -> bytes:
    """The EIP-191 (personal_sign) signature of a 32-byte digest, 65 bytes r || s || v."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    return bytes(Account.sign_message(encode_defunct(primitive=digest), private_key).signature)


def signer_of(digest: bytes, signature: bytes) -> str | None:
    """The address whose key made ``signature`` over ``digest``; None for a malformed signature."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    try:
        return Account.recover_message(encode_defunct(primitive=digest), signature=signature)
    except Exception:  # noqa: BLE001 - any malformed signature is simply not anyone's
        return None
