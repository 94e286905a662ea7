// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {FineTuneGovernance} from "./FineTuneGovernance.sol";
import {TrainingSessions} from "./TrainingSessions.sol";

/// @title AdapterRegistry
/// @notice The catalogue of finished adapters: what base model, method and task each is for, the hash of
///         each shard's adapter weights, the session that produced it, its parent and its metrics.
/// @dev When a record names a session, publish checks it against the chain: the session is Completed,
///      the publisher was a member, base model / method / task equal the proposal's, and every shard hash
///      equals that shard's final aggregate hash of the last round. One adapter per session.
contract AdapterRegistry {
    /// @notice What a publisher submits.
    struct AdapterRecord {
        bytes32 manifestHash; // keccak-256 of the adapter manifest (per-shard hashes + metadata)
        string baseModel;
        bytes32 baseModelHash;
        string method;
        string task;
        bytes32[] shardHashes; // one per shard, in shard order
        uint256 sessionId; // 0: not from a session of this network
        uint256 parentId; // 0: none; else an adapter of the same base model this one continues
        uint32 accuracyBps; // evaluation accuracy x 10000 (0 if not measured)
        string metricsURI; // free-form pointer or JSON with further metrics
    }

    /// @notice What the registry stores: the record plus who published it and when.
    struct Adapter {
        AdapterRecord record;
        address publisher;
        uint256 publishedBlock;
    }

    uint256 public constant MAX_SHARDS = 64;
    uint256 public constant MAX_STRING_BYTES = 256;
    uint256 public constant MAX_URI_BYTES = 1024;

    TrainingSessions public immutable sessions;
    FineTuneGovernance public immutable governance;
    /// @notice Number of adapters published (ids are 1..adapterCount).
    uint256 public adapterCount;

    mapping(uint256 => Adapter) private _adapters;
    mapping(bytes32 => uint256[]) private _byModelTask; // keccak(baseModelHash, task) -> ids
    mapping(uint256 => uint256) private _adapterOfSession;

    error ZeroAddress();
    error InvalidRecord(string field);
    error UnknownAdapter(uint256 adapterId);
    error ParentMismatch(uint256 parentId);
    error SessionNotCompleted(uint256 sessionId);
    error NotSessionMember(uint256 sessionId, address publisher);
    error SessionMismatch(string field);
    error ShardCountMismatch(uint256 expected, uint256 got);
    error ShardHashMismatch(uint256 shard, bytes32 expected, bytes32 got);
    error AlreadyPublished(uint256 sessionId, uint256 adapterId);

    event AdapterPublished(
        uint256 indexed adapterId, bytes32 indexed baseModelHash, uint256 indexed sessionId, address publisher,
        bytes32 manifestHash, string task, string method, uint256 parentId
    );

    /// @param sessions_ the TrainingSessions contract whose final hashes adapters are checked against
    /// @param governance_ the FineTuneGovernance contract holding each session's job parameters
    constructor(TrainingSessions sessions_, FineTuneGovernance governance_) {
        if (address(sessions_) == address(0) || address(governance_) == address(0)) revert ZeroAddress();
        sessions = sessions_;
        governance = governance_;
    }

    /// @notice Publish a finished adapter; checked against its session when `record.sessionId` != 0.
    /// @param record the adapter record
    /// @return adapterId the new adapter's id (1-based)
    function publish(AdapterRecord calldata record) external returns (uint256 adapterId) {
        _validate(record);
        if (record.sessionId != 0) _checkSession(record);

        adapterId = ++adapterCount;
        Adapter storage a = _adapters[adapterId];
        a.record = record;
        a.publisher = msg.sender;
        a.publishedBlock = block.number;
        _byModelTask[_modelTaskKey(record.baseModelHash, record.task)].push(adapterId);
        if (record.sessionId != 0) _adapterOfSession[record.sessionId] = adapterId;
        emit AdapterPublished(
            adapterId, record.baseModelHash, record.sessionId, msg.sender, record.manifestHash, record.task,
            record.method, record.parentId
        );
    }

    /// @notice An adapter by id.
    /// @param adapterId the adapter
    function getAdapter(uint256 adapterId) external view returns (Adapter memory) {
        if (adapterId == 0 || adapterId > adapterCount) revert UnknownAdapter(adapterId);
        return _adapters[adapterId];
    }

    /// @notice Ids of all adapters for a base model and task, oldest first.
    /// @param baseModelHash the base model's weights hash
    /// @param task the task name
    function adaptersFor(bytes32 baseModelHash, string calldata task) external view returns (uint256[] memory) {
        return _byModelTask[_modelTaskKey(baseModelHash, task)];
    }

    /// @notice The newest adapter for a base model and task (0 if none).
    /// @param baseModelHash the base model's weights hash
    /// @param task the task name
    function latestFor(bytes32 baseModelHash, string calldata task) external view returns (uint256) {
        uint256[] storage ids = _byModelTask[_modelTaskKey(baseModelHash, task)];
        return ids.length == 0 ? 0 : ids[ids.length - 1];
    }

    /// @notice The adapter published from a session (0 if none).
    /// @param sessionId the session
    function adapterOfSession(uint256 sessionId) external view returns (uint256) {
        return _adapterOfSession[sessionId];
    }

    // ------------------------------------------------------------------ internals

    function _validate(AdapterRecord calldata r) private view {
        if (r.manifestHash == bytes32(0)) revert InvalidRecord("manifestHash");
        _checkString(r.baseModel, "baseModel", MAX_STRING_BYTES);
        if (r.baseModelHash == bytes32(0)) revert InvalidRecord("baseModelHash");
        _checkString(r.method, "method", MAX_STRING_BYTES);
        _checkString(r.task, "task", MAX_STRING_BYTES);
        uint256 n = r.shardHashes.length;
        if (n == 0 || n > MAX_SHARDS) revert InvalidRecord("shardHashes");
        for (uint256 i = 0; i < n; ++i) {
            if (r.shardHashes[i] == bytes32(0)) revert InvalidRecord("shardHashes");
        }
        if (r.accuracyBps > 10_000) revert InvalidRecord("accuracyBps");
        if (bytes(r.metricsURI).length > MAX_URI_BYTES) revert InvalidRecord("metricsURI");
        if (r.parentId != 0) {
            if (r.parentId > adapterCount) revert UnknownAdapter(r.parentId);
            if (_adapters[r.parentId].record.baseModelHash != r.baseModelHash) revert ParentMismatch(r.parentId);
        }
    }

    function _checkSession(AdapterRecord calldata r) private view {
        uint256 sid = r.sessionId;
        uint256 existing = _adapterOfSession[sid];
        if (existing != 0) revert AlreadyPublished(sid, existing);
        TrainingSessions.Session memory s = sessions.getSession(sid);
        if (s.state != TrainingSessions.State.Completed) revert SessionNotCompleted(sid);
        if (!sessions.assignmentOf(sid, msg.sender).joined) revert NotSessionMember(sid, msg.sender);
        FineTuneGovernance.JobParams memory jp = governance.getParams(s.proposalId);
        if (jp.baseModelHash != r.baseModelHash) revert SessionMismatch("baseModelHash");
        if (keccak256(bytes(jp.method)) != keccak256(bytes(r.method))) revert SessionMismatch("method");
        if (keccak256(bytes(jp.task)) != keccak256(bytes(r.task))) revert SessionMismatch("task");
        if (r.shardHashes.length != s.numShards) revert ShardCountMismatch(s.numShards, r.shardHashes.length);
        uint256 last = uint256(s.rounds) - 1;
        for (uint256 i = 0; i < s.numShards; ++i) {
            bytes32 expected = sessions.finalHash(sid, last, i);
            if (expected != r.shardHashes[i]) revert ShardHashMismatch(i, expected, r.shardHashes[i]);
        }
    }

    function _checkString(string calldata s, string memory field, uint256 maxLen) private pure {
        uint256 len = bytes(s).length;
        if (len == 0 || len > maxLen) revert InvalidRecord(field);
    }

    function _modelTaskKey(bytes32 baseModelHash, string calldata task) private pure returns (bytes32) {
        return keccak256(abi.encode(baseModelHash, task));
    }
}
