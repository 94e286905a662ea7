// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {NodeRegistry} from "./NodeRegistry.sol";

/// @title TrainingSessions
/// @notice One training session per executed proposal: who trains which shard (assignment), the rounds
///         of each shard, the aggregate hashes the replicas commit, and the faults on record.
/// @dev Gas design: `commit` touches only slots that do not depend on the number of nodes: the caller's
///      assignment, the shard's state slot (already non-zero: it holds the shard's round, commit
///      count and leader), the caller's new commit slot, and the leader's commit slot. The leader is the
///      committed hash with the most votes so far this round (ties: earliest); any hash that reaches
///      2/3 of the commits is necessarily the leader, so finalization never needs a loop. Counts of
///      non-leader hashes live in a side mapping (the rare, dissenting path pays for it).
///      The only loops are over the shards of one session (at most MAX_SHARDS).
contract TrainingSessions is Ownable {
    enum State {
        None,
        Joining,
        Training,
        Completed,
        Failed
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

    enum Fault {
        None,
        WrongHash,
        Missing
    }

    uint256 public constant MAX_SHARDS = 64;
    uint256 public constant MAX_REPLICAS_PER_SHARD = 1024;

    NodeRegistry public immutable registry;
    /// @notice Blocks after openSession during which nodes may join.
    uint256 public immutable joinWindowBlocks;
    /// @notice Blocks after a round's first commit after which finalizeAfterTimeout works; also the grace
    ///         a replica has to commit a round that was finalized without it.
    uint256 public immutable commitTimeoutBlocks;
    /// @notice Wei slashed per reported fault.
    uint256 public immutable slashAmount;
    /// @notice The governance contract allowed to open sessions; set once by the owner.
    address public governance;
    /// @notice Number of sessions opened (ids are 1..sessionCount).
    uint256 public sessionCount;

    mapping(uint256 => Session) private _sessions;
    mapping(uint256 => uint256) private _sessionOfProposal;
    mapping(uint256 => mapping(uint256 => ShardState)) private _shards;
    mapping(uint256 => mapping(address => Assignment)) private _assign;
    mapping(bytes32 => address) private _member; // key(session, shard, replica)
    mapping(bytes32 => bytes32) private _commit; // key(session, round, shard, replica) -> aggregate hash
    mapping(bytes32 => uint256) private _otherCount; // keccak(key(session, round, shard), hash) -> count
    mapping(bytes32 => bytes32) private _final; // key(session, round, shard) -> final aggregate hash
    mapping(bytes32 => bool) private _reported; // key(session, round, shard, replica)

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

    /// @param registry_ the NodeRegistry (this contract must become its slasher)
    /// @param joinWindowBlocks_ blocks during which nodes may join an opened session
    /// @param commitTimeoutBlocks_ blocks after a round's first commit before finalizeAfterTimeout works
    /// @param slashAmount_ wei slashed per reported fault
    constructor(NodeRegistry registry_, uint256 joinWindowBlocks_, uint256 commitTimeoutBlocks_, uint256 slashAmount_)
        Ownable(msg.sender)
    {
        if (address(registry_) == address(0)) revert ZeroAddress();
        if (joinWindowBlocks_ == 0) revert InvalidSession("joinWindowBlocks");
        if (commitTimeoutBlocks_ == 0) revert InvalidSession("commitTimeoutBlocks");
        registry = registry_;
        joinWindowBlocks = joinWindowBlocks_;
        commitTimeoutBlocks = commitTimeoutBlocks_;
        slashAmount = slashAmount_;
    }

    /// @notice Set the governance contract that opens sessions. Owner, once.
    /// @param governance_ the FineTuneGovernance contract
    function setGovernance(address governance_) external onlyOwner {
        if (governance != address(0)) revert GovernanceAlreadySet(governance);
        if (governance_ == address(0)) revert ZeroAddress();
        governance = governance_;
        emit GovernanceSet(governance_);
    }

    // ------------------------------------------------------------------ lifecycle

    /// @notice Open the session of an executed proposal. Only governance.
    /// @param proposalId the proposal being executed (one session per proposal)
    /// @param shardMemoryMB memory each shard needs (its length is the number of shards, 1..64)
    /// @param rounds number of sync rounds (> 0)
    /// @param minReplicas complete replicas needed for the session to start (> 0)
    /// @return sessionId the new session's id (1-based)
    function openSession(uint256 proposalId, uint32[] calldata shardMemoryMB, uint32 rounds, uint16 minReplicas)
        external
        returns (uint256 sessionId)
    {
        if (msg.sender != governance) revert NotGovernance(msg.sender);
        uint256 n = shardMemoryMB.length;
        if (n == 0 || n > MAX_SHARDS) revert InvalidSession("shardMemoryMB");
        if (rounds == 0) revert InvalidSession("rounds");
        if (minReplicas == 0 || minReplicas > MAX_REPLICAS_PER_SHARD) revert InvalidSession("minReplicas");
        if (_sessionOfProposal[proposalId] != 0) revert SessionAlreadyOpen(proposalId, _sessionOfProposal[proposalId]);

        sessionId = ++sessionCount;
        uint256 deadline = block.number + joinWindowBlocks;
        _sessions[sessionId] = Session({
            proposalId: proposalId,
            openedBlock: uint40(block.number),
            joinDeadline: uint40(deadline),
            startedBlock: 0,
            numShards: uint16(n),
            replicas: 0,
            minReplicas: minReplicas,
            shardsDone: 0,
            rounds: rounds,
            state: State.Joining
        });
        _sessionOfProposal[proposalId] = sessionId;
        for (uint256 s = 0; s < n; ++s) {
            if (shardMemoryMB[s] == 0) revert InvalidSession("shardMemoryMB");
            ShardState storage sh = _shards[sessionId][s];
            sh.memoryMB = shardMemoryMB[s];
            sh.rounds = rounds;
        }
        emit SessionOpened(sessionId, proposalId, n, rounds, deadline);
    }

    /// @notice Join a session in its join window; the contract assigns a shard and a replica index.
    /// @dev Assignment rule (deterministic, checkable by anyone): among the shards whose memory need is
    ///      at most the node's registered memoryMB, the one with the fewest replicas so far, ties to the
    ///      lowest index; the replica index is that shard's join count.
    /// @param sessionId the session
    /// @return shard the assigned shard
    /// @return replica the assigned replica index within the shard
    function join(uint256 sessionId) external returns (uint256 shard, uint256 replica) {
        Session storage s = _sessionOrRevert(sessionId);
        if (s.state != State.Joining) revert WrongSessionState(sessionId, s.state);
        if (block.number > s.joinDeadline) revert JoinWindowClosed(sessionId, s.joinDeadline);
        if (_assign[sessionId][msg.sender].joined) revert AlreadyJoined(sessionId, msg.sender);
        (,, NodeRegistry.Status status, uint32 memoryMB) = registry.eligibility(msg.sender);
        if (status != NodeRegistry.Status.Active) revert NodeNotActive(msg.sender);

        uint256 n = s.numShards;
        uint256 best = type(uint256).max;
        uint256 bestCount = type(uint256).max;
        for (uint256 i = 0; i < n; ++i) {
            ShardState storage sh = _shards[sessionId][i];
            if (sh.memoryMB <= memoryMB && sh.joined < bestCount && sh.joined < MAX_REPLICAS_PER_SHARD) {
                best = i;
                bestCount = sh.joined;
            }
        }
        if (best == type(uint256).max) revert NoShardFits(memoryMB);
        shard = best;
        replica = bestCount;
        _shards[sessionId][shard].joined = uint16(replica + 1);
        _assign[sessionId][msg.sender] = Assignment(true, uint16(shard), uint16(replica));
        _member[_key3(sessionId, shard, replica)] = msg.sender;
        emit Joined(sessionId, msg.sender, shard, replica);
    }

    /// @notice After the join window, fix the number of complete replicas (min over shards) and start
    ///         training, or fail the session if that is below minReplicas. Anyone may call.
    /// @param sessionId the session
    function start(uint256 sessionId) external {
        Session storage s = _sessionOrRevert(sessionId);
        if (s.state != State.Joining) revert WrongSessionState(sessionId, s.state);
        if (block.number <= s.joinDeadline) revert JoinWindowOpen(sessionId, s.joinDeadline);
        uint256 n = s.numShards;
        uint256 r = type(uint256).max;
        for (uint256 i = 0; i < n; ++i) {
            r = Math.min(r, _shards[sessionId][i].joined);
        }
        if (r < s.minReplicas) {
            s.state = State.Failed;
            emit SessionFailed(sessionId, r, s.minReplicas);
            return;
        }
        s.state = State.Training;
        s.replicas = uint16(r);
        s.startedBlock = uint40(block.number);
        for (uint256 i = 0; i < n; ++i) {
            _shards[sessionId][i].replicas = uint16(r);
        }
        emit SessionStarted(sessionId, r);
    }

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
        external
    {
        if (aggregateHash == bytes32(0)) revert InvalidHash();
        uint256 a = _assignWord(sessionId, msg.sender);
        if (a & 0xff == 0 || _field(a, A_SHARD) != shard) revert NotAssigned(sessionId, shard, msg.sender);
        uint256 replica = _field(a, A_REPLICA);
        uint256 slot = _shardSlot(sessionId, shard);
        uint256 w = _sload(slot);
        uint256 nReplicas = _field(w, S_REPLICAS);
        if (nReplicas == 0) revert WrongSessionState(sessionId, _sessions[sessionId].state);
        if (replica >= nReplicas) revert SpareReplica(sessionId, replica, nReplicas);

        bytes32 ck = _key4(sessionId, round, shard, replica);
        if (_commit[ck] != bytes32(0)) revert AlreadyCommitted(round, shard, msg.sender);

        uint256 current = _field(w, S_ROUND);
        if (round != current) {
            // late commit for the round finalized without this replica: record only, inside the grace
            if (current != 0 && round == current - 1 && block.number <= _field(w, S_LAST_FINAL) + commitTimeoutBlocks) {
                _commit[ck] = aggregateHash;
                emit Committed(sessionId, msg.sender, round, shard, aggregateHash, localUpdateHash);
                return;
            }
            if (round < current) revert RoundClosed(round, shard);
            if (current >= _field(w, S_ROUNDS)) revert ShardDone(shard);
            revert WrongRound(shard, current, round);
        }
        if (current >= _field(w, S_ROUNDS)) revert ShardDone(shard);

        _commit[ck] = aggregateHash;
        emit Committed(sessionId, msg.sender, round, shard, aggregateHash, localUpdateHash);
        _tally(sessionId, round, shard, replica, aggregateHash, slot, w);
    }

    /// @dev Counts a current-round commit and finalizes the round when the hash reaches 2/3 of replicas.
    function _tally(
        uint256 sessionId,
        uint256 round,
        uint256 shard,
        uint256 replica,
        bytes32 aggregateHash,
        uint256 slot,
        uint256 w
    ) private {
        uint256 votes;
        uint256 commits = _field(w, S_COMMITS);
        if (commits == 0) {
            w = _setField(w, S_FIRST_COMMIT, block.number);
            w = _setField(w, S_LEADER, replica);
            votes = 1;
            w = _setField(w, S_LEADER_COUNT, 1);
        } else {
            uint256 leaderCount = _field(w, S_LEADER_COUNT);
            bytes32 leaderHash = _commit[_key4(sessionId, round, shard, _field(w, S_LEADER))];
            if (aggregateHash == leaderHash) {
                votes = leaderCount + 1;
                w = _setField(w, S_LEADER_COUNT, votes);
            } else {
                // dissenting hash: counted in the side mapping; it becomes the leader once it has more
                // votes, and the old leader's count moves to the side mapping so counts stay exact.
                bytes32 rk = _key3(sessionId, round, shard);
                votes = ++_otherCount[keccak256(abi.encode(rk, aggregateHash))];
                if (votes > leaderCount) {
                    _otherCount[keccak256(abi.encode(rk, leaderHash))] = leaderCount;
                    w = _setField(w, S_LEADER, replica);
                    w = _setField(w, S_LEADER_COUNT, votes);
                }
            }
        }
        w = _setField(w, S_COMMITS, commits + 1);

        if (votes >= _ceilTwoThirds(_field(w, S_REPLICAS))) {
            _finalize(sessionId, round, shard, slot, w, aggregateHash, votes);
        } else {
            _sstore(slot, w);
        }
    }

    /// @notice Finalize a round for a shard once commitTimeoutBlocks have passed since its first commit:
    ///         the leading hash wins if it has ceil(2/3) of the commits made. Anyone may call.
    /// @param sessionId the session
    /// @param round the shard's current round
    /// @param shard the shard
    function finalizeAfterTimeout(uint256 sessionId, uint256 round, uint256 shard) external {
        Session storage s = _sessionOrRevert(sessionId);
        if (shard >= s.numShards) revert InvalidShard(shard, s.numShards);
        uint256 slot = _shardSlot(sessionId, shard);
        uint256 w = _sload(slot);
        if (_field(w, S_REPLICAS) == 0) revert WrongSessionState(sessionId, s.state);
        uint256 current = _field(w, S_ROUND);
        if (current >= _field(w, S_ROUNDS)) revert ShardDone(shard);
        if (round != current) revert WrongRound(shard, current, round);
        uint256 commits = _field(w, S_COMMITS);
        if (commits == 0) revert NoCommits(round, shard);
        uint256 until = _field(w, S_FIRST_COMMIT) + commitTimeoutBlocks;
        if (block.number <= until) revert TimeoutNotReached(until);
        uint256 needed = _ceilTwoThirds(commits);
        uint256 leaderCount = _field(w, S_LEADER_COUNT);
        if (leaderCount < needed) revert NoQuorum(leaderCount, needed);
        bytes32 leaderHash = _commit[_key4(sessionId, round, shard, _field(w, S_LEADER))];
        _finalize(sessionId, round, shard, slot, w, leaderHash, leaderCount);
    }

    /// @notice Record and slash a replica whose commit for a finalized round differs from the final
    ///         hash, or that did not commit it (reportable once the late-commit grace has passed). Once
    ///         per node and round. Anyone may call.
    /// @param sessionId the session
    /// @param round a finalized round of the shard
    /// @param shard the shard
    /// @param node the replica being reported
    function reportFaulty(uint256 sessionId, uint256 round, uint256 shard, address node) external {
        Assignment memory a = _assign[sessionId][node];
        if (!a.joined || a.shard != shard) revert NotAssigned(sessionId, shard, node);
        ShardState memory sh = _shards[sessionId][shard];
        if (a.replica >= sh.replicas) revert SpareReplica(sessionId, a.replica, sh.replicas);
        bytes32 rk = _key3(sessionId, round, shard);
        bytes32 fin = _final[rk];
        if (fin == bytes32(0)) revert RoundNotFinal(round, shard);
        bytes32 ck = _key4(sessionId, round, shard, a.replica);
        if (_reported[ck]) revert AlreadyReported(round, shard, node);
        bytes32 c = _commit[ck];
        Fault fault;
        if (c == bytes32(0)) {
            if (sh.round != 0 && round == uint256(sh.round) - 1) {
                uint256 until = uint256(sh.lastFinalizedBlock) + commitTimeoutBlocks;
                if (block.number <= until) revert GracePeriod(until);
            }
            fault = Fault.Missing;
        } else if (c != fin) {
            fault = Fault.WrongHash;
        } else {
            revert NotFaulty(round, shard, node);
        }
        _reported[ck] = true;
        uint256 slashed = 0;
        if (slashAmount > 0) {
            // a node that already withdrew everything is still put on record
            (uint96 stake,, NodeRegistry.Status st,) = registry.eligibility(node);
            if (stake > 0 && (st == NodeRegistry.Status.Active || st == NodeRegistry.Status.Exiting)) {
                slashed = registry.slash(node, slashAmount);
            }
        }
        emit FaultReported(sessionId, node, round, shard, fault, slashed, msg.sender);
    }

    // ------------------------------------------------------------------ views

    /// @notice The session record.
    /// @param sessionId the session
    function getSession(uint256 sessionId) external view returns (Session memory) {
        return _sessions[sessionId];
    }

    /// @notice The session opened for a proposal (0 if none).
    /// @param proposalId the proposal
    function sessionOfProposal(uint256 proposalId) external view returns (uint256) {
        return _sessionOfProposal[proposalId];
    }

    /// @notice The per-shard state (memory need, joined, replicas, round, commits, leader...).
    /// @param sessionId the session
    /// @param shard the shard
    function getShard(uint256 sessionId, uint256 shard) external view returns (ShardState memory) {
        return _shards[sessionId][shard];
    }

    /// @notice Where a node sits in a session (joined false if it did not join).
    /// @param sessionId the session
    /// @param node the node
    function assignmentOf(uint256 sessionId, address node) external view returns (Assignment memory) {
        return _assign[sessionId][node];
    }

    /// @notice The node holding (shard, replica) in a session (zero address if none).
    /// @param sessionId the session
    /// @param shard the shard
    /// @param replica the replica index
    function memberAt(uint256 sessionId, uint256 shard, uint256 replica) external view returns (address) {
        return _member[_key3(sessionId, shard, replica)];
    }

    /// @notice Complete replicas of a started session (0 before start).
    /// @param sessionId the session
    function replicas(uint256 sessionId) external view returns (uint256) {
        return _sessions[sessionId].replicas;
    }

    /// @notice The shard's current round (== rounds when the shard is done).
    /// @param sessionId the session
    /// @param shard the shard
    function currentRound(uint256 sessionId, uint256 shard) external view returns (uint256) {
        return _shards[sessionId][shard].round;
    }

    /// @notice The final aggregate hash of (round, shard); zero while not final.
    /// @param sessionId the session
    /// @param round the round
    /// @param shard the shard
    function finalHash(uint256 sessionId, uint256 round, uint256 shard) external view returns (bytes32) {
        return _final[_key3(sessionId, round, shard)];
    }

    /// @notice The aggregate hash a node committed for (round, shard); zero if none.
    /// @param sessionId the session
    /// @param round the round
    /// @param shard the shard
    /// @param node the node
    function commitOf(uint256 sessionId, uint256 round, uint256 shard, address node) external view returns (bytes32) {
        Assignment memory a = _assign[sessionId][node];
        if (!a.joined || a.shard != shard) return bytes32(0);
        return _commit[_key4(sessionId, round, shard, a.replica)];
    }

    /// @notice Commits so far for an aggregate hash in the shard's CURRENT round (0 for any other round;
    ///         a finalized round's vote count is in its RoundFinalized event).
    /// @param sessionId the session
    /// @param round the round
    /// @param shard the shard
    /// @param aggregateHash the hash
    function votesFor(uint256 sessionId, uint256 round, uint256 shard, bytes32 aggregateHash)
        external
        view
        returns (uint256)
    {
        ShardState memory sh = _shards[sessionId][shard];
        if (round != sh.round || sh.commits == 0) return 0;
        if (_commit[_key4(sessionId, round, shard, sh.leaderReplica)] == aggregateHash) return sh.leaderCount;
        return _otherCount[keccak256(abi.encode(_key3(sessionId, round, shard), aggregateHash))];
    }

    /// @notice Whether a fault of `node` in (round, shard) is already on record.
    /// @param sessionId the session
    /// @param round the round
    /// @param shard the shard
    /// @param node the node
    function faultReported(uint256 sessionId, uint256 round, uint256 shard, address node) external view returns (bool) {
        Assignment memory a = _assign[sessionId][node];
        if (!a.joined || a.shard != shard) return false;
        return _reported[_key4(sessionId, round, shard, a.replica)];
    }

    /// @notice Votes that finalize a round: ceil(2*n/3).
    /// @param n replicas (or, after a timeout, commits)
    function quorumOf(uint256 n) external pure returns (uint256) {
        return _ceilTwoThirds(n);
    }

    // ------------------------------------------------------------------ internals

    function _finalize(
        uint256 sessionId,
        uint256 round,
        uint256 shard,
        uint256 slot,
        uint256 w,
        bytes32 hash,
        uint256 votes
    ) private {
        _final[_key3(sessionId, round, shard)] = hash;
        emit RoundFinalized(sessionId, round, shard, hash, votes, _field(w, S_COMMITS));
        uint256 next = round + 1;
        w = _setField(w, S_ROUND, next);
        w = _setField(w, S_FIRST_COMMIT, 0);
        w = _setField(w, S_COMMITS, 0);
        w = _setField(w, S_LEADER, 0);
        w = _setField(w, S_LEADER_COUNT, 0);
        w = _setField(w, S_LAST_FINAL, block.number);
        _sstore(slot, w);
        if (next == _field(w, S_ROUNDS)) {
            emit ShardCompleted(sessionId, shard);
            Session storage s = _sessions[sessionId];
            uint16 done = s.shardsDone + 1;
            s.shardsDone = done;
            if (done == s.numShards) {
                s.state = State.Completed;
                emit SessionCompleted(sessionId);
            }
        }
    }

    // Hand-written packing of the ShardState and Assignment slots for the commit path: the legacy code
    // generator reads and writes a packed struct field by field (one SLOAD/SSTORE each), which cost
    // ~2,000 gas per commit. Offsets follow Solidity's storage layout of the structs above (first
    // member in the lowest bits), so the struct views (getShard, assignmentOf) read the same slots.
    // Each constant is (offset << 8) | bits.
    uint256 private constant S_ROUNDS = (64 << 8) | 32;
    uint256 private constant S_REPLICAS = (48 << 8) | 16;
    uint256 private constant S_ROUND = (96 << 8) | 32;
    uint256 private constant S_FIRST_COMMIT = (128 << 8) | 40;
    uint256 private constant S_COMMITS = (168 << 8) | 16;
    uint256 private constant S_LEADER = (184 << 8) | 16;
    uint256 private constant S_LEADER_COUNT = (200 << 8) | 16;
    uint256 private constant S_LAST_FINAL = (216 << 8) | 40;
    uint256 private constant A_SHARD = (8 << 8) | 16;
    uint256 private constant A_REPLICA = (24 << 8) | 16;

    function _field(uint256 w, uint256 f) private pure returns (uint256) {
        return (w >> (f >> 8)) & ((1 << (f & 0xff)) - 1);
    }

    /// @dev Values never exceed their field: rounds/commits/replicas are bounded by the checks above and
    ///      block numbers by 2^40.
    function _setField(uint256 w, uint256 f, uint256 v) private pure returns (uint256) {
        uint256 off = f >> 8;
        uint256 mask = ((1 << (f & 0xff)) - 1) << off;
        return (w & ~mask) | ((v << off) & mask);
    }

    function _shardSlot(uint256 sessionId, uint256 shard) private view returns (uint256 slot) {
        ShardState storage p = _shards[sessionId][shard];
        assembly ("memory-safe") {
            slot := p.slot
        }
    }

    function _assignWord(uint256 sessionId, address node) private view returns (uint256 w) {
        Assignment storage p = _assign[sessionId][node];
        assembly ("memory-safe") {
            w := sload(p.slot)
        }
    }

    function _sload(uint256 slot) private view returns (uint256 w) {
        assembly ("memory-safe") {
            w := sload(slot)
        }
    }

    function _sstore(uint256 slot, uint256 w) private {
        assembly ("memory-safe") {
            sstore(slot, w)
        }
    }

    function _sessionOrRevert(uint256 sessionId) private view returns (Session storage s) {
        s = _sessions[sessionId];
        if (s.state == State.None) revert UnknownSession(sessionId);
    }

    function _ceilTwoThirds(uint256 n) private pure returns (uint256) {
        return Math.ceilDiv(2 * n, 3);
    }

    /// @dev keccak256(abi.encode(a, b, c)) hashed in scratch memory (no allocation: commit-path gas).
    function _key3(uint256 a, uint256 b, uint256 c) private pure returns (bytes32 k) {
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, a)
            mstore(add(m, 0x20), b)
            mstore(add(m, 0x40), c)
            k := keccak256(m, 0x60)
        }
    }

    /// @dev keccak256(abi.encode(a, b, c, d)) hashed in scratch memory.
    function _key4(uint256 a, uint256 b, uint256 c, uint256 d) private pure returns (bytes32 k) {
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
