// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";
import {SessionsState} from "./SessionsState.sol";
import {ISessionUpdates, SESSION_BIND_DIVISOR} from "../interfaces/ISessionUpdates.sol";

/// @title SessionsUpdates
/// @notice Commitment before disclosure of the replicas' local updates (bind) and proofs of equivocation
///         (proveUnbound, proveDoubleSigned) for TrainingSessions; see ISessionUpdates for the protocol.
/// @dev Kept apart from TrainingSessions so that each source stays short; it reads the same packed slots as
///      `commit` and leaves slashing to TrainingSessions (`_punish`), which owns the registry calls. Bindings
///      are per round, taken only in epoch 0: an epoch retried after a deadline follows the updates' reveal,
///      so a binding made then could depend on the others' updates. No on-chain check refuses a binding equal
///      to another's: a copied binding names its original author and can never be opened by the copier, and
///      such a check would let a front-runner block an honest replica's binding by copying it first.
abstract contract SessionsUpdates is SessionsState, ISessionUpdates {
    /// @dev Domain tag of update digests (a signature over one can be nothing else).
    bytes32 internal constant UPDATE_TAG = keccak256("bsns.TrainingSessions.update.v1");

    mapping(bytes32 => bytes32) internal _binding; // key(session, round, shard, replica) -> updateDigest
    mapping(bytes32 => bool) internal _proven; // key(session, round, shard, replica) -> equivocation proven

    /// @dev Slash `node` once for a proven fault and bar it from the session's commits; returns wei slashed.
    function _punish(uint256 sessionId, address node) internal virtual returns (uint256);

    /// @inheritdoc ISessionUpdates
    function bind(uint256 sessionId, uint256 round, uint256 shard, bytes32 binding) external {
        if (binding == bytes32(0)) revert InvalidHash();
        uint256 a = _assignWord(sessionId, msg.sender);
        if (a & 0xff == 0 || _field(a, A_SHARD) != shard) revert NotAssigned(sessionId, shard, msg.sender);
        uint256 replica = _field(a, A_REPLICA);
        uint256 w = _sload(_shardSlot(sessionId, shard));
        uint256 nReplicas = _field(w, S_REPLICAS);
        if (nReplicas == 0 || _field(w, S_ABORTED) != 0) revert WrongSessionState(sessionId, _sessions[sessionId].state);
        if (replica >= nReplicas) revert SpareReplica(sessionId, replica, nReplicas);
        if (_field(a, A_BARRED) != 0) revert NodeBarred(msg.sender);
        uint256 current = _field(w, S_ROUND);
        if (current >= _field(w, S_ROUNDS)) revert ShardDone(shard);
        if (round != current) revert WrongRound(shard, current, round);
        if (_field(w, S_EPOCH) != 0 || block.number > _bindDeadline(w)) revert BindWindowClosed(round, shard);
        bytes32 k = _key4(sessionId, round, shard, replica);
        if (_binding[k] != bytes32(0)) revert AlreadyBound(round, shard, msg.sender);
        _binding[k] = binding;
        emit UpdateBound(sessionId, msg.sender, round, shard, binding);
    }

    /// @inheritdoc ISessionUpdates
    function proveUnbound(
        uint256 sessionId,
        uint256 round,
        uint256 shard,
        address author,
        bytes32 updateHash,
        bytes calldata signature
    ) external {
        uint256 replica = _replicaOf(sessionId, shard, author);
        bytes32 digest = _signedDigest(sessionId, round, shard, author, updateHash, signature);
        bytes32 k = _key4(sessionId, round, shard, replica);
        bytes32 bound = _binding[k];
        // no binding: a single signature proves nothing (the replica may not have bound in time)
        if (bound == bytes32(0) || bound == digest) revert NotEquivocation(round, shard, author);
        _prove(sessionId, round, shard, author, k);
    }

    /// @inheritdoc ISessionUpdates
    function proveDoubleSigned(
        uint256 sessionId,
        uint256 round,
        uint256 shard,
        address author,
        bytes32[2] calldata updateHashes,
        bytes[2] calldata signatures
    ) external {
        uint256 replica = _replicaOf(sessionId, shard, author);
        if (updateHashes[0] == updateHashes[1]) revert NotEquivocation(round, shard, author);
        _signedDigest(sessionId, round, shard, author, updateHashes[0], signatures[0]);
        _signedDigest(sessionId, round, shard, author, updateHashes[1], signatures[1]);
        _prove(sessionId, round, shard, author, _key4(sessionId, round, shard, replica));
    }

    function _prove(uint256 sessionId, uint256 round, uint256 shard, address author, bytes32 k) private {
        if (_proven[k]) revert AlreadyProven(round, shard, author);
        _proven[k] = true;
        uint256 slashed = _punish(sessionId, author);
        emit EquivocationProven(sessionId, author, round, shard, slashed, msg.sender);
    }

    /// @dev The digest of (author, updateHash), reverting BadSignature unless `signature` is the author's.
    function _signedDigest(
        uint256 sessionId,
        uint256 round,
        uint256 shard,
        address author,
        bytes32 updateHash,
        bytes calldata signature
    ) private view returns (bytes32 digest) {
        digest = _updateDigest(sessionId, round, shard, author, updateHash);
        (address signer, ECDSA.RecoverError err,) =
            ECDSA.tryRecoverCalldata(MessageHashUtils.toEthSignedMessageHash(digest), signature);
        if (err != ECDSA.RecoverError.NoError || signer != author) revert BadSignature(author);
    }

    /// @dev The author's replica index; reverts unless it is a training (non-spare) replica of the shard.
    function _replicaOf(uint256 sessionId, uint256 shard, address author) private view returns (uint256 replica) {
        Assignment memory a = _assign[sessionId][author];
        if (!a.joined || a.shard != shard) revert NotAssigned(sessionId, shard, author);
        uint256 n = _shards[sessionId][shard].replicas;
        if (n == 0) revert WrongSessionState(sessionId, _sessions[sessionId].state);
        if (a.replica >= n) revert SpareReplica(sessionId, a.replica, n);
        return a.replica;
    }

    function _updateDigest(uint256 sessionId, uint256 round, uint256 shard, address author, bytes32 updateHash)
        internal
        view
        returns (bytes32)
    {
        return keccak256(abi.encode(UPDATE_TAG, block.chainid, address(this), sessionId, round, shard, author, updateHash));
    }

    function _bindDeadline(uint256 w) internal view returns (uint256) {
        return _field(w, S_ROUND_START) + (commitTimeoutBlocks + SESSION_BIND_DIVISOR - 1) / SESSION_BIND_DIVISOR;
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc ISessionUpdates
    function updateDigest(uint256 sessionId, uint256 round, uint256 shard, address author, bytes32 updateHash)
        external
        view
        returns (bytes32)
    {
        return _updateDigest(sessionId, round, shard, author, updateHash);
    }

    /// @inheritdoc ISessionUpdates
    function bindingOf(uint256 sessionId, uint256 round, uint256 shard, uint256 replica) external view returns (bytes32) {
        return _binding[_key4(sessionId, round, shard, replica)];
    }

    /// @inheritdoc ISessionUpdates
    function bindDeadline(uint256 sessionId, uint256 shard) external view returns (uint256) {
        return _bindDeadline(_sload(_shardSlot(sessionId, shard)));
    }

    /// @inheritdoc ISessionUpdates
    function equivocationProven(uint256 sessionId, uint256 round, uint256 shard, address author)
        external
        view
        returns (bool)
    {
        Assignment memory a = _assign[sessionId][author];
        if (!a.joined || a.shard != shard) return false;
        return _proven[_key4(sessionId, round, shard, a.replica)];
    }
}
