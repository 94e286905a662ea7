// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {INodeRegistry} from "./INodeRegistry.sol";

/// @dev The most shards of one session. TrainingSessions.MAX_SHARDS; FineTuneGovernance (a job's shards)
///      and AdapterRegistry (an adapter's shard hashes) take theirs from here.
uint256 constant SESSION_MAX_SHARDS = 64;
/// @dev The most replicas of one shard. TrainingSessions.MAX_REPLICAS_PER_SHARD; FineTuneGovernance
///      (a job's minReplicas) takes its MAX_REPLICAS from here.
uint256 constant SESSION_MAX_REPLICAS = 1024;
/// @dev Attempts (epochs) one round gets before the session fails: a round that reaches no quorum of its
///      shard's replicas by its deadline is retried once per epoch, then the session is aborted.
uint256 constant SESSION_MAX_EPOCHS = 3;
/// @dev Replicas per shard from which the quorum ceil(2n/3) tolerates one Byzantine or dead replica: with
///      n = 3 the quorum is 2, so one faulty replica can neither reach it alone (safety: f < q) nor keep
///      the two honest ones from reaching it (liveness: n - f >= q). With n = 2 the quorum is 2 (one
///      fault stalls the round until the session fails cleanly); with n = 1 the replica decides alone.
uint256 constant SESSION_FAULT_TOLERANT_REPLICAS = 3;

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
    ///         A round runs in epochs: epoch e of the current round started at `roundStart` and takes
    ///         commits until `roundStart + commitTimeoutBlocks` (its deadline).
    /// @dev TrainingSessions reads and writes this slot as one word on the commit path: its field offsets
    ///      (S_ROUNDS etc.) follow this layout, so a change here must change them too.
    struct ShardState {
        uint32 memoryMB; // memory a node needs for this shard
        uint16 joined; // nodes assigned so far (replica indices 0..joined-1)
        uint16 replicas; // copy of Session.replicas set by start(); 0 = not training
        uint32 rounds; // copy of Session.rounds
        uint32 round; // current round; == rounds when the shard is done
        uint40 roundStart; // block in which the current round's current epoch started (0 before start)
        uint16 commits; // commits in this epoch
        uint16 leaderReplica; // replica whose commit holds the leading hash
        uint16 leaderCount; // commits equal to the leading hash
        uint8 epoch; // attempt of the current round (0-based, < MAX_EPOCHS)
        bool aborted; // the session failed: no more commits
    }

    /// @notice Where a node sits in a session.
    struct Assignment {
        bool joined;
        uint16 shard;
        uint16 replica;
        bool released; // the member took its stake lock back after the session ended
        bool barred; // a slash left the node below the minimum stake: its commits are refused
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
    error TimeoutNotReached(uint256 untilBlock);
    error RoundNotFinal(uint256 round, uint256 shard);
    error AlreadyReported(uint256 round, uint256 shard, address node);
    error NotFaulty(uint256 round, uint256 shard, address node);
    error CommitDeadlinePassed(uint256 deadline);
    error NodeBarred(address node);
    error NotBarrable(address node);
    error NotReleasable(uint256 sessionId, State state);
    error AlreadyReleased(uint256 sessionId, address node);
    error InvalidEpoch(uint256 round, uint256 epoch);

    event GovernanceSet(address indexed governance);
    event SessionOpened(uint256 indexed sessionId, uint256 indexed proposalId, uint256 numShards, uint256 rounds, uint256 joinDeadline);
    event Joined(uint256 indexed sessionId, address indexed node, uint256 shard, uint256 replica);
    event SessionStarted(uint256 indexed sessionId, uint256 replicas);
    event SessionFailed(uint256 indexed sessionId, uint256 replicas, uint256 minReplicas);
    event Committed(
        uint256 indexed sessionId, address indexed node, uint256 round, uint256 shard, bytes32 aggregateHash,
        bytes32 localUpdateHash, uint256 epoch
    );
    event RoundRetried(uint256 indexed sessionId, uint256 round, uint256 shard, uint256 epoch, uint256 deadline);
    event SessionAborted(uint256 indexed sessionId, uint256 round, uint256 shard);
    event Released(uint256 indexed sessionId, address indexed node);
    event Barred(uint256 indexed sessionId, address indexed node);
    event RoundFinalized(
        uint256 indexed sessionId, uint256 round, uint256 shard, bytes32 aggregateHash, uint256 votes, uint256 commits,
        uint256 epoch
    );
    event ShardCompleted(uint256 indexed sessionId, uint256 shard);
    event SessionCompleted(uint256 indexed sessionId);
    event FaultReported(
        uint256 indexed sessionId, address indexed node, uint256 round, uint256 shard, Fault fault, uint256 slashed,
        address reporter, uint256 epoch
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
    ///      lowest index; the replica index is that shard's join count. Joining locks the node's stake in
    ///      the NodeRegistry until the node calls release() after the session ended.
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
    ///         its own local update (the latter is recorded in the event only), in the round's current
    ///         epoch and before its deadline (roundStart + commitTimeoutBlocks). The commit that brings one
    ///         aggregate hash to ceil(2*replicas/3) votes finalizes the round for that shard.
    /// @dev A replica may still commit a finalized round until that round's deadline (recorded, not
    ///      counted), so a slow honest replica is never reported missing. A node whose stake fell below the
    ///      minimum through a slash is barred from committing.
    /// @param sessionId the session
    /// @param round the shard's current round (or a finalized round whose deadline has not passed)
    /// @param shard the caller's assigned shard
    /// @param aggregateHash keccak-256 of the canonical aggregated adapter bytes (non-zero)
    /// @param localUpdateHash keccak-256 of the node's own local update before aggregation
    function commit(uint256 sessionId, uint256 round, uint256 shard, bytes32 aggregateHash, bytes32 localUpdateHash)
        external;

    /// @notice Close a round whose current epoch passed its deadline without a quorum: the round is
    ///         retried in a new epoch (deadline counted from now), or, after MAX_EPOCHS attempts, the
    ///         session is aborted (state Failed, SessionAborted). Anyone may call.
    /// @param sessionId the session
    /// @param round the shard's current round
    /// @param shard the shard
    function closeRound(uint256 sessionId, uint256 round, uint256 shard) external;

    /// @notice Record and slash a provable fault of a replica in (round, epoch): no commit by that epoch's
    ///         deadline (Missing), or a commit that differs from the round's final hash in the epoch that
    ///         finalized it (WrongHash). Once per node, round and epoch. Anyone may call.
    /// @param sessionId the session
    /// @param round the round
    /// @param epoch the epoch of that round
    /// @param shard the shard
    /// @param node the replica being reported
    function reportFaulty(uint256 sessionId, uint256 round, uint256 epoch, uint256 shard, address node) external;

    /// @notice Bar a member from committing in this session because it is no longer an active node with
    ///         the minimum stake (slashed in another session, or withdrawn). Anyone may call; reportFaulty
    ///         bars the node itself when its own slash deactivates it.
    /// @param sessionId the session
    /// @param node a member that is not active or holds less than the minimum stake
    function bar(uint256 sessionId, address node) external;

    /// @notice Take back the stake lock of the sender's membership once the session ended (Completed or
    ///         Failed), or at once for a spare replica of a started session. Once per member.
    /// @param sessionId the session
    function release(uint256 sessionId) external;

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

    /// @notice The aggregate hash a node committed for (round, shard) in the epoch that counts: the
    ///         current epoch of the current round, the final epoch of a finished round; zero if none.
    /// @param sessionId the session
    /// @param round the round
    /// @param shard the shard
    /// @param node the node
    function commitOf(uint256 sessionId, uint256 round, uint256 shard, address node) external view returns (bytes32);

    /// @notice The aggregate hash a node committed in one epoch of a round; zero if none.
    /// @param sessionId the session
    /// @param round the round
    /// @param epoch the epoch
    /// @param shard the shard
    /// @param node the node
    function commitAt(uint256 sessionId, uint256 round, uint256 epoch, uint256 shard, address node)
        external
        view
        returns (bytes32);

    /// @notice The epoch in which a round was finalized and that epoch's deadline (0, 0 while not final).
    /// @param sessionId the session
    /// @param round the round
    /// @param shard the shard
    function finalEpoch(uint256 sessionId, uint256 round, uint256 shard)
        external
        view
        returns (uint256 epoch, uint256 deadline);

    /// @notice Last block in which the shard's current round takes commits in its current epoch.
    /// @param sessionId the session
    /// @param shard the shard
    function roundDeadline(uint256 sessionId, uint256 shard) external view returns (uint256);

    /// @notice Whether a member is barred from committing in a session (a slash left it below the minimum).
    /// @param sessionId the session
    /// @param node the node
    function isBarred(uint256 sessionId, address node) external view returns (bool);

    /// @notice Commits so far for an aggregate hash in the shard's CURRENT round and epoch (0 for any other round;
    ///         a finalized round's vote count is in its RoundFinalized event).
    /// @param sessionId the session
    /// @param round the round
    /// @param shard the shard
    /// @param aggregateHash the hash
    function votesFor(uint256 sessionId, uint256 round, uint256 shard, bytes32 aggregateHash)
        external
        view
        returns (uint256);

    /// @notice Whether a fault of `node` in (round, epoch, shard) is already on record.
    /// @param sessionId the session
    /// @param round the round
    /// @param epoch the epoch
    /// @param shard the shard
    /// @param node the node
    function faultReported(uint256 sessionId, uint256 round, uint256 epoch, uint256 shard, address node)
        external
        view
        returns (bool);

    /// @notice Votes that finalize a round: ceil(2*n/3).
    /// @param n the shard's replicas
    function quorumOf(uint256 n) external pure returns (uint256);

    /// @notice The NodeRegistry whose active nodes join and which this contract slashes through.
    function registry() external view returns (INodeRegistry);

    /// @notice Blocks after openSession during which nodes may join.
    function joinWindowBlocks() external view returns (uint256);

    /// @notice Blocks an epoch of a round takes commits, counted from the epoch's start (the session's
    ///         start, the previous round's finalization, or the previous epoch's close).
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

    /// @notice Attempts one round gets before the session is aborted (SESSION_MAX_EPOCHS).
    function MAX_EPOCHS() external view returns (uint256);
}
