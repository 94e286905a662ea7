// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAdapterRegistry} from "./interfaces/IAdapterRegistry.sol";
import {IFineTuneGovernance} from "./interfaces/IFineTuneGovernance.sol";
import {ITrainingSessions, SESSION_MAX_SHARDS} from "./interfaces/ITrainingSessions.sol";

/// @title AdapterRegistry
/// @notice The catalogue of finished adapters: what base model, method and task each is for, the hash of
///         each shard's adapter weights, the session that produced it, its parent and its metrics.
/// @dev When a record names a session, publish checks it against the chain (IAdapterRegistry.publish), reading
///      the session from TrainingSessions and its job parameters from FineTuneGovernance.
contract AdapterRegistry is IAdapterRegistry {
    /// @inheritdoc IAdapterRegistry
    uint256 public constant MAX_SHARDS = SESSION_MAX_SHARDS;
    /// @inheritdoc IAdapterRegistry
    uint256 public constant MAX_STRING_BYTES = 256;
    /// @inheritdoc IAdapterRegistry
    uint256 public constant MAX_URI_BYTES = 1024;

    /// @inheritdoc IAdapterRegistry
    ITrainingSessions public immutable sessions;
    /// @inheritdoc IAdapterRegistry
    IFineTuneGovernance public immutable governance;
    /// @inheritdoc IAdapterRegistry
    uint256 public adapterCount;

    mapping(uint256 => Adapter) private _adapters;
    mapping(bytes32 => uint256[]) private _byModelTask; // keccak(baseModelHash, task) -> verified ids
    mapping(bytes32 => uint256[]) private _unverified; // keccak(baseModelHash, task) -> ids without a session
    mapping(uint256 => mapping(address => uint256)) private _attest; // id -> attester -> 1 + accuracyBps
    mapping(uint256 => uint256) private _attestCount;
    mapping(uint256 => uint256) private _adapterOfSession;

    /// @param sessions_ the TrainingSessions contract whose final hashes adapters are checked against
    /// @param governance_ the FineTuneGovernance contract holding each session's job parameters
    constructor(ITrainingSessions sessions_, IFineTuneGovernance governance_) {
        if (address(sessions_) == address(0) || address(governance_) == address(0)) revert ZeroAddress();
        sessions = sessions_;
        governance = governance_;
    }

    /// @inheritdoc IAdapterRegistry
    function publish(AdapterRecord calldata record) external returns (uint256 adapterId) {
        _validate(record);
        if (record.sessionId != 0) _checkSession(record);

        adapterId = ++adapterCount;
        Adapter storage a = _adapters[adapterId];
        a.record = record;
        a.publisher = msg.sender;
        a.publishedBlock = block.number;
        bytes32 key = _modelTaskKey(record.baseModelHash, record.task);
        // a record nobody checked must not be able to take over what the lookups answer
        if (record.sessionId != 0) {
            _byModelTask[key].push(adapterId);
            _adapterOfSession[record.sessionId] = adapterId;
        } else {
            _unverified[key].push(adapterId);
        }
        emit AdapterPublished(
            adapterId, record.baseModelHash, record.sessionId, msg.sender, record.manifestHash, record.task,
            record.method, record.parentId
        );
        if (record.sessionId != 0) _recordAttestation(adapterId, record.accuracyBps, record.metricsURI);
    }

    /// @inheritdoc IAdapterRegistry
    function attest(uint256 adapterId, uint32 accuracyBps, string calldata metricsURI) external {
        if (adapterId == 0 || adapterId > adapterCount) revert UnknownAdapter(adapterId);
        uint256 sid = _adapters[adapterId].record.sessionId;
        if (sid == 0) revert NotFromSession(adapterId);
        if (!sessions.assignmentOf(sid, msg.sender).joined) revert NotSessionMember(sid, msg.sender);
        if (accuracyBps > 10_000) revert InvalidRecord("accuracyBps");
        if (bytes(metricsURI).length > MAX_URI_BYTES) revert InvalidRecord("metricsURI");
        _recordAttestation(adapterId, accuracyBps, metricsURI);
    }

    function _recordAttestation(uint256 adapterId, uint32 accuracyBps, string calldata metricsURI) private {
        if (_attest[adapterId][msg.sender] != 0) revert AlreadyAttested(adapterId, msg.sender);
        _attest[adapterId][msg.sender] = 1 + uint256(accuracyBps);
        ++_attestCount[adapterId];
        emit MetricsAttested(adapterId, msg.sender, accuracyBps, metricsURI);
    }

    /// @inheritdoc IAdapterRegistry
    function attestationOf(uint256 adapterId, address attester) external view returns (bool attested, uint32 accuracyBps) {
        uint256 v = _attest[adapterId][attester];
        return (v != 0, v == 0 ? 0 : uint32(v - 1));
    }

    /// @inheritdoc IAdapterRegistry
    function attestationCount(uint256 adapterId) external view returns (uint256) {
        return _attestCount[adapterId];
    }

    /// @inheritdoc IAdapterRegistry
    function unverifiedFor(bytes32 baseModelHash, string calldata task) external view returns (uint256[] memory) {
        return _unverified[_modelTaskKey(baseModelHash, task)];
    }

    /// @inheritdoc IAdapterRegistry
    function getAdapter(uint256 adapterId) external view returns (Adapter memory) {
        if (adapterId == 0 || adapterId > adapterCount) revert UnknownAdapter(adapterId);
        return _adapters[adapterId];
    }

    /// @inheritdoc IAdapterRegistry
    function adaptersFor(bytes32 baseModelHash, string calldata task) external view returns (uint256[] memory) {
        return _byModelTask[_modelTaskKey(baseModelHash, task)];
    }

    /// @inheritdoc IAdapterRegistry
    function latestFor(bytes32 baseModelHash, string calldata task) external view returns (uint256) {
        uint256[] storage ids = _byModelTask[_modelTaskKey(baseModelHash, task)];
        return ids.length == 0 ? 0 : ids[ids.length - 1];
    }

    /// @inheritdoc IAdapterRegistry
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
        ITrainingSessions.Session memory s = sessions.getSession(sid);
        if (s.state != ITrainingSessions.State.Completed) revert SessionNotCompleted(sid);
        if (!sessions.assignmentOf(sid, msg.sender).joined) revert NotSessionMember(sid, msg.sender);
        IFineTuneGovernance.JobParams memory jp = governance.getParams(s.proposalId);
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
