// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {INodeRegistry} from "./INodeRegistry.sol";

/// @dev The most shards of one session. TrainingSessions.MAX_SHARDS; FineTuneGovernance (a job's shards)
///      and AdapterRegistry (an adapter's shard hashes) take theirs from here.
uint256 constant SESSION_MAX_SHARDS = 64;
/// @dev The most replicas of one shard. TrainingSessions.MAX_REPLICAS_PER_SHARD; FineTuneGovernance
///      (a job's minReplicas) takes its MAX_REPLICAS from here.
uint256 constant SESSION_MAX_REPLICAS = 1024;

/// @title ITrainingSessions
/// @notice One training session per executed proposal: who trains which shard (assignment), the rounds
///         of each shard, the aggregate hashes the replicas commit, and the faults on record. The types,
///         errors, events and functions of TrainingSessions; FineTuneGovernance opens sessions and
///         AdapterRegistry and FedPeatLedger read them through this interface.
interface ITrainingSessions {
    enum State {
        None,
        Joining,
        Training,
        Completed,
        Failed
    }

    enum Fault {
        None,
        WrongHash,
        Missing
    }

    /// @notice One session (the rounds and replicas of every shard live in `ShardState`).
    struct Session {
        uint256 proposalId;
        uint40 openedBlock;
        uint40 joinDeadline; // last block in which join() works
        uint40 startedBlock;
        uint16 numShards;
        uint16 replicas; // complete replicas, fixed by start()
        uint16 minReplicas;
        uint16 shardsDone;
        uint32 rounds;
        State state;
    }

    /// @notice The per-shard slot, written by every join and commit (already non-zero after open).
    /// @dev TrainingSessions reads and writes this slot as one word on the commit path: its field offsets
    ///      (S_ROUNDS etc.) follow this layout, so a change here must change them too.
    struct ShardState {
        uint32 memoryMB; // memory a node needs for this shard
        uint16 joined; // nodes assigned so far (replica indices 0..joined-1)
        uint16 replicas; // copy of Session.replicas set by start(); 0 = not training
        uint32 rounds; // copy of Session.rounds
        uint32 round; // current round; == rounds when the shard is done
        uint40 firstCommitBlock; // block of this round's first commit; 0 = none yet
        uint16 commits; // commits in this round
        uint16 leaderReplica; // replica whose commit holds the leading hash
        uint16 leaderCount; // commits equal to the leading hash
        uint40 lastFinalizedBlock; // block in which round-1 was finalized
    }

    /// @notice Where a node sits in a session.
    struct Assignment {
        bool joined;
        uint16 shard;
        uint16 replica;
    }

    error NotGovernance(address caller);
    error GovernanceAlreadySet(address governance);
    error ZeroAddress();
    error InvalidSession(string field);
    error SessionAlreadyOpen(uint256 proposalId, uint256 sessionId);
    error UnknownSession(uint256 sessionId);
    error WrongSessionState(uint256 sessionId, State state);
    error JoinWindowClosed(uint256 sessionId, uint256 deadline);
    error JoinWindowOpen(uint256 sessionId, uint256 deadline);
    error NodeNotActive(address node);
    error AlreadyJoined(uint256 sessionId, address node);
    error NoShardFits(uint32 memoryMB);
    error InvalidShard(uint256 shard, uint256 numShards);
    error NotAssigned(uint256 sessionId, uint256 shard, address node);
    error SpareReplica(uint256 sessionId, uint256 replica, uint256 replicas);
    error WrongRound(uint256 shard, uint256 expected, uint256 got);
    error ShardDone(uint256 shard);
    error InvalidHash();
    error AlreadyCommitted(uint256 round, uint256 shard, address node);
    error RoundClosed(uint256 round, uint256 shard);
    error NoCommits(uint256 round, uint256 shard);
    error TimeoutNotReached(uint256 untilBlock);
    error NoQuorum(uint256 leaderCount, uint256 needed);
    error RoundNotFinal(uint256 round, uint256 shard);
    error AlreadyReported(uint256 round, uint256 shard, address node);
    error NotFaulty(uint256 round, uint256 shard, address node);
    error GracePeriod(uint256 untilBlock);

    event GovernanceSet(address indexed governance);
    event SessionOpened(uint256 indexed sessionId, uint256 indexed proposalId, uint256 numShards, uint256 rounds, uint256 joinDeadline);
    event Joined(uint256 indexed sessionId, address indexed node, uint256 shard, uint256 replica);
    event SessionStarted(uint256 indexed sessionId, uint256 replicas);
    event SessionFailed(uint256 indexed sessionId, uint256 replicas, uint256 minReplicas);
    event Committed(
        uint256 indexed sessionId, address indexed node, uint256 round, uint256 shard, bytes32 aggregateHash,
        bytes32 localUpdateHash
    );
    event RoundFinalized(uint256 indexed sessionId, uint256 round, uint256 shard, bytes32 aggregateHash, uint256 votes, uint256 commits);
    event ShardCompleted(uint256 indexed sessionId, uint256 shard);
    event SessionCompleted(uint256 indexed sessionId);
    event FaultReported(
        uint256 indexed sessionId, address indexed node, uint256 round, uint256 shard, Fault fault, uint256 slashed,
        address reporter
    );

    /// @notice Set the governance contract that opens sessions. Owner, once.
    /// @param governance_ the FineTuneGovernance contract
    function setGovernance(address governance_) external;

    // ------------------------------------------------------------------ lifecycle

    /// @notice Open the session of an executed proposal. Only governance.
    /// @param proposalId the proposal being executed (one session per proposal)
    /// @param shardMemoryMB memory each shard needs (its length is the number of shards, 1..MAX_SHARDS)
    /// @param rounds number of sync rounds (> 0)
    /// @param minReplicas complete replicas needed for the session to start (> 0)
    /// @return sessionId the new session's id (1-based)
    function openSession(uint256 proposalId, uint32[] calldata shardMemoryMB, uint32 rounds, uint16 minReplicas)
        external
        returns (uint256 sessionId);

    /// @notice Join a session in its join window; the contract assigns a shard and a replica index.
    /// @dev Assignment rule (deterministic, checkable by anyone): among the shards whose memory need is
    ///      at most the node's registered memoryMB, the one with the fewest replicas so far, ties to the
    ///      lowest index; the replica index is that shard's join count.
    /// @param sessionId the session
    /// @return shard the assigned shard
    /// @return replica the assigned replica index within the shard
    function join(uint256 sessionId) external returns (uint256 shard, uint256 replica);

    /// @notice After the join window, fix the number of complete replicas (min over shards) and start
    ///         training, or fail the session if that is below minReplicas. Anyone may call.
    /// @param sessionId the session
    function start(uint256 sessionId) external;

    // ------------------------------------------------------------------ rounds

    /// @notice Commit the aggregate adapter hash this node computed for (round, shard), and the hash of
    ///         its own local update (the latter is recorded in the event only). The commit that brings
    ///         one aggregate hash to ceil(2*replicas/3) votes finalizes the round for that shard.
    /// @dev A replica may still commit the round just finalized without it, within commitTimeoutBlocks
    ///      of its finalization (recorded, not counted), so a slow honest replica is not reported missing.
    /// @param sessionId the session
    /// @param round the shard's current round (or the round just finalized, late)
    /// @param shard the caller's assigned shard
    /// @param aggregateHash keccak-256 of the canonical aggregated adapter bytes (non-zero)
    /// @param localUpdateHash keccak-256 of the node's own local update before aggregation
    function commit(uint256 sessionId, uint256 round, uint256 shard, bytes32 aggregateHash, bytes32 localUpdateHash)
        external;

    /// @notice Finalize a round for a shard once commitTimeoutBlocks have passed since its first commit:
    ///         the leading hash wins if it has ceil(2/3) of the commits made. Anyone may call.
    /// @param sessionId the session
    /// @param round the shard's current round
    /// @param shard the shard
    function finalizeAfterTimeout(uint256 sessionId, uint256 round, uint256 shard) external;

    /// @notice Record and slash a replica whose commit for a finalized round differs from the final
    ///         hash, or that did not commit it (reportable once the late-commit grace has passed). Once
    ///         per node and round. Anyone may call.
    /// @param sessionId the session
    /// @param round a finalized round of the shard
    /// @param shard the shard
    /// @param node the replica being reported
    function reportFaulty(uint256 sessionId, uint256 round, uint256 shard, address node) external;

    // ------------------------------------------------------------------ views

    /// @notice The session record.
    /// @param sessionId the session
    function getSession(uint256 sessionId) external view returns (Session memory);

    /// @notice The session opened for a proposal (0 if none).
    /// @param proposalId the proposal
    function sessionOfProposal(uint256 proposalId) external view returns (uint256);

    /// @notice The per-shard state (memory need, joined, replicas, round, commits, leader...).
    /// @param sessionId the session
    /// @param shard the shard
    function getShard(uint256 sessionId, uint256 shard) external view returns (ShardState memory);

    /// @notice Where a node sits in a session (joined false if it did not join).
    /// @param sessionId the session
    /// @param node the node
    function assignmentOf(uint256 sessionId, address node) external view returns (Assignment memory);

    /// @notice The node holding (shard, replica) in a session (zero address if none).
    /// @param sessionId the session
    /// @param shard the shard
    /// @param replica the replica index
    function memberAt(uint256 sessionId, uint256 shard, uint256 replica) external view returns (address);

    /// @notice Complete replicas of a started session (0 before start).
    /// @param sessionId the session
    function replicas(uint256 sessionId) external view returns (uint256);

    /// @notice The shard's current round (== rounds when the shard is done).
    /// @param sessionId the session
    /// @param shard the shard
    function currentRound(uint256 sessionId, uint256 shard) external view returns (uint256);

    /// @notice The final aggregate hash of (round, shard); zero while not final.
    /// @param sessionId the session
    /// @param round the round
    /// @param shard the shard
    function finalHash(uint256 sessionId, uint256 round, uint256 shard) external view returns (bytes32);

    /// @notice The aggregate hash a node committed for (round, shard); zero if none.
    /// @param sessionId the session
    /// @param round the round
    /// @param shard the shard
    /// @param node the node
    function commitOf(uint256 sessionId, uint256 round, uint256 shard, address node) external view returns (bytes32);

    /// @notice Commits so far for an aggregate hash in the shard's CURRENT round (0 for any other round;
    ///         a finalized round's vote count is in its RoundFinalized event).
    /// @param sessionId the session
    /// @param round the round
    /// @param shard the shard
    /// @param aggregateHash the hash
    function votesFor(uint256 sessionId, uint256 round, uint256 shard, bytes32 aggregateHash)
        external
        view
        returns (uint256);

    /// @notice Whether a fault of `node` in (round, shard) is already on record.
    /// @param sessionId the session
    /// @param round the round
    /// @param shard the shard
    /// @param node the node
    function faultReported(uint256 sessionId, uint256 round, uint256 shard, address node) external view returns (bool);

    /// @notice Votes that finalize a round: ceil(2*n/3).
    /// @param n replicas (or, after a timeout, commits)
    function quorumOf(uint256 n) external pure returns (uint256);

    /// @notice The NodeRegistry whose active nodes join and which this contract slashes through.
    function registry() external view returns (INodeRegistry);

    /// @notice Blocks after openSession during which nodes may join.
    function joinWindowBlocks() external view returns (uint256);

    /// @notice Blocks after a round's first commit after which finalizeAfterTimeout works; also the grace
    ///         a replica has to commit a round that was finalized without it.
    function commitTimeoutBlocks() external view returns (uint256);

    /// @notice Wei slashed per reported fault.
    function slashAmount() external view returns (uint256);

    /// @notice The governance contract allowed to open sessions; set once by the owner.
    function governance() external view returns (address);

    /// @notice Number of sessions opened (ids are 1..sessionCount).
    function sessionCount() external view returns (uint256);

    /// @notice Most shards of one session (SESSION_MAX_SHARDS).
    function MAX_SHARDS() external view returns (uint256);

    /// @notice Most replicas of one shard (SESSION_MAX_REPLICAS).
    function MAX_REPLICAS_PER_SHARD() external view returns (uint256);
}
