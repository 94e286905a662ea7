// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {NodeRegistry} from "../../../contracts/NodeRegistry.sol";
import {TrainingSessions} from "../../../contracts/TrainingSessions.sol";
import {FineTuneGovernance} from "../../../contracts/FineTuneGovernance.sol";
import {AdapterRegistry} from "../../../contracts/AdapterRegistry.sol";
import {ITrainingSessions} from "../../../contracts/interfaces/ITrainingSessions.sol";
import {IAdapterRegistry} from "../../../contracts/interfaces/IAdapterRegistry.sol";
import {VM} from "./Vm.sol";
import {SessionsHandler} from "./SessionsHandler.sol";
import {UpdatesHandler} from "./UpdatesHandler.sol";

/// @title SessionsInvariantsBase
/// @notice Issue 11's chain guarantees as forge invariants, checked after every call the fuzzer makes to
///         SessionsHandler and UpdatesHandler (bound, signed updates and equivocation proofs): a final hash has a quorum of the shard's replicas; every round ends within its
///         bound; deposits = balances + slashed + withdrawn; a verified record's shard hashes are the final
///         hashes. The two concrete suites below differ in who the Byzantine actors may be.
/// @dev No forge-std: forge calls `targetContracts`, `invariant_*` and `afterInvariant` by name; a failed
///      invariant is a revert with the reason.
abstract contract SessionsInvariantsBase {
    uint256 internal constant JOIN_WINDOW = 8;
    uint256 internal constant TIMEOUT = 4;
    uint256 internal constant MIN_STAKE = 1 ether;
    uint256 internal constant SLASH = 0.5 ether;
    uint256 internal constant PROPOSAL_DEPOSIT = 0.1 ether;

    NodeRegistry internal registry;
    TrainingSessions internal sessions;
    FineTuneGovernance internal gov;
    AdapterRegistry internal adapters;
    SessionsHandler internal handler;
    UpdatesHandler internal updates;

    function _modelHolds() internal pure virtual returns (bool);

    function setUp() public {
        VM.roll(10);
        VM.warp(1_000_000);
        registry = new NodeRegistry(MIN_STAKE, 60);
        sessions = new TrainingSessions(registry, JOIN_WINDOW, TIMEOUT, SLASH);
        gov = new FineTuneGovernance(registry, sessions, 1, 4, 3000, 5000, false, PROPOSAL_DEPOSIT);
        adapters = new AdapterRegistry(sessions, gov);
        registry.setSlasher(address(sessions));
        sessions.setGovernance(address(gov));
        handler = new SessionsHandler(registry, sessions, gov, adapters, _modelHolds());
        updates = new UpdatesHandler(handler, sessions);
        VM.roll(11); // the first voters are registered before any proposal's block
        VM.warp(1_000_012);
    }

    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](2);
        targets[0] = address(handler);
        targets[1] = address(updates);
    }

    /// @notice Every guarantee, checked after every fuzzed call. One invariant function rather than one per
    ///         guarantee: forge runs a separate campaign per invariant function, and each check costs little
    ///         next to the calls, so one campaign of runs x depth calls checks all of them that often.
    function invariant_protocol() public view {
        _finalHashHasQuorumOfReplicas();
        _roundsEndWithinTheirBound();
        _stakeConserved();
        _proposalDepositsConserved();
        _publishedRecordsMatchFinalHashes();
        _modelChecks();
    }

    /// @dev The checks that need the threat model to hold (ByzantineMinorityInvariants).
    function _modelChecks() internal view virtual {}

    /// @notice A round's final hash was committed, in the epoch that finalized it, by ceil(2n/3) of the
    ///         shard's n replicas.
    function _finalHashHasQuorumOfReplicas() internal view {
        uint256 n = sessions.sessionCount();
        for (uint256 sid = 1; sid <= n; ++sid) {
            uint256 numShards = sessions.getSession(sid).numShards;
            for (uint256 shard = 0; shard < numShards; ++shard) {
                ITrainingSessions.ShardState memory sh = sessions.getShard(sid, shard);
                for (uint256 r = 0; r < sh.round; ++r) {
                    bytes32 fin = sessions.finalHash(sid, r, shard);
                    require(fin != bytes32(0), "finalized round without a final hash");
                    (uint256 fe,) = sessions.finalEpoch(sid, r, shard);
                    uint256 votes = 0;
                    for (uint256 i = 0; i < sh.replicas; ++i) {
                        address m = sessions.memberAt(sid, shard, i);
                        if (sessions.commitAt(sid, r, fe, shard, m) == fin) ++votes;
                    }
                    require(votes >= sessions.quorumOf(sh.replicas), "final hash without a quorum of replicas");
                    _checkFinal(sid, r, shard, fin);
                }
            }
        }
    }

    /// @dev Hook for the suite where the threat model holds: the final hash is then the honest one.
    function _checkFinal(uint256 sid, uint256 round, uint256 shard, bytes32 fin) internal view virtual {}

    /// @notice Every round ends (final, retried, or the session aborted) within MAX_EPOCHS x (timeout + 1)
    ///         blocks of its start; a session's join phase ends the block after its window; no keeper call
    ///         (closeRound or start after a deadline, execute, release) and no honest in-time commit is refused.
    function _roundsEndWithinTheirBound() internal view {
        require(handler.keeperRefusals() == 0, "a keeper call after a deadline was refused");
        require(handler.honestRefusals() == 0, "an honest commit in time was refused");
        require(handler.roundStartedLate() == 0, "a round was first seen after its epoch 0");
        uint256 bound = sessions.MAX_EPOCHS() * (TIMEOUT + 1);
        uint256 n = sessions.sessionCount();
        for (uint256 sid = 1; sid <= n; ++sid) {
            ITrainingSessions.Session memory s = sessions.getSession(sid);
            if (s.state == ITrainingSessions.State.Joining) {
                require(block.number <= uint256(s.joinDeadline) + 1, "join phase outlived its window");
                continue;
            }
            if (s.state != ITrainingSessions.State.Training) continue;
            for (uint256 shard = 0; shard < s.numShards; ++shard) {
                ITrainingSessions.ShardState memory sh = sessions.getShard(sid, shard);
                if (sh.round >= sh.rounds) continue;
                require(handler.seenRound(sid, shard) == uint256(sh.round) + 1, "round not observed");
                require(block.number <= handler.roundFirstStart(sid, shard) + bound, "round outlived its bound");
                require(block.number <= uint256(sh.roundStart) + TIMEOUT + 1, "epoch outlived its deadline");
            }
        }
    }

    /// @notice Deposits = stakes held + slashed + withdrawn, and the registry holds exactly stakes + slashed.
    function _stakeConserved() internal view {
        uint256 held = 0;
        for (uint256 i = 0; i < handler.N_ACTORS(); ++i) {
            (uint96 stake,,,) = registry.eligibility(handler.actors(i));
            held += stake;
        }
        uint256 slashed = registry.slashedBalance();
        require(handler.deposited() == held + slashed + handler.withdrawn(), "deposits != stakes + slashed + withdrawn");
        require(address(registry).balance == held + slashed, "registry balance != stakes + slashed");
    }

    /// @notice Proposal deposits paid = held by open proposals + returned + forfeited; governance holds exactly the
    ///         unsettled and the forfeited deposits; every settlement paid whom the rule says.
    function _proposalDepositsConserved() internal view {
        uint256 held = 0;
        uint256 n = gov.proposalCount();
        for (uint256 pid = 1; pid <= n; ++pid) {
            held += gov.depositOf(pid);
        }
        uint256 forfeited = handler.proposalDepositsForfeited();
        require(gov.forfeitedDeposits() == forfeited, "forfeited deposits differ from the ghost's");
        require(handler.proposalDepositsPaid() == held + handler.proposalDepositsReturned() + forfeited,
                "proposal deposits paid != held + returned + forfeited");
        require(address(gov).balance == held + forfeited, "governance balance != held + forfeited deposits");
        require(handler.depositMisrouted() == 0, "a deposit settlement paid the wrong party");
    }

    /// @notice Every record naming a session carries that session's final hashes of its last round, is the
    ///         session's one record, and only such records answer the verified lookups.
    function _publishedRecordsMatchFinalHashes() internal view {
        uint256 count = adapters.adapterCount();
        for (uint256 id = 1; id <= count; ++id) {
            IAdapterRegistry.AdapterRecord memory r = adapters.getAdapter(id).record;
            if (r.sessionId == 0) continue;
            ITrainingSessions.Session memory s = sessions.getSession(r.sessionId);
            require(s.state == ITrainingSessions.State.Completed, "record of an incomplete session");
            require(adapters.adapterOfSession(r.sessionId) == id, "two records for one session");
            require(r.shardHashes.length == s.numShards, "record shard count");
            for (uint256 i = 0; i < s.numShards; ++i) {
                bytes32 fin = sessions.finalHash(r.sessionId, s.rounds - 1, i);
                require(r.shardHashes[i] == fin, "published shard hash != final hash");
                _checkFinal(r.sessionId, s.rounds - 1, i, fin);
            }
        }
        uint256[] memory listed = adapters.adaptersFor(keccak256("fuzz/base"), "classification");
        for (uint256 j = 0; j < listed.length; ++j) {
            require(adapters.getAdapter(listed[j]).record.sessionId != 0, "unverified record in the lookups");
        }
    }

    /// @notice What the run reached, so that a campaign that never finalizes, retries, slashes or publishes
    ///         shows it (`forge test -vv`).
    function afterInvariant() public view {
        (uint256 completed, uint256 failed) = handler.endedSessions();
        _log("blocks", block.number);
        _log("proposals", gov.proposalCount());
        _log("deposits returned (wei)", handler.proposalDepositsReturned());
        _log("deposits forfeited (wei)", handler.proposalDepositsForfeited());
        _log("sessions", sessions.sessionCount());
        _log("sessions completed", completed);
        _log("sessions failed", failed);
        _log("rounds finalized", handler.finalizedRounds());
        _log("epochs retried", handler.retriedEpochs());
        _log("faults slashed", handler.slashes());
        _log("records verified", handler.verifiedPublished());
        _log("byzantine commits", handler.byzantineCommits());
        _log("updates bound", updates.bindings());
        _log("equivocations proven", updates.proofs());
        _log("byzantine seats, session 1 shard 0", handler.byzSeats(1, 0));
    }

    /// @dev forge's console.log(string,uint256), called at its address (forge-std is not available).
    function _log(string memory what, uint256 value) internal view {
        (bool ok,) = address(0x000000000000000000636F6e736F6c652e6c6f67).staticcall(
            abi.encodeWithSignature("log(string,uint256)", what, value)
        );
        ok;
    }
}

/// @title ByzantineMinorityInvariants
/// @notice The threat model holds (at most floor(n/3) Byzantine replicas per shard): besides the common
///         invariants, an honest actor is never slashed and every final hash is the honest one.
contract ByzantineMinorityInvariants is SessionsInvariantsBase {
    function _modelHolds() internal pure override returns (bool) {
        return true;
    }

    /// @notice Honest actors always commit the honest hash in time: their stake is what they deposited.
    function _modelChecks() internal view override {
        for (uint256 i = 0; i < handler.N_HONEST(); ++i) {
            address h = handler.actors(i);
            (uint96 stake,,,) = registry.eligibility(h);
            require(stake == handler.expectedStake(h), "an honest actor was slashed");
        }
    }

    function _checkFinal(uint256 sid, uint256 round, uint256 shard, bytes32 fin) internal view override {
        require(fin == handler.honestHash(sid, round, shard), "a final hash is not the honest one");
    }
}

/// @title ByzantineAnyInvariants
/// @notice Byzantine actors may take any seat, majorities included (the threat model broken): slashing
///         honest actors and final garbage are then possible, but quorum, liveness, conservation and the
///         records' consistency must still hold; this is also where rounds retry and sessions abort.
contract ByzantineAnyInvariants is SessionsInvariantsBase {
    function _modelHolds() internal pure override returns (bool) {
        return false;
    }
}
