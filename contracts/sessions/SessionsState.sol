// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {INodeRegistry} from "../interfaces/INodeRegistry.sol";
import {
    ITrainingSessions,
    SESSION_MAX_EPOCHS,
    SESSION_MAX_REPLICAS,
    SESSION_MAX_SHARDS
} from "../interfaces/ITrainingSessions.sol";

/// @title SessionsState
/// @notice The storage of TrainingSessions, its views, and the hand-packed slot access its commit path uses.
/// @dev Split from TrainingSessions (which owns every state change) to keep each source short; nothing here
///      writes storage except through the helpers TrainingSessions calls.
abstract contract SessionsState is ITrainingSessions {
    /// @inheritdoc ITrainingSessions
    uint256 public constant MAX_SHARDS = SESSION_MAX_SHARDS;
    /// @inheritdoc ITrainingSessions
    uint256 public constant MAX_REPLICAS_PER_SHARD = SESSION_MAX_REPLICAS;
    /// @inheritdoc ITrainingSessions
    uint256 public constant MAX_EPOCHS = SESSION_MAX_EPOCHS;
    /// @dev Bound of both block windows, so that deadlines always fit their uint40 fields.
    uint256 internal constant MAX_WINDOW_BLOCKS = type(uint32).max;

    /// @inheritdoc ITrainingSessions
    INodeRegistry public immutable registry;
    /// @inheritdoc ITrainingSessions
    uint256 public immutable joinWindowBlocks;
    /// @inheritdoc ITrainingSessions
    uint256 public immutable commitTimeoutBlocks;
    /// @inheritdoc ITrainingSessions
    uint256 public immutable slashAmount;
    /// @inheritdoc ITrainingSessions
    address public governance;
    /// @inheritdoc ITrainingSessions
    uint256 public sessionCount;

    mapping(uint256 => Session) internal _sessions;
    mapping(uint256 => uint256) internal _sessionOfProposal;
    mapping(uint256 => mapping(uint256 => ShardState)) internal _shards;
    mapping(uint256 => mapping(address => Assignment)) internal _assign;
    mapping(bytes32 => address) internal _member; // key(session, shard, replica)
    mapping(bytes32 => bytes32) internal _commit; // key(session, rk(round, epoch), shard, replica) -> hash
    mapping(bytes32 => uint256) internal _otherCount; // keccak(key(session, rk, shard), hash) -> count
    mapping(bytes32 => bytes32) internal _final; // key(session, round, shard) -> final aggregate hash
    mapping(bytes32 => uint256) internal _finalMeta; // key(session, round, shard) -> epoch | deadline << 8
    mapping(bytes32 => bool) internal _reported; // key(session, rk(round, epoch), shard, replica)
    mapping(uint256 => uint256) internal _abortedAt; // session -> block of SessionAborted (0: never)

    constructor(INodeRegistry registry_, uint256 joinWindowBlocks_, uint256 commitTimeoutBlocks_, uint256 slashAmount_) {
        if (address(registry_) == address(0)) revert ZeroAddress();
        if (joinWindowBlocks_ == 0 || joinWindowBlocks_ > MAX_WINDOW_BLOCKS) revert InvalidSession("joinWindowBlocks");
        if (commitTimeoutBlocks_ == 0 || commitTimeoutBlocks_ > MAX_WINDOW_BLOCKS) {
            revert InvalidSession("commitTimeoutBlocks");
        }
        registry = registry_;
        joinWindowBlocks = joinWindowBlocks_;
        commitTimeoutBlocks = commitTimeoutBlocks_;
        slashAmount = slashAmount_;
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc ITrainingSessions
    function getSession(uint256 sessionId) external view returns (Session memory) {
        return _sessions[sessionId];
    }

    /// @inheritdoc ITrainingSessions
    function sessionOfProposal(uint256 proposalId) external view returns (uint256) {
        return _sessionOfProposal[proposalId];
    }

    /// @inheritdoc ITrainingSessions
    function getShard(uint256 sessionId, uint256 shard) external view returns (ShardState memory) {
        return _shards[sessionId][shard];
    }

    /// @inheritdoc ITrainingSessions
    function assignmentOf(uint256 sessionId, address node) external view returns (Assignment memory) {
        return _assign[sessionId][node];
    }

    /// @inheritdoc ITrainingSessions
    function memberAt(uint256 sessionId, uint256 shard, uint256 replica) external view returns (address) {
        return _member[_key3(sessionId, shard, replica)];
    }

    /// @inheritdoc ITrainingSessions
    function replicas(uint256 sessionId) external view returns (uint256) {
        return _sessions[sessionId].replicas;
    }

    /// @inheritdoc ITrainingSessions
    function currentRound(uint256 sessionId, uint256 shard) external view returns (uint256) {
        return _shards[sessionId][shard].round;
    }

    /// @inheritdoc ITrainingSessions
    function finalHash(uint256 sessionId, uint256 round, uint256 shard) external view returns (bytes32) {
        return _final[_key3(sessionId, round, shard)];
    }

    /// @inheritdoc ITrainingSessions
    function commitOf(uint256 sessionId, uint256 round, uint256 shard, address node) external view returns (bytes32) {
        ShardState memory sh = _shards[sessionId][shard];
        uint256 epoch = round == sh.round ? sh.epoch : _finalMeta[_key3(sessionId, round, shard)] & 0xff;
        return _commitAt(sessionId, round, epoch, shard, node);
    }

    /// @inheritdoc ITrainingSessions
    function commitAt(uint256 sessionId, uint256 round, uint256 epoch, uint256 shard, address node)
        external
        view
        returns (bytes32)
    {
        return _commitAt(sessionId, round, epoch, shard, node);
    }

    function _commitAt(uint256 sessionId, uint256 round, uint256 epoch, uint256 shard, address node)
        internal
        view
        returns (bytes32)
    {
        Assignment memory a = _assign[sessionId][node];
        if (!a.joined || a.shard != shard) return bytes32(0);
        return _commit[_key4(sessionId, _rk(round, epoch), shard, a.replica)];
    }

    /// @inheritdoc ITrainingSessions
    function finalEpoch(uint256 sessionId, uint256 round, uint256 shard)
        external
        view
        returns (uint256 epoch, uint256 deadline)
    {
        uint256 meta = _finalMeta[_key3(sessionId, round, shard)];
        return (meta & 0xff, meta >> 8);
    }

    /// @inheritdoc ITrainingSessions
    function roundDeadline(uint256 sessionId, uint256 shard) external view returns (uint256) {
        return uint256(_shards[sessionId][shard].roundStart) + commitTimeoutBlocks;
    }

    /// @inheritdoc ITrainingSessions
    function isBarred(uint256 sessionId, address node) external view returns (bool) {
        return _assign[sessionId][node].barred;
    }

    /// @inheritdoc ITrainingSessions
    function votesFor(uint256 sessionId, uint256 round, uint256 shard, bytes32 aggregateHash)
        external
        view
        returns (uint256)
    {
        ShardState memory sh = _shards[sessionId][shard];
        if (round != sh.round || sh.commits == 0) return 0;
        uint256 rk = _rk(round, sh.epoch);
        if (_commit[_key4(sessionId, rk, shard, sh.leaderReplica)] == aggregateHash) return sh.leaderCount;
        return _otherCount[keccak256(abi.encode(_key3(sessionId, rk, shard), aggregateHash))];
    }

    /// @inheritdoc ITrainingSessions
    function faultReported(uint256 sessionId, uint256 round, uint256 epoch, uint256 shard, address node)
        external
        view
        returns (bool)
    {
        Assignment memory a = _assign[sessionId][node];
        if (!a.joined || a.shard != shard) return false;
        return _reported[_key4(sessionId, _rk(round, epoch), shard, a.replica)];
    }

    /// @inheritdoc ITrainingSessions
    function quorumOf(uint256 n) external pure returns (uint256) {
        return _ceilTwoThirds(n);
    }

    // Hand-written packing of the ShardState and Assignment slots for the commit path: the legacy code
    // generator reads and writes a packed struct field by field (one SLOAD/SSTORE each), which cost
    // ~2,000 gas per commit. Offsets follow Solidity's storage layout of ITrainingSessions' ShardState
    // and Assignment (first member in the lowest bits), so the struct views (getShard, assignmentOf) read
    // the same slots. Each constant is (offset << 8) | bits.
    uint256 internal constant S_ROUNDS = (64 << 8) | 32;
    uint256 internal constant S_REPLICAS = (48 << 8) | 16;
    uint256 internal constant S_ROUND = (96 << 8) | 32;
    uint256 internal constant S_ROUND_START = (128 << 8) | 40;
    uint256 internal constant S_COMMITS = (168 << 8) | 16;
    uint256 internal constant S_LEADER = (184 << 8) | 16;
    uint256 internal constant S_LEADER_COUNT = (200 << 8) | 16;
    uint256 internal constant S_EPOCH = (216 << 8) | 8;
    uint256 internal constant S_ABORTED = (224 << 8) | 8;
    uint256 internal constant A_SHARD = (8 << 8) | 16;
    uint256 internal constant A_REPLICA = (24 << 8) | 16;
    uint256 internal constant A_BARRED = (48 << 8) | 8;

    function _field(uint256 w, uint256 f) internal pure returns (uint256) {
        return (w >> (f >> 8)) & ((1 << (f & 0xff)) - 1);
    }

    /// @dev Values never exceed their field: rounds/commits/replicas are bounded by the checks above and
    ///      block numbers by 2^40.
    function _setField(uint256 w, uint256 f, uint256 v) internal pure returns (uint256) {
        uint256 off = f >> 8;
        uint256 mask = ((1 << (f & 0xff)) - 1) << off;
        return (w & ~mask) | ((v << off) & mask);
    }

    function _shardSlot(uint256 sessionId, uint256 shard) internal view returns (uint256 slot) {
        ShardState storage p = _shards[sessionId][shard];
        assembly ("memory-safe") {
            slot := p.slot
        }
    }

    function _assignWord(uint256 sessionId, address node) internal view returns (uint256 w) {
        Assignment storage p = _assign[sessionId][node];
        assembly ("memory-safe") {
            w := sload(p.slot)
        }
    }

    function _sload(uint256 slot) internal view returns (uint256 w) {
        assembly ("memory-safe") {
            w := sload(slot)
        }
    }

    function _sstore(uint256 slot, uint256 w) internal {
        assembly ("memory-safe") {
            sstore(slot, w)
        }
    }

    function _sessionOrRevert(uint256 sessionId) internal view returns (Session storage s) {
        s = _sessions[sessionId];
        if (s.state == State.None) revert UnknownSession(sessionId);
    }

    /// @dev The key of one epoch of a round (rounds fit 32 bits, epochs 8).
    function _rk(uint256 round, uint256 epoch) internal pure returns (uint256) {
        return round | (epoch << 32);
    }

    function _ceilTwoThirds(uint256 n) internal pure returns (uint256) {
        return Math.ceilDiv(2 * n, 3);
    }

    /// @dev keccak256(abi.encode(a, b, c)) hashed in scratch memory (no allocation: commit-path gas).
    function _key3(uint256 a, uint256 b, uint256 c) internal pure returns (bytes32 k) {
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, a)
            mstore(add(m, 0x20), b)
            mstore(add(m, 0x40), c)
            k := keccak256(m, 0x60)
        }
    }

    /// @dev keccak256(abi.encode(a, b, c, d)) hashed in scratch memory.
    function _key4(uint256 a, uint256 b, uint256 c, uint256 d) internal pure returns (bytes32 k) {
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, a)
            mstore(add(m, 0x20), b)
            mstore(add(m, 0x40), c)
            mstore(add(m, 0x60), d)
            k := keccak256(m, 0x80)
        }
    }
}
