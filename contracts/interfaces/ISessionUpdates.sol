// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @dev The bind window of a round: the first 1/SESSION_BIND_DIVISOR of its first epoch's commit window.
///      Replicas bind their local update before it closes and reveal their updates only after it closed
///      (or once every replica bound), so no binding can depend on another replica's revealed update.
uint256 constant SESSION_BIND_DIVISOR = 2;

/// @title ISessionUpdates
/// @notice Commitment before disclosure of the replicas' local updates, and proofs of equivocation.
/// @dev Per (session, round, shard) each replica binds, in the round's bind window, the digest
///      `updateDigest(session, round, shard, author, updateHash)` of its local update: the digest names the
///      author, so a copied binding can never be opened by the copier, and the update hash stays hidden
///      until the replica reveals it. Updates then travel off chain with the author's EIP-191 signature
///      over the same digest; peers accept an update only when its digest equals the author's binding. A
///      signature over a digest that differs from the author's binding, or two signatures over different
///      digests of one (session, round, shard), prove equivocation: anyone submits them, the author is
///      slashed once per round and barred from the session's commits.
interface ISessionUpdates {
    error BindWindowClosed(uint256 round, uint256 shard);
    error AlreadyBound(uint256 round, uint256 shard, address node);
    error BadSignature(address author);
    error NotEquivocation(uint256 round, uint256 shard, address author);
    error AlreadyProven(uint256 round, uint256 shard, address author);

    /// @notice A replica bound its local update of a round (`binding` = its `updateDigest`).
    event UpdateBound(uint256 indexed sessionId, address indexed node, uint256 round, uint256 shard, bytes32 binding);
    /// @notice Two conflicting signed updates of `author` were shown; it was slashed `slashed` wei and barred.
    event EquivocationProven(
        uint256 indexed sessionId, address indexed author, uint256 round, uint256 shard, uint256 slashed,
        address reporter
    );

    /// @notice Bind the caller's local update of the shard's current round (epoch 0, within the bind window).
    /// @param sessionId the session
    /// @param round the shard's current round
    /// @param shard the caller's shard
    /// @param binding `updateDigest(sessionId, round, shard, msg.sender, localUpdateHash)` (non-zero)
    function bind(uint256 sessionId, uint256 round, uint256 shard, bytes32 binding) external;

    /// @notice Prove that `author` signed an update of (session, round, shard) other than the one it bound.
    /// @param updateHash the hash in the signed update
    /// @param signature the author's EIP-191 signature over `updateDigest(..., author, updateHash)`
    function proveUnbound(
        uint256 sessionId,
        uint256 round,
        uint256 shard,
        address author,
        bytes32 updateHash,
        bytes calldata signature
    ) external;

    /// @notice Prove that `author` signed two different updates of (session, round, shard), bound or not.
    function proveDoubleSigned(
        uint256 sessionId,
        uint256 round,
        uint256 shard,
        address author,
        bytes32[2] calldata updateHashes,
        bytes[2] calldata signatures
    ) external;

    /// @notice The digest a replica binds and signs for its local update `updateHash` (chain id and this
    ///         contract included, so a signature is valid for one deployment only).
    function updateDigest(uint256 sessionId, uint256 round, uint256 shard, address author, bytes32 updateHash)
        external
        view
        returns (bytes32);

    /// @notice The binding of `replica` for (session, round, shard); zero if it bound none.
    function bindingOf(uint256 sessionId, uint256 round, uint256 shard, uint256 replica) external view returns (bytes32);

    /// @notice Last block of the shard's current round's bind window (meaningful in epoch 0).
    function bindDeadline(uint256 sessionId, uint256 shard) external view returns (uint256);

    /// @notice Whether `author`'s equivocation in (session, round, shard) was proven.
    function equivocationProven(uint256 sessionId, uint256 round, uint256 shard, address author)
        external
        view
        returns (bool);
}
