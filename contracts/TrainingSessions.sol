// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {INodeRegistry} from "./interfaces/INodeRegistry.sol";
import {ITrainingSessions, SESSION_MAX_REPLICAS, SESSION_MAX_SHARDS} from "./interfaces/ITrainingSessions.sol";

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
contract TrainingSessions is ITrainingSessions, Ownable {
    /// @inheritdoc ITrainingSessions
    uint256 public constant MAX_SHARDS = SESSION_MAX_SHARDS;
    /// @inheritdoc ITrainingSessions
    uint256 public constant MAX_REPLICAS_PER_SHARD = SESSION_MAX_REPLICAS;

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

    mapping(uint256 => Session) private _sessions;
    mapping(uint256 => uint256) private _sessionOfProposal;
    mapping(uint256 => mapping(uint256 => ShardState)) private _shards;
    mapping(uint256 => mapping(address => Assignment)) private _assign;
    mapping(bytes32 => address) private _member; // key(session, shard, replica)
    mapping(bytes32 => bytes32) private _commit; // key(session, round, shard, replica) -> aggregate hash
    mapping(bytes32 => uint256) private _otherCount; // keccak(key(session, round, shard), hash) -> count
    mapping(bytes32 => bytes32) private _final; // key(session, round, shard) -> final aggregate hash
    mapping(bytes32 => bool) private _reported; // key(session, round, shard, replica)

    /// @param registry_ the NodeRegistry (this contract must become its slasher)
    /// @param joinWindowBlocks_ blocks during which nodes may join an opened session
    /// @param commitTimeoutBlocks_ blocks after a round's first commit before finalizeAfterTimeout works
    /// @param slashAmount_ wei slashed per reported fault
    constructor(INodeRegistry registry_, uint256 joinWindowBlocks_, uint256 commitTimeoutBlocks_, uint256 slashAmount_)
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

    /// @inheritdoc ITrainingSessions
    function setGovernance(address governance_) external onlyOwner {
        if (governance != address(0)) revert GovernanceAlreadySet(governance);
        if (governance_ == address(0)) revert ZeroAddress();
        governance = governance_;
        emit GovernanceSet(governance_);
    }

    // ------------------------------------------------------------------ lifecycle

    /// @inheritdoc ITrainingSessions
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

    /// @inheritdoc ITrainingSessions
    function join(uint256 sessionId) external returns (uint256 shard, uint256 replica) {
        Session storage s = _sessionOrRevert(sessionId);
        if (s.state != State.Joining) revert WrongSessionState(sessionId, s.state);
        if (block.number > s.joinDeadline) revert JoinWindowClosed(sessionId, s.joinDeadline);
        if (_assign[sessionId][msg.sender].joined) revert AlreadyJoined(sessionId, msg.sender);
        (,, INodeRegistry.Status status, uint32 memoryMB) = registry.eligibility(msg.sender);
        if (status != INodeRegistry.Status.Active) revert NodeNotActive(msg.sender);

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

    /// @inheritdoc ITrainingSessions
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

    /// @inheritdoc ITrainingSessions
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

    /// @inheritdoc ITrainingSessions
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

    /// @inheritdoc ITrainingSessions
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
            (uint96 stake,, INodeRegistry.Status st,) = registry.eligibility(node);
            if (stake > 0 && (st == INodeRegistry.Status.Active || st == INodeRegistry.Status.Exiting)) {
                slashed = registry.slash(node, slashAmount);
            }
        }
        emit FaultReported(sessionId, node, round, shard, fault, slashed, msg.sender);
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
        Assignment memory a = _assign[sessionId][node];
        if (!a.joined || a.shard != shard) return bytes32(0);
        return _commit[_key4(sessionId, round, shard, a.replica)];
    }

    /// @inheritdoc ITrainingSessions
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

    /// @inheritdoc ITrainingSessions
    function faultReported(uint256 sessionId, uint256 round, uint256 shard, address node) external view returns (bool) {
        Assignment memory a = _assign[sessionId][node];
        if (!a.joined || a.shard != shard) return false;
        return _reported[_key4(sessionId, round, shard, a.replica)];
    }

    /// @inheritdoc ITrainingSessions
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
    // ~2,000 gas per commit. Offsets follow Solidity's storage layout of ITrainingSessions' ShardState
    // and Assignment (first member in the lowest bits), so the struct views (getShard, assignmentOf) read
    // the same slots. Each constant is (offset << 8) | bits.
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
