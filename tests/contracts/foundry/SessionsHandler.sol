// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {NodeRegistry} from "../../../contracts/NodeRegistry.sol";
import {TrainingSessions} from "../../../contracts/TrainingSessions.sol";
import {FineTuneGovernance} from "../../../contracts/FineTuneGovernance.sol";
import {AdapterRegistry} from "../../../contracts/AdapterRegistry.sol";
import {INodeRegistry} from "../../../contracts/interfaces/INodeRegistry.sol";
import {ITrainingSessions} from "../../../contracts/interfaces/ITrainingSessions.sol";
import {IFineTuneGovernance} from "../../../contracts/interfaces/IFineTuneGovernance.sol";
import {IAdapterRegistry} from "../../../contracts/interfaces/IAdapterRegistry.sol";
import {VM} from "./Vm.sol";

/// @title SessionsHandler
/// @notice The actions forge's invariant fuzzer drives against the deployed protocol, and the ghost state
///         the invariants compare the contracts with. Owns the actors (8 honest, 4 Byzantine) and how each
///         behaves; the invariants themselves live in SessionsInvariants.t.sol.
/// @dev Every protocol call is made for a chosen actor (vm.prank) inside try/catch, so a refused call is
///      an ordinary outcome and the ghosts only move on success. Byzantine actors do anything at any time
///      through the fuzzed entry points (commit any hash to any round, copy the honest hash, stay silent,
///      exit, withdraw, publish made-up records, report anyone, vote anything). Honest actors may also act
///      at fuzzed times, and every fuzzed call is followed by a new block in which they do their duties in
///      time, as their daemons do: on the last block of every epoch each honest member that has not committed
///      commits the right hash; after a deadline a keeper closes the round, starts sessions after their
///      join window, executes passed proposals; members release ended sessions and publish completed ones.
///      With `modelHolds` a Byzantine actor only joins a seat that keeps at most floor(L/3) Byzantine seats
///      in every prefix of L >= 3 replicas of its shard (the threat model for every possible replica count
///      that `start` may fix); without it Byzantine actors may take any seat (majorities included).
contract SessionsHandler {
    uint256 public constant N_HONEST = 8;
    uint256 public constant N_ACTORS = 12;
    uint256 public constant MAX_PROPOSALS = 3;
    uint32 public constant NODE_MEMORY_MB = 4000;
    /// @notice actors[i]'s private key is ACTOR_KEY_BASE + i (test keys of the fuzz suite only)
    uint256 public constant ACTOR_KEY_BASE = 0xB5150000;

    NodeRegistry public immutable registry;
    TrainingSessions public immutable sessions;
    FineTuneGovernance public immutable gov;
    AdapterRegistry public immutable adapters;
    bool public immutable modelHolds;
    uint256 public immutable timeout;

    address[N_ACTORS] public actors;

    // ghosts
    uint256 public deposited;
    uint256 public withdrawn;
    uint256 public proposalDepositsPaid;
    uint256 public proposalDepositsReturned;
    uint256 public proposalDepositsForfeited;
    uint256 public depositMisrouted; // a settlement that paid whom the rule does not say (must stay 0)
    mapping(address => uint256) public expectedStake; // what an actor's stake is if nobody slashed it
    uint256 public keeperRefusals; // closeRound/start refused after their deadline (liveness)
    uint256 public honestRefusals; // an honest commit refused while its epoch was open (safety/liveness)
    mapping(uint256 => mapping(uint256 => uint256)) public byzSeats; // session -> shard -> Byzantine seats
    mapping(uint256 => mapping(uint256 => uint256)) public seenRound; // session -> shard -> round + 1
    mapping(uint256 => mapping(uint256 => uint256)) public roundFirstStart; // block the seen round started
    mapping(uint256 => mapping(uint256 => uint256)) private _seenEpoch;
    uint256 public roundStartedLate; // a round first seen in an epoch other than 0 (observation gap)

    // what the run reached (printed after each run, so a run that reaches nothing is visible)
    uint256 public finalizedRounds;
    uint256 public retriedEpochs;
    uint256 public slashes;
    uint256 public verifiedPublished;
    uint256 public byzantineCommits;

    /// @notice What each Byzantine actor does on its own every block (besides the fuzzed calls): 0 stays
    ///         silent, 1 commits the colluded hash first, 2 copies the honest hash, 3 commits a fresh
    ///         random hash. Changed by the fuzzer at any time.
    mapping(address => uint256) public strategy;
    uint256 private _nonce;

    constructor(
        NodeRegistry registry_,
        TrainingSessions sessions_,
        FineTuneGovernance gov_,
        AdapterRegistry adapters_,
        bool modelHolds_
    ) {
        registry = registry_;
        sessions = sessions_;
        gov = gov_;
        adapters = adapters_;
        modelHolds = modelHolds_;
        timeout = sessions_.commitTimeoutBlocks();
        for (uint256 i = 0; i < N_ACTORS; ++i) {
            actors[i] = VM.addr(ACTOR_KEY_BASE + i); // keys, so that UpdatesHandler can sign updates
            VM.deal(actors[i], 1_000 ether);
        }
        VM.deal(address(this), 1_000 ether); // a pranked call's value comes from the handler
        // voters exist before the first proposal: six honest nodes and every Byzantine one
        for (uint256 i = 0; i < 6; ++i) _register(actors[i], 1 ether);
        for (uint256 i = N_HONEST; i < N_ACTORS; ++i) {
            _register(actors[i], 1 ether);
            strategy[actors[i]] = 1 + ((i - N_HONEST) % 3);
        }
    }

    // ------------------------------------------------------------------ who is who

    function isHonest(address a) public view returns (bool) {
        for (uint256 i = 0; i < N_HONEST; ++i) {
            if (actors[i] == a) return true;
        }
        return false;
    }

    function _actor(uint256 seed) private view returns (address) {
        return actors[seed % N_ACTORS];
    }

    function _session(uint256 seed) private view returns (uint256) {
        uint256 n = sessions.sessionCount();
        return n == 0 ? 0 : 1 + (seed % n);
    }

    /// @notice The hash every honest replica of (session, round, shard) computes: the aggregate is
    ///         deterministic, so honest replicas agree.
    function honestHash(uint256 sid, uint256 round, uint256 shard) public pure returns (bytes32) {
        return keccak256(abi.encode("honest", sid, round, shard));
    }

    /// @dev The hash colluding Byzantine replicas agree on.
    function _colludedHash(uint256 sid, uint256 round, uint256 shard) private pure returns (bytes32) {
        return keccak256(abi.encode("byzantine", sid, round, shard));
    }

    // ------------------------------------------------------------------ fuzzed entry points

    function register(uint256 actorSeed, uint256 extra) external {
        _register(_actor(actorSeed), 1 ether + (extra % 2 ether));
        _nextBlock();
    }

    function requestExit(uint256 actorSeed) external {
        VM.prank(_actor(actorSeed));
        try registry.requestExit() {} catch {}
        _nextBlock();
    }

    function withdraw(uint256 actorSeed) external {
        address who = _actor(actorSeed);
        (uint96 stake,,,) = registry.eligibility(who);
        VM.prank(who);
        try registry.withdraw() {
            withdrawn += stake;
            expectedStake[who] = 0;
        } catch {}
        _nextBlock();
    }

    function propose(uint256 actorSeed, uint256 shardSeed, uint256 roundSeed) external {
        uint256 count = gov.proposalCount();
        if (count >= MAX_PROPOSALS) return;
        uint256 nShards = 1 + (shardSeed % 2);
        IFineTuneGovernance.JobParams memory p;
        p.baseModel = "fuzz/base";
        p.baseModelHash = keccak256("fuzz/base");
        p.dataset = "fuzz/data";
        p.datasetHash = keccak256("fuzz/data");
        p.task = "classification";
        p.method = "lora";
        p.methodConfigHash = keccak256("lora");
        p.layerBounds = new uint16[](nShards + 1);
        p.shardMemoryMB = new uint32[](nShards);
        for (uint256 i = 0; i < nShards; ++i) {
            p.layerBounds[i + 1] = uint16(3 * (i + 1));
            p.shardMemoryMB[i] = 1000;
        }
        p.syncInterval = 10;
        p.rounds = uint32(1 + (roundSeed % 3));
        p.minReplicas = 3;
        p.learningRateE9 = 1_000_000;
        string memory spec = string(abi.encodePacked("spec-", bytes32(count)));
        p.specHash = keccak256(bytes(spec));
        uint256 fee = gov.proposalDeposit();
        VM.prank(_actor(actorSeed));
        try gov.propose{value: fee}(p, spec) {
            proposalDepositsPaid += fee;
        } catch {}
        _nextBlock();
    }

    /// @notice Its proposer cancels a proposal (refused once the vote is over).
    function cancel(uint256 pidSeed) external {
        uint256 n = gov.proposalCount();
        if (n == 0) return;
        uint256 pid = 1 + (pidSeed % n);
        (address proposer,,,,,,) = gov.proposalInfo(pid);
        VM.prank(proposer);
        try gov.cancel(pid) {} catch {}
        _nextBlock();
    }

    /// @notice Anyone settles any proposal's deposit. The rule, decided here from the tally and not from the
    ///         contract's own answer: back to the proposer iff not canceled and at least one vote and the cast
    ///         weight reached the quorum weight; otherwise forfeited.
    function settleDeposit(uint256 actorSeed, uint256 pidSeed) external {
        uint256 n = gov.proposalCount();
        if (n == 0) return;
        uint256 pid = 1 + (pidSeed % n);
        uint256 amount = gov.depositOf(pid);
        (address proposer,,,,, uint256 quorum,) = gov.proposalInfo(pid);
        (uint256 f, uint256 a) = gov.proposalVotes(pid);
        bool returned = gov.state(pid) != IFineTuneGovernance.ProposalState.Canceled && f + a > 0 && f + a >= quorum;
        uint256 before = proposer.balance;
        VM.prank(_actor(actorSeed));
        try gov.settleDeposit(pid) {
            if (returned) {
                proposalDepositsReturned += amount;
                if (proposer.balance != before + amount) ++depositMisrouted;
            } else {
                proposalDepositsForfeited += amount;
                if (proposer.balance != before) ++depositMisrouted;
            }
        } catch {}
        _nextBlock();
    }

    function vote(uint256 actorSeed, uint256 pidSeed, bool support) external {
        uint256 n = gov.proposalCount();
        if (n == 0) return;
        address who = _actor(actorSeed);
        VM.prank(who);
        try gov.castVote(1 + (pidSeed % n), isHonest(who) || support) {} catch {}
        _nextBlock();
    }

    function execute(uint256 actorSeed, uint256 pidSeed) external {
        uint256 n = gov.proposalCount();
        if (n == 0) return;
        VM.prank(_actor(actorSeed));
        try gov.execute(1 + (pidSeed % n)) {} catch {}
        _nextBlock();
    }

    function join(uint256 actorSeed, uint256 sidSeed) external {
        uint256 sid = _session(sidSeed);
        if (sid == 0) return;
        _join(_actor(actorSeed), sid);
        _nextBlock();
    }

    function setStrategy(uint256 actorSeed, uint256 strategySeed) external {
        strategy[actors[N_HONEST + (actorSeed % (N_ACTORS - N_HONEST))]] = strategySeed % 4;
        _nextBlock();
    }

    /// @notice Byzantine actors join early (honest ones join on the window's last block): in the suite
    ///         without the threat model they take the low replica indices, i.e. the counted seats.
    function joinByzantine(uint256 actorSeed, uint256 sidSeed) external {
        uint256 sid = _session(sidSeed);
        if (sid == 0) return;
        _join(actors[N_HONEST + (actorSeed % (N_ACTORS - N_HONEST))], sid);
        _nextBlock();
    }

    function start(uint256 actorSeed, uint256 sidSeed) external {
        uint256 sid = _session(sidSeed);
        if (sid == 0) return;
        VM.prank(_actor(actorSeed));
        try sessions.start(sid) {} catch {}
        _nextBlock();
    }

    /// @notice A commit by a member of the session (any, or a Byzantine one) to the current, a past or a
    ///         future round; honest members always send the honest hash, Byzantine ones the honest hash
    ///         (copying), the colluded hash or any hash.
    function commit(uint256 actorSeed, uint256 sidSeed, uint256 roundSeed, uint256 hashSeed) external {
        _commit(actorSeed, sidSeed, roundSeed, hashSeed, false);
    }

    function commitByzantine(uint256 actorSeed, uint256 sidSeed, uint256 roundSeed, uint256 hashSeed) external {
        _commit(actorSeed, sidSeed, roundSeed, hashSeed, true);
    }

    function _commit(uint256 actorSeed, uint256 sidSeed, uint256 roundSeed, uint256 hashSeed, bool byzOnly) private {
        uint256 sid = _session(sidSeed);
        if (sid == 0) return;
        address who = _member(sid, actorSeed, byzOnly);
        if (who == address(0)) return;
        ITrainingSessions.Assignment memory a = sessions.assignmentOf(sid, who);
        uint256 current = sessions.currentRound(sid, a.shard);
        uint256 pick = roundSeed % 4;
        uint256 round = pick == 0 || current == 0 ? current : (pick == 1 ? current - 1 : current + pick - 2);
        bytes32 h = honestHash(sid, round, a.shard);
        bool honest = isHonest(who);
        if (!honest) {
            uint256 kind = hashSeed % 3;
            if (kind == 1) h = _colludedHash(sid, round, a.shard);
            else if (kind == 2) h = keccak256(abi.encode(hashSeed));
        }
        VM.prank(who);
        try sessions.commit(sid, round, a.shard, h, keccak256(abi.encode(who, round))) {
            if (!honest) ++byzantineCommits;
        } catch {}
        _nextBlock();
    }

    /// @dev The first member of the session (a Byzantine one if asked) from a seed-chosen actor on.
    function _member(uint256 sid, uint256 seed, bool byzOnly) private view returns (address) {
        for (uint256 j = 0; j < N_ACTORS; ++j) {
            address who = actors[(seed % N_ACTORS + j) % N_ACTORS];
            if (byzOnly && isHonest(who)) continue;
            if (sessions.assignmentOf(sid, who).joined) return who;
        }
        return address(0);
    }

    function closeRound(uint256 actorSeed, uint256 sidSeed, uint256 shardSeed, uint256 roundSeed) external {
        uint256 sid = _session(sidSeed);
        if (sid == 0) return;
        uint256 shard = shardSeed % 2;
        uint256 round = sessions.currentRound(sid, shard) + (roundSeed % 3 == 2 ? 1 : 0);
        VM.prank(_actor(actorSeed));
        try sessions.closeRound(sid, round, shard) {} catch {}
        _nextBlock();
    }

    /// @notice Anyone reports anyone for any (round, epoch): the contract must refuse every report that is
    ///         not a provable fault; the invariants catch an honest actor slashed.
    function reportFaulty(uint256 actorSeed, uint256 sidSeed, uint256 targetSeed, uint256 roundSeed, uint256 epochSeed)
        external
    {
        uint256 sid = _session(sidSeed);
        if (sid == 0) return;
        address target = _member(sid, targetSeed, false);
        if (target == address(0)) target = _actor(targetSeed);
        ITrainingSessions.Assignment memory a = sessions.assignmentOf(sid, target);
        uint256 round = roundSeed % (sessions.currentRound(sid, a.shard) + 1);
        VM.prank(_actor(actorSeed));
        try sessions.reportFaulty(sid, round, epochSeed % 3, a.shard, target) {
            ++slashes;
        } catch {}
        _nextBlock();
    }

    function bar(uint256 actorSeed, uint256 sidSeed, uint256 targetSeed) external {
        uint256 sid = _session(sidSeed);
        if (sid == 0) return;
        VM.prank(_actor(actorSeed));
        try sessions.bar(sid, _actor(targetSeed)) {} catch {}
        _nextBlock();
    }

    function release(uint256 actorSeed, uint256 sidSeed) external {
        uint256 sid = _session(sidSeed);
        if (sid == 0) return;
        VM.prank(_actor(actorSeed));
        try sessions.release(sid) {} catch {}
        _nextBlock();
    }

    /// @notice Byzantine members publish first with a wrong shard hash, a made-up manifest, or as a
    ///         session-0 record of the same model and task; honest members publish the final hashes.
    function publish(uint256 actorSeed, uint256 sidSeed, uint256 kindSeed) external {
        uint256 sid = _session(sidSeed);
        if (sid == 0) return;
        address who = _actor(actorSeed);
        IAdapterRegistry.AdapterRecord memory r = _record(sid, keccak256(abi.encode("manifest", sid)));
        if (!isHonest(who)) {
            uint256 kind = kindSeed % 4;
            if (kind == 1) r.shardHashes[0] = _colludedHash(sid, sessions.getSession(sid).rounds - 1, 0);
            else if (kind == 2) r.sessionId = 0;
            else if (kind == 3) r.manifestHash = keccak256(abi.encode(kindSeed));
        }
        _publish(who, r);
        _nextBlock();
    }

    /// @notice Lets one to six blocks pass with no fuzzed action (the honest duties still run each block).
    function advance(uint256 blocksSeed) external {
        uint256 k = 1 + (blocksSeed % 6);
        for (uint256 i = 0; i < k; ++i) _nextBlock();
    }

    /// @dev Every fuzzed call is one transaction in its own block: then the chain moves on one block
    ///      (12 s) and the honest daemons and the keeper do what that block asks of them.
    function _nextBlock() private {
        _observe();
        VM.roll(block.number + 1);
        VM.warp(block.timestamp + 12);
        _tick();
        _observe();
    }

    // ------------------------------------------------------------------ honest duties

    function _tick() private {
        uint256 np = gov.proposalCount();
        for (uint256 pid = 1; pid <= np; ++pid) {
            IFineTuneGovernance.ProposalState st = gov.state(pid);
            if (st == IFineTuneGovernance.ProposalState.Active) {
                for (uint256 i = 0; i < N_HONEST; ++i) {
                    if (!gov.canVote(pid, actors[i])) continue;
                    VM.prank(actors[i]);
                    try gov.castVote(pid, true) {} catch {}
                }
            } else if (st == IFineTuneGovernance.ProposalState.Succeeded) {
                VM.prank(actors[0]);
                try gov.execute(pid) {} catch { ++keeperRefusals; }
            }
        }
        uint256 n = sessions.sessionCount();
        for (uint256 sid = 1; sid <= n; ++sid) {
            ITrainingSessions.Session memory s = sessions.getSession(sid);
            if (s.state == ITrainingSessions.State.Joining) {
                if (block.number == uint256(s.openedBlock) + 1) {
                    // Byzantine actors join first, so they take the low (counted) replica indices
                    for (uint256 i = N_HONEST; i < N_ACTORS; ++i) _join(actors[i], sid);
                } else if (block.number == s.joinDeadline) {
                    for (uint256 i = 0; i < N_HONEST; ++i) _join(actors[i], sid);
                } else if (block.number > s.joinDeadline) {
                    VM.prank(actors[0]);
                    try sessions.start(sid) {} catch { ++keeperRefusals; }
                }
                continue;
            }
            for (uint256 shard = 0; shard < s.numShards; ++shard) _shardDuties(sid, shard);
            s = sessions.getSession(sid);
            if (s.state == ITrainingSessions.State.Completed && adapters.adapterOfSession(sid) == 0) {
                _publishHonest(sid);
            }
            if (s.state == ITrainingSessions.State.Completed || s.state == ITrainingSessions.State.Failed) {
                for (uint256 i = 0; i < N_HONEST; ++i) {
                    ITrainingSessions.Assignment memory a = sessions.assignmentOf(sid, actors[i]);
                    if (!a.joined || a.released) continue;
                    VM.prank(actors[i]);
                    try sessions.release(sid) {} catch { ++keeperRefusals; }
                }
            }
        }
    }

    function _shardDuties(uint256 sid, uint256 shard) private {
        ITrainingSessions.ShardState memory sh = sessions.getShard(sid, shard);
        if (sh.replicas == 0) return; // the session failed to start
        // late commits: honest members that have not committed a finalized round do so by its deadline
        for (uint256 r = 0; r < sh.round; ++r) {
            (uint256 fe, uint256 d) = sessions.finalEpoch(sid, r, shard);
            if (block.number == d) _honestCommits(sid, r, fe, shard, sh.replicas);
        }
        if (sh.round >= sh.rounds || sh.aborted) return;
        uint256 deadline = uint256(sh.roundStart) + timeout;
        if (block.number <= deadline) _byzantineCommits(sid, sh.round, sh.epoch, shard, sh.replicas);
        if (block.number == deadline) {
            _honestCommits(sid, sh.round, sh.epoch, shard, sh.replicas);
        } else if (block.number > deadline) {
            VM.prank(actors[0]);
            try sessions.closeRound(sid, sh.round, shard) {} catch { ++keeperRefusals; }
        }
        _observe();
    }

    function _honestCommits(uint256 sid, uint256 round, uint256 epoch, uint256 shard, uint256 nReplicas) private {
        for (uint256 i = 0; i < N_HONEST; ++i) {
            address h = actors[i];
            ITrainingSessions.Assignment memory a = sessions.assignmentOf(sid, h);
            if (!a.joined || a.shard != shard || a.replica >= nReplicas || a.barred) continue;
            if (sessions.commitAt(sid, round, epoch, shard, h) != bytes32(0)) continue;
            if (sessions.getShard(sid, shard).aborted) return; // another shard failed the session: nothing to do
            VM.prank(h);
            try sessions.commit(sid, round, shard, honestHash(sid, round, shard), keccak256(abi.encode(h, round))) {}
            catch {
                ++honestRefusals;
            }
        }
    }

    function _byzantineCommits(uint256 sid, uint256 round, uint256 epoch, uint256 shard, uint256 nReplicas)
        private
    {
        for (uint256 i = N_HONEST; i < N_ACTORS; ++i) {
            address b = actors[i];
            uint256 st = strategy[b];
            if (st == 0) continue;
            ITrainingSessions.Assignment memory a = sessions.assignmentOf(sid, b);
            if (!a.joined || a.shard != shard || a.replica >= nReplicas || a.barred) continue;
            if (sessions.commitAt(sid, round, epoch, shard, b) != bytes32(0)) continue;
            bytes32 h = st == 1 ? _colludedHash(sid, round, shard) : honestHash(sid, round, shard);
            if (st == 3) h = keccak256(abi.encode(b, ++_nonce));
            VM.prank(b);
            try sessions.commit(sid, round, shard, h, keccak256(abi.encode(b, round))) {
                ++byzantineCommits;
            } catch {}
        }
    }

    function _publishHonest(uint256 sid) private {
        for (uint256 i = 0; i < N_HONEST; ++i) {
            if (!sessions.assignmentOf(sid, actors[i]).joined) continue;
            _publish(actors[i], _record(sid, keccak256(abi.encode("manifest", sid))));
            return;
        }
    }

    // ------------------------------------------------------------------ helpers

    function _register(address who, uint256 value) private {
        VM.prank(who);
        try registry.register{value: value}(abi.encodePacked(who), "/ip4/127.0.0.1/tcp/4001", NODE_MEMORY_MB, 0, 100) {
            deposited += value;
            expectedStake[who] = value;
        } catch {}
    }

    function _join(address who, uint256 sid) private {
        if (modelHolds && !isHonest(who) && !_byzantineSeatAllowed(sid)) return;
        VM.prank(who);
        try sessions.join(sid) returns (uint256 shard, uint256) {
            if (!isHonest(who)) ++byzSeats[sid][shard];
        } catch {}
    }

    /// @dev The seat join() would give next (fewest joined, lowest index: every shard fits every actor) keeps
    ///      at most floor(L/3) Byzantine seats among the first L >= 3 replicas of its shard.
    function _byzantineSeatAllowed(uint256 sid) private view returns (bool) {
        uint256 numShards = sessions.getSession(sid).numShards;
        uint256 best;
        uint256 bestCount = type(uint256).max;
        for (uint256 i = 0; i < numShards; ++i) {
            uint256 j = sessions.getShard(sid, i).joined;
            if (j < bestCount) {
                best = i;
                bestCount = j;
            }
        }
        uint256 prefix = bestCount + 1 < 3 ? 3 : bestCount + 1;
        return byzSeats[sid][best] + 1 <= prefix / 3;
    }

    function _record(uint256 sid, bytes32 manifest) private view returns (IAdapterRegistry.AdapterRecord memory r) {
        ITrainingSessions.Session memory s = sessions.getSession(sid);
        r.manifestHash = manifest;
        r.baseModel = "fuzz/base";
        r.baseModelHash = keccak256("fuzz/base");
        r.method = "lora";
        r.task = "classification";
        r.shardHashes = new bytes32[](s.numShards);
        for (uint256 i = 0; i < s.numShards; ++i) {
            r.shardHashes[i] = sessions.finalHash(sid, s.rounds - 1, i);
        }
        r.sessionId = sid;
        r.accuracyBps = 9000;
    }

    function _publish(address who, IAdapterRegistry.AdapterRecord memory r) private {
        VM.prank(who);
        try adapters.publish(r) {
            if (r.sessionId != 0) ++verifiedPublished;
        } catch {}
    }

    /// @dev Records when each round of each shard started (the liveness bound counts from there) and
    ///      counts finalized rounds, retried epochs and ended sessions.
    function _observe() private {
        uint256 n = sessions.sessionCount();
        for (uint256 sid = 1; sid <= n; ++sid) {
            ITrainingSessions.Session memory s = sessions.getSession(sid);
            for (uint256 shard = 0; shard < s.numShards; ++shard) {
                ITrainingSessions.ShardState memory sh = sessions.getShard(sid, shard);
                if (sh.replicas == 0) continue;
                if (seenRound[sid][shard] != uint256(sh.round) + 1) {
                    if (seenRound[sid][shard] != 0) finalizedRounds += sh.round + 1 - seenRound[sid][shard];
                    if (sh.epoch != 0) ++roundStartedLate;
                    seenRound[sid][shard] = uint256(sh.round) + 1;
                    roundFirstStart[sid][shard] = sh.roundStart;
                    _seenEpoch[sid][shard] = 0;
                }
                if (sh.epoch != _seenEpoch[sid][shard]) {
                    retriedEpochs += sh.epoch - _seenEpoch[sid][shard];
                    _seenEpoch[sid][shard] = sh.epoch;
                }
            }
        }
    }

    /// @notice Counted at the end of a run (sessions that ended, by how).
    function endedSessions() external view returns (uint256 completed, uint256 failed) {
        uint256 n = sessions.sessionCount();
        for (uint256 sid = 1; sid <= n; ++sid) {
            ITrainingSessions.State st = sessions.getSession(sid).state;
            if (st == ITrainingSessions.State.Completed) ++completed;
            if (st == ITrainingSessions.State.Failed) ++failed;
        }
    }
}
