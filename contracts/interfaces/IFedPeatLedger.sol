// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IFineTuneGovernance} from "./IFineTuneGovernance.sol";
import {ITrainingSessions} from "./ITrainingSessions.sol";

/// @title IFedPeatLedger
/// @notice FedPEAT on chain: the emulators (compressed, frozen stand-ins of a base model) by content hash,
///         which emulators a session uses, and the controller's per-round plan (each device's emulator
///         retention, 0 = sits out) with the hash of the plan the coordinator keeps off chain. The types,
///         errors, events and functions of FedPeatLedger.
interface IFedPeatLedger {
    /// @notice How an emulator chooses which middle layers to keep: the names of `importanceRule`, in the
    ///         order of node.vocab.EmulatorRule (tests/test_vocab_mirror.py compares the two).
    enum EmulatorRule {
        Uniform,
        Importance
    }

    /// @notice How an emulator was made (registered once per content hash).
    struct Emulator {
        bytes32 baseModelHash; // keccak-256 of the base model's weights (the proposal's baseModelHash)
        address registrant;
        uint40 registeredBlock; // 0 = not registered
        uint16 retentionBps; // share of the frozen middle layers kept, in basis points
        uint8 keptEachEnd; // k adapter-bearing layers kept at each end (Offsite-Tuning)
        uint8 importanceRule; // an EmulatorRule
        uint32 distillSteps; // distillation steps of the kept middle (0 = none)
    }

    error ZeroAddress();
    error GovernanceMismatch(address sessionsOfGovernance, address sessions);
    error InvalidHash();
    error InvalidEmulator(string field);
    error EmulatorAlreadyRegistered(bytes32 emulatorHash);
    error UnknownEmulator(bytes32 emulatorHash);
    error UnknownSession(uint256 sessionId);
    error SessionClosed(uint256 sessionId, ITrainingSessions.State state);
    error NotProposer(address caller, address proposer);
    error NotProposerOrController(address caller, uint256 sessionId);
    error NotController(address caller, address controller);
    error BaseModelMismatch(bytes32 emulatorBase, bytes32 sessionBase);
    error EmulatorAlreadyAttached(uint256 sessionId, bytes32 emulatorHash);
    error InvalidRound(uint256 round, uint256 rounds);
    error PlanAlreadyRecorded(uint256 sessionId, uint256 round);
    error InvalidRetention(uint256 device, uint256 retentionBps);
    error TooManyDevices(uint256 devices, uint256 max);

    event EmulatorRegistered(
        bytes32 indexed emulatorHash, bytes32 indexed baseModelHash, uint16 retentionBps, uint8 keptEachEnd,
        uint8 importanceRule, uint32 distillSteps, address registrant
    );
    event ControllerSet(uint256 indexed sessionId, address indexed controller, address setBy);
    event EmulatorAttached(uint256 indexed sessionId, bytes32 indexed emulatorHash, uint16 retentionBps, address by);
    event RoundPlanRecorded(uint256 indexed sessionId, uint256 indexed round, bytes32 planHash, uint16[] retentionBps);

    // ------------------------------------------------------------------ emulators

    /// @notice Register an emulator by its content hash (weights + manifest). Anyone, once per hash.
    /// @param emulatorHash keccak-256 content address of the emulator
    /// @param baseModelHash keccak-256 of the base model's weights it was made from
    /// @param retentionBps share of the frozen middle layers kept (0..BPS)
    /// @param keptEachEnd adapter-bearing layers kept at each end (at least 1)
    /// @param importanceRule an EmulatorRule code: 0 uniform layer drop, 1 by layer importance
    /// @param distillSteps distillation steps of the kept middle (0 = none)
    function registerEmulator(
        bytes32 emulatorHash,
        bytes32 baseModelHash,
        uint16 retentionBps,
        uint8 keptEachEnd,
        uint8 importanceRule,
        uint32 distillSteps
    ) external;

    // ------------------------------------------------------------------ sessions

    /// @notice Name the address that records the session's round plans and may attach emulators.
    ///         The proposer of the proposal that opened the session only; may be changed.
    /// @param sessionId the session
    /// @param controller the controller's address (the coordinator's account)
    function setController(uint256 sessionId, address controller) external;

    /// @notice Attach a registered emulator to a session (several for FedPEAT case 1). The session's
    ///         proposer or controller; the emulator must be of the session's base model; once each.
    /// @param sessionId the session
    /// @param emulatorHash a registered emulator
    function attachEmulator(uint256 sessionId, bytes32 emulatorHash) external;

    /// @notice Record the controller's plan for one round: each device's emulator retention (0 = sits out)
    ///         and the hash of the full plan kept off chain. The session's controller (the proposer while
    ///         none is set), once per round; rounds are 1..session rounds.
    /// @dev The retentions are checked in calldata (at most MAX_DEVICES) and only emitted; storage holds
    ///      the plan hash alone, so the cost grows with the calldata, never with stored state.
    /// @param sessionId the session
    /// @param round the round (1-based)
    /// @param planHash keccak-256 of the round's plan (docs/fedpeat.md: runner.plan_hash)
    /// @param retentionBps per device, the emulator retention in basis points; 0 = does not take part
    function recordRoundPlan(uint256 sessionId, uint32 round, bytes32 planHash, uint16[] calldata retentionBps)
        external;

    // ------------------------------------------------------------------ views

    /// @notice An emulator's record (registeredBlock 0: not registered).
    /// @param emulatorHash the emulator
    function getEmulator(bytes32 emulatorHash) external view returns (Emulator memory);

    /// @notice Whether an emulator is attached to a session.
    /// @param sessionId the session
    /// @param emulatorHash the emulator
    function isAttached(uint256 sessionId, bytes32 emulatorHash) external view returns (bool);

    /// @notice Number of emulators attached to a session (their hashes are in EmulatorAttached events).
    /// @param sessionId the session
    function attachedCount(uint256 sessionId) external view returns (uint256);

    /// @notice The address that records the session's plans: the controller set, else the proposer.
    /// @param sessionId the session
    function controllerOf(uint256 sessionId) external view returns (address);

    /// @notice The plan hash recorded for a round (zero if none).
    /// @param sessionId the session
    /// @param round the round (1-based)
    function planHashOf(uint256 sessionId, uint256 round) external view returns (bytes32);

    /// @notice The TrainingSessions contract whose sessions the plans belong to.
    function sessions() external view returns (ITrainingSessions);

    /// @notice The FineTuneGovernance contract that opens those sessions (names the proposer).
    function governance() external view returns (IFineTuneGovernance);

    /// @notice Basis points of a whole: the unit of every retention (10,000 = keep all middle layers).
    function BPS() external view returns (uint256);

    /// @notice Highest importanceRule code accepted: type(EmulatorRule).max.
    function MAX_RULE() external view returns (uint8);

    /// @notice Most devices one round plan may list (bounds the calldata check of the retentions).
    function MAX_DEVICES() external view returns (uint256);
}
