// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IFineTuneGovernance} from "./IFineTuneGovernance.sol";
import {ITrainingSessions} from "./ITrainingSessions.sol";

/// @title IAdapterRegistry
/// @notice The catalogue of finished adapters: what base model, method and task each is for, the hash of
///         each shard's adapter weights, the session that produced it, its parent and its metrics. The
///         types, errors, events and functions of AdapterRegistry.
interface IAdapterRegistry {
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
    error NotFromSession(uint256 adapterId);
    error AlreadyAttested(uint256 adapterId, address attester);

    event AdapterPublished(
        uint256 indexed adapterId, bytes32 indexed baseModelHash, uint256 indexed sessionId, address publisher,
        bytes32 manifestHash, string task, string method, uint256 parentId
    );

    event MetricsAttested(uint256 indexed adapterId, address indexed attester, uint32 accuracyBps, string metricsURI);

    /// @notice Publish a finished adapter; checked against its session when `record.sessionId` != 0.
    /// @dev A record that names a session needs: the session Completed, the publisher a member of it, base
    ///      model hash, method and task equal to the proposal's, and every shard hash equal to that shard's
    ///      final aggregate hash of the last round. One adapter per session. Only such verified records feed
    ///      adaptersFor/latestFor; a record without a session (0) is listed apart (unverifiedFor). The record's
    ///      accuracy and metrics URI count as the publisher's attestation (see attest).
    /// @param record the adapter record
    /// @return adapterId the new adapter's id (1-based)
    function publish(AdapterRecord calldata record) external returns (uint256 adapterId);

    /// @notice An adapter by id.
    /// @param adapterId the adapter
    function getAdapter(uint256 adapterId) external view returns (Adapter memory);

    /// @notice Attest an adapter's metrics as a member of the session that produced it (once per member):
    ///         metrics are claims by named members, not facts the contract checked.
    /// @param adapterId an adapter published from a session
    /// @param accuracyBps the accuracy this member measured x 10000
    /// @param metricsURI further metrics (free-form, <= MAX_URI_BYTES)
    function attest(uint256 adapterId, uint32 accuracyBps, string calldata metricsURI) external;

    /// @notice Whether `attester` attested the adapter's metrics, and the accuracy it attested.
    /// @param adapterId the adapter
    /// @param attester a member of its session
    function attestationOf(uint256 adapterId, address attester) external view returns (bool attested, uint32 accuracyBps);

    /// @notice How many members attested the adapter's metrics (the publisher counts as one).
    /// @param adapterId the adapter
    function attestationCount(uint256 adapterId) external view returns (uint256);

    /// @notice Ids of the adapters not checked against a session (sessionId 0) for a base model and task.
    /// @param baseModelHash the base model's weights hash
    /// @param task the task name
    function unverifiedFor(bytes32 baseModelHash, string calldata task) external view returns (uint256[] memory);

    /// @notice Ids of the verified adapters (published from a completed session) for a base model and task,
    ///         oldest first.
    /// @param baseModelHash the base model's weights hash
    /// @param task the task name
    function adaptersFor(bytes32 baseModelHash, string calldata task) external view returns (uint256[] memory);

    /// @notice The newest verified adapter for a base model and task (0 if none).
    /// @param baseModelHash the base model's weights hash
    /// @param task the task name
    function latestFor(bytes32 baseModelHash, string calldata task) external view returns (uint256);

    /// @notice The adapter published from a session (0 if none).
    /// @param sessionId the session
    function adapterOfSession(uint256 sessionId) external view returns (uint256);

    /// @notice The TrainingSessions contract whose final hashes adapters are checked against.
    function sessions() external view returns (ITrainingSessions);

    /// @notice The FineTuneGovernance contract holding each session's job parameters.
    function governance() external view returns (IFineTuneGovernance);

    /// @notice Number of adapters published (ids are 1..adapterCount).
    function adapterCount() external view returns (uint256);

    /// @notice Most shard hashes of one adapter (TrainingSessions' MAX_SHARDS).
    function MAX_SHARDS() external view returns (uint256);

    /// @notice Longest baseModel, method and task string accepted, in bytes.
    function MAX_STRING_BYTES() external view returns (uint256);

    /// @notice Longest metricsURI accepted, in bytes.
    function MAX_URI_BYTES() external view returns (uint256);
}
