// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SessionsState} from "./sessions/SessionsState.sol";
import {SessionsUpdates} from "./sessions/SessionsUpdates.sol";
import {INodeRegistry} from "./interfaces/INodeRegistry.sol";
import {ITrainingSessions} from "./interfaces/ITrainingSessions.sol";

/// @title TrainingSessions
/// @notice One training session per executed proposal: who trains which shard (assignment), the rounds
///         of each shard, the aggregate hashes the replicas commit, and the faults on record.
/// @dev Protocol (docs/security.md, "Sessions against a Byzantine minority"): a round's final hash is one that
///      ceil(2n/3) of the shard's n replicas committed in the same epoch; every epoch takes commits until a
///      deadline counted from its own start; after it anyone may close the round, which retries it in a new
///      epoch or, after MAX_EPOCHS, aborts the session (members then release their stake locks). Only
///      provable faults are slashed: no commit by an epoch's deadline, or a commit that differs from the
///      final hash of the epoch that finalized the round.
///      Gas design: `commit` touches only slots that do not depend on the number of nodes: the caller's
///      assignment (which also holds its barred flag), the shard's state slot (already non-zero: it holds
///      the shard's round, epoch, commit count and leader), the caller's new commit slot, and the leader's
///      commit slot. The leader is the committed hash with the most votes so far this epoch (ties: earliest);
///      counts of non-leader hashes live in a side mapping (the rare, dissenting path pays for it).
///      The only loops are over the shards of one session (at most MAX_SHARDS).
///      Local updates are bound before they are revealed, and equivocation is proven, in SessionsUpdates.
contract TrainingSessions is ITrainingSessions, Ownable, SessionsState, SessionsUpdates {
    /// @param registry_ the NodeRegistry (this contract must become its slasher)
    /// @param joinWindowBlocks_ blocks during which nodes may join an opened session
    /// @param commitTimeoutBlocks_ blocks an epoch of a round takes commits, from the epoch's start
    /// @param slashAmount_ wei slashed per reported fault
    constructor(INodeRegistry registry_, uint256 joinWindowBlocks_, uint256 commitTimeoutBlocks_, uint256 slashAmount_)
        SessionsState(registry_, joinWindowBlocks_, commitTimeoutBlocks_, slashAmount_)
        Ownable(msg.sender)
    {}

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
        _assign[sessionId][msg.sender] = Assignment(true, uint16(shard), uint16(replica), false, false);
        _member[_key3(sessionId, shard, replica)] = msg.sender;
        emit Joined(sessionId, msg.sender, shard, replica);
        // the stake stays in the registry until the member releases the ended session
        registry.lockStake(msg.sender);
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
            ShardState storage sh = _shards[sessionId][i];
            sh.replicas = uint16(r);
            sh.roundStart = uint40(block.number); // round 0's deadline counts from here
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
        if (nReplicas == 0 || _field(w, S_ABORTED) != 0) revert WrongSessionState(sessionId, _sessions[sessionId].state);
        if (replica >= nReplicas) revert SpareReplica(sessionId, replica, nReplicas);
        // a node whose stake a slash left below the minimum no longer counts (set by reportFaulty or bar)
        if (_field(a, A_BARRED) != 0) revert NodeBarred(msg.sender);

        uint256 current = _field(w, S_ROUND);
        if (round != current) {
            if (round > current) {
                if (current >= _field(w, S_ROUNDS)) revert ShardDone(shard);
                revert WrongRound(shard, current, round);
            }
            _lateCommit(sessionId, round, shard, replica, aggregateHash, localUpdateHash);
            return;
        }
        if (current >= _field(w, S_ROUNDS)) revert ShardDone(shard);
        uint256 deadline = _field(w, S_ROUND_START) + commitTimeoutBlocks;
        if (block.number > deadline) revert CommitDeadlinePassed(deadline);

        uint256 epoch = _field(w, S_EPOCH);
        bytes32 ck = _key4(sessionId, _rk(round, epoch), shard, replica);
        if (_commit[ck] != bytes32(0)) revert AlreadyCommitted(round, shard, msg.sender);
        _commit[ck] = aggregateHash;
        emit Committed(sessionId, msg.sender, round, shard, aggregateHash, localUpdateHash, epoch);
        _tally(sessionId, _rk(round, epoch), shard, replica, aggregateHash, slot, w);
    }

    /// @dev A commit for a finalized round, accepted (recorded, not counted) until that round's deadline.
    function _lateCommit(
        uint256 sessionId,
        uint256 round,
        uint256 shard,
        uint256 replica,
        bytes32 aggregateHash,
        bytes32 localUpdateHash
    ) private {
        uint256 meta = _finalMeta[_key3(sessionId, round, shard)];
        uint256 epoch = meta & 0xff;
        if (block.number > meta >> 8) revert RoundClosed(round, shard);
        bytes32 ck = _key4(sessionId, _rk(round, epoch), shard, replica);
        if (_commit[ck] != bytes32(0)) revert AlreadyCommitted(round, shard, msg.sender);
        _commit[ck] = aggregateHash;
        emit Committed(sessionId, msg.sender, round, shard, aggregateHash, localUpdateHash, epoch);
    }

    /// @dev Counts a current-epoch commit and finalizes the round when the hash reaches 2/3 of replicas.
    function _tally(
        uint256 sessionId,
        uint256 rk,
        uint256 shard,
        uint256 replica,
        bytes32 aggregateHash,
        uint256 slot,
        uint256 w
    ) private {
        uint256 votes;
        uint256 commits = _field(w, S_COMMITS);
        if (commits == 0) {
            w = _setField(w, S_LEADER, replica);
            votes = 1;
            w = _setField(w, S_LEADER_COUNT, 1);
        } else {
            uint256 leaderCount = _field(w, S_LEADER_COUNT);
            bytes32 leaderHash = _commit[_key4(sessionId, rk, shard, _field(w, S_LEADER))];
            if (aggregateHash == leaderHash) {
                votes = leaderCount + 1;
                w = _setField(w, S_LEADER_COUNT, votes);
            } else {
                // dissenting hash: counted in the side mapping; it becomes the leader once it has more
                // votes, and the old leader's count moves to the side mapping so counts stay exact.
                bytes32 rkey = _key3(sessionId, rk, shard);
                votes = ++_otherCount[keccak256(abi.encode(rkey, aggregateHash))];
                if (votes > leaderCount) {
                    _otherCount[keccak256(abi.encode(rkey, leaderHash))] = leaderCount;
                    w = _setField(w, S_LEADER, replica);
                    w = _setField(w, S_LEADER_COUNT, votes);
                }
            }
        }
        w = _setField(w, S_COMMITS, commits + 1);

        // the quorum counts the shard's replicas, not the commits made: a minority cannot finalize alone
        if (votes >= _ceilTwoThirds(_field(w, S_REPLICAS))) {
            _finalize(sessionId, shard, slot, w, aggregateHash, votes);
        } else {
            _sstore(slot, w);
        }
    }

    /// @inheritdoc ITrainingSessions
    function closeRound(uint256 sessionId, uint256 round, uint256 shard) external {
        Session storage s = _sessionOrRevert(sessionId);
        if (s.state != State.Training) revert WrongSessionState(sessionId, s.state);
        if (shard >= s.numShards) revert InvalidShard(shard, s.numShards);
        uint256 slot = _shardSlot(sessionId, shard);
        uint256 w = _sload(slot);
        uint256 current = _field(w, S_ROUND);
        if (current >= _field(w, S_ROUNDS)) revert ShardDone(shard);
        if (round != current) revert WrongRound(shard, current, round);
        uint256 deadline = _field(w, S_ROUND_START) + commitTimeoutBlocks;
        if (block.number <= deadline) revert TimeoutNotReached(deadline);
        uint256 next = _field(w, S_EPOCH) + 1;
        if (next >= MAX_EPOCHS) {
            _abort(sessionId, s, round, shard);
            return;
        }
        w = _setField(w, S_EPOCH, next);
        w = _setField(w, S_ROUND_START, block.number);
        w = _setField(w, S_COMMITS, 0);
        w = _setField(w, S_LEADER, 0);
        w = _setField(w, S_LEADER_COUNT, 0);
        _sstore(slot, w);
        emit RoundRetried(sessionId, round, shard, next, block.number + commitTimeoutBlocks);
    }

    /// @dev The session fails: every shard stops taking commits (a loop over shards, <= MAX_SHARDS).
    function _abort(uint256 sessionId, Session storage s, uint256 round, uint256 shard) private {
        s.state = State.Failed;
        _abortedAt[sessionId] = block.number;
        uint256 n = s.numShards;
        for (uint256 i = 0; i < n; ++i) {
            _shards[sessionId][i].aborted = true;
        }
        emit SessionAborted(sessionId, round, shard);
    }

    /// @inheritdoc ITrainingSessions
    function reportFaulty(uint256 sessionId, uint256 round, uint256 epoch, uint256 shard, address node) external {
        Assignment memory a = _assign[sessionId][node];
        if (!a.joined || a.shard != shard) revert NotAssigned(sessionId, shard, node);
        ShardState memory sh = _shards[sessionId][shard];
        if (sh.replicas == 0) revert WrongSessionState(sessionId, _sessions[sessionId].state);
        if (a.replica >= sh.replicas) revert SpareReplica(sessionId, a.replica, sh.replicas);
        bytes32 ck = _key4(sessionId, _rk(round, epoch), shard, a.replica);
        if (_reported[ck]) revert AlreadyReported(round, shard, node);
        Fault fault = _faultOf(sessionId, round, epoch, shard, sh, _commit[ck]);
        if (fault == Fault.None) revert NotFaulty(round, shard, node);
        _reported[ck] = true;
        uint256 slashed = _slash(sessionId, node, false);
        emit FaultReported(sessionId, node, round, shard, fault, slashed, msg.sender, epoch);
    }

    /// @dev Which provable fault a commit `c` of (round, epoch) is: Missing once the epoch's deadline passed
    ///      with no commit; WrongHash when it differs from the final hash of the epoch that finalized the
    ///      round. A commit in an epoch that reached no quorum proves nothing (None). Reverts while the
    ///      epoch is still open or never existed.
    function _faultOf(uint256 sessionId, uint256 round, uint256 epoch, uint256 shard, ShardState memory sh, bytes32 c)
        private
        view
        returns (Fault)
    {
        if (round > sh.round || (round == sh.round && round >= sh.rounds)) revert InvalidEpoch(round, epoch);
        bytes32 fin;
        if (round == sh.round) {
            if (epoch > sh.epoch) revert InvalidEpoch(round, epoch);
            if (epoch == sh.epoch) {
                uint256 deadline = uint256(sh.roundStart) + commitTimeoutBlocks;
                if (block.number <= deadline) revert TimeoutNotReached(deadline);
                // another shard aborted the session before this epoch's deadline: commits were shut early
                if (sh.aborted && deadline >= _abortedAt[sessionId]) return Fault.None;
            }
        } else {
            uint256 meta = _finalMeta[_key3(sessionId, round, shard)];
            uint256 fe = meta & 0xff;
            if (epoch > fe) revert InvalidEpoch(round, epoch);
            if (epoch == fe) {
                if (block.number <= meta >> 8 && c == bytes32(0)) revert TimeoutNotReached(meta >> 8);
                // late commits of a finalized round were shut by an abort before the round's deadline
                if (c == bytes32(0) && sh.aborted && meta >> 8 >= _abortedAt[sessionId]) return Fault.None;
                fin = _final[_key3(sessionId, round, shard)];
            }
        }
        if (c == bytes32(0)) return Fault.Missing;
        if (fin != bytes32(0) && c != fin) return Fault.WrongHash;
        return Fault.None;
    }

    /// @inheritdoc ITrainingSessions
    function bar(uint256 sessionId, address node) external {
        Assignment storage a = _assign[sessionId][node];
        if (!a.joined) revert NotAssigned(sessionId, 0, node);
        if (a.barred) revert NotBarrable(node);
        (uint96 stake,, INodeRegistry.Status st,) = registry.eligibility(node);
        if (st == INodeRegistry.Status.Active && stake >= registry.minStake()) revert NotBarrable(node);
        _bar(sessionId, node);
    }

    /// @dev Slashes `node` once (a node that already withdrew everything is only put on record) and bars it
    ///      when the slash left it below the minimum stake, or always (`barAlways`: a proven equivocator,
    ///      whose signed word is worthless whatever stake it keeps).
    function _slash(uint256 sessionId, address node, bool barAlways) private returns (uint256 slashed) {
        bool below = false;
        if (slashAmount > 0) {
            (uint96 stake,, INodeRegistry.Status st,) = registry.eligibility(node);
            if (stake > 0 && (st == INodeRegistry.Status.Active || st == INodeRegistry.Status.Exiting)) {
                slashed = registry.slash(node, slashAmount);
                (,, st,) = registry.eligibility(node);
                below = st != INodeRegistry.Status.Active;
            }
        }
        if ((below || barAlways) && !_assign[sessionId][node].barred) _bar(sessionId, node);
    }

    /// @dev See SessionsUpdates: a proven equivocator is slashed and barred.
    function _punish(uint256 sessionId, address node) internal override returns (uint256) {
        return _slash(sessionId, node, true);
    }

    /// @dev Kept in the member's assignment slot, which commit reads anyway (no extra slot on its path).
    function _bar(uint256 sessionId, address node) private {
        _assign[sessionId][node].barred = true;
        emit Barred(sessionId, node);
    }

    /// @inheritdoc ITrainingSessions
    function release(uint256 sessionId) external {
        Session storage s = _sessionOrRevert(sessionId);
        Assignment storage a = _assign[sessionId][msg.sender];
        if (!a.joined) revert NotAssigned(sessionId, 0, msg.sender);
        if (a.released) revert AlreadyReleased(sessionId, msg.sender);
        State st = s.state;
        bool spare = st == State.Training && a.replica >= s.replicas;
        if (st != State.Completed && st != State.Failed && !spare) revert NotReleasable(sessionId, st);
        a.released = true;
        registry.unlockStake(msg.sender);
        emit Released(sessionId, msg.sender);
    }
    // ------------------------------------------------------------------ internals

    function _finalize(uint256 sessionId, uint256 shard, uint256 slot, uint256 w, bytes32 hash, uint256 votes)
        private
    {
        uint256 round = _field(w, S_ROUND);
        uint256 epoch = _field(w, S_EPOCH);
        bytes32 fk = _key3(sessionId, round, shard);
        _final[fk] = hash;
        // late commits of the round stay possible until its deadline (so a slow honest replica is not missing)
        _finalMeta[fk] = epoch | ((_field(w, S_ROUND_START) + commitTimeoutBlocks) << 8);
        emit RoundFinalized(sessionId, round, shard, hash, votes, _field(w, S_COMMITS), epoch);
        uint256 next = round + 1;
        w = _setField(w, S_ROUND, next);
        w = _setField(w, S_ROUND_START, block.number);
        w = _setField(w, S_EPOCH, 0);
        w = _setField(w, S_COMMITS, 0);
        w = _setField(w, S_LEADER, 0);
        w = _setField(w, S_LEADER_COUNT, 0);
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
}
