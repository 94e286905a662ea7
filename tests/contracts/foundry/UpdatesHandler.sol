// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";
import {TrainingSessions} from "../../../contracts/TrainingSessions.sol";
import {ITrainingSessions} from "../../../contracts/interfaces/ITrainingSessions.sol";
import {VM} from "./Vm.sol";
import {SessionsHandler} from "./SessionsHandler.sol";

/// @title UpdatesHandler
/// @notice The fuzzed entry points of bound, signed local updates (issue 11 item 4), next to SessionsHandler
///         and sharing its actors and their keys: members bind their updates, Byzantine members bind anything
///         or copy another member's binding, and anyone submits equivocation proofs against anyone.
///         Honest actors sign only the update they bind (as the daemon does), Byzantine actors sign anything,
///         and any prover may forge a signature with its own key; the suites' "never an honest slash"
///         invariant then catches a proof that should have been refused.
/// @dev Every call is inside try/catch (suite: fail_on_revert); blocks advance through SessionsHandler only.
contract UpdatesHandler {
    SessionsHandler public immutable handler;
    TrainingSessions public immutable sessions;

    uint256 public bindings;
    uint256 public proofs;

    constructor(SessionsHandler handler_, TrainingSessions sessions_) {
        handler = handler_;
        sessions = sessions_;
    }

    /// @notice The update an honest member computes (and binds, and signs) for (session, round, shard).
    function honestUpdate(uint256 sid, uint256 round, uint256 shard, address who) public pure returns (bytes32) {
        return keccak256(abi.encode("update", sid, round, shard, who));
    }

    function bind(uint256 sidSeed, uint256 actorSeed, uint256 kindSeed) external {
        (uint256 sid, address who, uint256 shard,) = _member(sidSeed, actorSeed);
        if (who == address(0)) return;
        uint256 round = sessions.currentRound(sid, shard);
        bytes32 b = sessions.updateDigest(sid, round, shard, who, honestUpdate(sid, round, shard, who));
        if (!handler.isHonest(who)) {
            uint256 kind = kindSeed % 3;
            if (kind == 1) b = keccak256(abi.encode(kindSeed));
            else if (kind == 2) b = sessions.bindingOf(sid, round, shard, kindSeed % 4); // front-run a copy
        }
        VM.prank(who);
        try sessions.bind(sid, round, shard, b) {
            ++bindings;
        } catch {}
    }

    /// @notice `prover` submits a proof against `target` for a past or current round: one signed update
    ///         other than the bound one, or two signed updates.
    function prove(uint256 sidSeed, uint256 targetSeed, uint256 proverSeed, uint256 roundSeed, uint256 hashSeed)
        external
    {
        (uint256 sid, address target, uint256 shard, uint256 targetKey) = _member(sidSeed, targetSeed);
        if (target == address(0)) return;
        uint256 round = roundSeed % (sessions.currentRound(sid, shard) + 1);
        uint256 proverIdx = proverSeed % handler.N_ACTORS();
        // what the target signed: an honest actor only its own update; a Byzantine one anything
        bytes32 own = honestUpdate(sid, round, shard, target);
        bytes32 other = handler.isHonest(target) ? own : keccak256(abi.encode("other", hashSeed));
        // a forger signs in the target's name with its own key
        uint256 key = hashSeed % 4 == 0 ? handler.ACTOR_KEY_BASE() + proverIdx : targetKey;
        bytes memory sigOwn = _sign(key, sid, round, shard, target, own);
        bytes memory sigOther = _sign(key, sid, round, shard, target, other);
        VM.prank(handler.actors(proverIdx));
        if (hashSeed % 2 == 0) {
            try sessions.proveUnbound(sid, round, shard, target, other, sigOther) {
                ++proofs;
            } catch {}
        } else {
            try sessions.proveDoubleSigned(sid, round, shard, target, [own, other], [sigOwn, sigOther]) {
                ++proofs;
            } catch {}
        }
    }

    function _sign(uint256 key, uint256 sid, uint256 round, uint256 shard, address author, bytes32 update)
        private
        view
        returns (bytes memory)
    {
        bytes32 digest = sessions.updateDigest(sid, round, shard, author, update);
        (uint8 v, bytes32 r, bytes32 s) = VM.sign(key, MessageHashUtils.toEthSignedMessageHash(digest));
        return abi.encodePacked(r, s, v);
    }

    /// @dev A member of a session chosen by seeds: (session, member, its shard, its private key).
    function _member(uint256 sidSeed, uint256 seed)
        private
        view
        returns (uint256 sid, address who, uint256 shard, uint256 key)
    {
        uint256 n = sessions.sessionCount();
        if (n == 0) return (0, address(0), 0, 0);
        sid = 1 + (sidSeed % n);
        uint256 actorsN = handler.N_ACTORS();
        for (uint256 j = 0; j < actorsN; ++j) {
            uint256 i = (seed % actorsN + j) % actorsN;
            ITrainingSessions.Assignment memory a = sessions.assignmentOf(sid, handler.actors(i));
            if (a.joined) return (sid, handler.actors(i), a.shard, handler.ACTOR_KEY_BASE() + i);
        }
        return (sid, address(0), 0, 0);
    }
}
