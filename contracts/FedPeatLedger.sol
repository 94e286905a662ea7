// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TrainingSessions} from "./TrainingSessions.sol";
import {FineTuneGovernance} from "./FineTuneGovernance.sol";

/// @title FedPeatLedger
/// @notice FedPEAT on chain: the emulators (compressed, frozen stand-ins of a base model) by content hash,
///         which emulators a session uses, and the controller's per-round plan (each device's emulator
///         retention, 0 = sits out) with the hash of the plan the coordinator keeps off chain.
/// @dev Who may act for a session is read from the other contracts, not copied: the proposer of the
///      proposal that opened the session (TrainingSessions.getSession -> FineTuneGovernance.proposalInfo),
///      or a controller address that proposer sets. A round plan stores only its hash per (session, round);
///      the per-device retentions travel in the event (no storage per device, no loop over storage).
contract FedPeatLedger {
    /// @notice How an emulator was made (registered once per content hash).
    struct Emulator {
        bytes32 baseModelHash; // keccak-256 of the base model's weights (the proposal's baseModelHash)
        address registrant;
        uint40 registeredBlock; // 0 = not registered
        uint16 retentionBps; // share of the frozen middle layers kept, in basis points
        uint8 keptEachEnd; // k adapter-bearing layers kept at each end (Offsite-Tuning)
        uint8 importanceRule; // 0 uniform layer drop, 1 by layer importance
        uint32 distillSteps; // distillation steps of the kept middle (0 = none)
    }

    uint256 public constant BPS = 10_000;
    uint8 public constant MAX_RULE = 1;
    /// @notice Most devices one round plan may list (bounds the calldata check of the retentions).
    uint256 public constant MAX_DEVICES = 1024;

    TrainingSessions public immutable sessions;
    FineTuneGovernance public immutable governance;

    mapping(bytes32 => Emulator) private _emulators;
    mapping(uint256 => mapping(bytes32 => bool)) private _attached;
    mapping(uint256 => uint256) private _attachedCount;
    mapping(uint256 => address) private _controller;
    mapping(uint256 => mapping(uint256 => bytes32)) private _plan;

    error ZeroAddress();
    error GovernanceMismatch(address sessionsOfGovernance, address sessions);
    error InvalidHash();
    error InvalidEmulator(string field);
    error EmulatorAlreadyRegistered(bytes32 emulatorHash);
    error UnknownEmulator(bytes32 emulatorHash);
    error UnknownSession(uint256 sessionId);
    error SessionClosed(uint256 sessionId, TrainingSessions.State state);
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

    /// @param sessions_ the TrainingSessions contract whose sessions the plans belong to
    /// @param governance_ the FineTuneGovernance contract that opens those sessions (names the proposer)
    constructor(TrainingSessions sessions_, FineTuneGovernance governance_) {
        if (address(sessions_) == address(0) || address(governance_) == address(0)) revert ZeroAddress();
        if (address(governance_.sessions()) != address(sessions_)) {
            revert GovernanceMismatch(address(governance_.sessions()), address(sessions_));
        }
        sessions = sessions_;
        governance = governance_;
    }

    // ------------------------------------------------------------------ emulators

    /// @notice Register an emulator by its content hash (weights + manifest). Anyone, once per hash.
    /// @param emulatorHash keccak-256 content address of the emulator
    /// @param baseModelHash keccak-256 of the base model's weights it was made from
    /// @param retentionBps share of the frozen middle layers kept (0..10000)
    /// @param keptEachEnd adapter-bearing layers kept at each end (at least 1)
    /// @param importanceRule 0 uniform layer drop, 1 by layer importance
    /// @param distillSteps distillation steps of the kept middle (0 = none)
    function registerEmulator(
        bytes32 emulatorHash,
        bytes32 baseModelHash,
        uint16 retentionBps,
        uint8 keptEachEnd,
        uint8 importanceRule,
        uint32 distillSteps
    ) external {
        if (emulatorHash == bytes32(0)) revert InvalidHash();
        if (baseModelHash == bytes32(0)) revert InvalidEmulator("baseModelHash");
        if (retentionBps > BPS) revert InvalidEmulator("retentionBps");
        if (keptEachEnd == 0) revert InvalidEmulator("keptEachEnd");
        if (importanceRule > MAX_RULE) revert InvalidEmulator("importanceRule");
        if (_emulators[emulatorHash].registeredBlock != 0) revert EmulatorAlreadyRegistered(emulatorHash);
        _emulators[emulatorHash] = Emulator({
            baseModelHash: baseModelHash,
            registrant: msg.sender,
            registeredBlock: uint40(block.number),
            retentionBps: retentionBps,
            keptEachEnd: keptEachEnd,
            importanceRule: importanceRule,
            distillSteps: distillSteps
        });
        emit EmulatorRegistered(
            emulatorHash, baseModelHash, retentionBps, keptEachEnd, importanceRule, distillSteps, msg.sender
        );
    }

    // ------------------------------------------------------------------ sessions

    /// @notice Name the address that records the session's round plans and may attach emulators.
    ///         The proposer of the proposal that opened the session only; may be changed.
    /// @param sessionId the session
    /// @param controller the controller's address (the coordinator's account)
    function setController(uint256 sessionId, address controller) external {
        if (controller == address(0)) revert ZeroAddress();
        (, address proposer) = _openSession(sessionId);
        if (msg.sender != proposer) revert NotProposer(msg.sender, proposer);
        _controller[sessionId] = controller;
        emit ControllerSet(sessionId, controller, msg.sender);
    }

    /// @notice Attach a registered emulator to a session (several for FedPEAT case 1). The session's
    ///         proposer or controller; the emulator must be of the session's base model; once each.
    /// @param sessionId the session
    /// @param emulatorHash a registered emulator
    function attachEmulator(uint256 sessionId, bytes32 emulatorHash) external {
        (uint256 proposalId, address proposer) = _openSession(sessionId);
        if (msg.sender != proposer && msg.sender != _controller[sessionId]) {
            revert NotProposerOrController(msg.sender, sessionId);
        }
        Emulator storage e = _emulators[emulatorHash];
        if (e.registeredBlock == 0) revert UnknownEmulator(emulatorHash);
        bytes32 sessionBase = governance.getParams(proposalId).baseModelHash;
        if (e.baseModelHash != sessionBase) revert BaseModelMismatch(e.baseModelHash, sessionBase);
        if (_attached[sessionId][emulatorHash]) revert EmulatorAlreadyAttached(sessionId, emulatorHash);
        _attached[sessionId][emulatorHash] = true;
        _attachedCount[sessionId] += 1;
        emit EmulatorAttached(sessionId, emulatorHash, e.retentionBps, msg.sender);
    }

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
        external
    {
        (, address proposer) = _openSession(sessionId);
        address ctl = _controller[sessionId];
        if (ctl == address(0)) ctl = proposer;
        if (msg.sender != ctl) revert NotController(msg.sender, ctl);
        uint256 rounds = sessions.getSession(sessionId).rounds;
        if (round == 0 || round > rounds) revert InvalidRound(round, rounds);
        if (planHash == bytes32(0)) revert InvalidHash();
        uint256 n = retentionBps.length;
        if (n > MAX_DEVICES) revert TooManyDevices(n, MAX_DEVICES);
        for (uint256 i = 0; i < n; ++i) {
            if (retentionBps[i] > BPS) revert InvalidRetention(i, retentionBps[i]);
        }
        if (_plan[sessionId][round] != bytes32(0)) revert PlanAlreadyRecorded(sessionId, round);
        _plan[sessionId][round] = planHash;
        emit RoundPlanRecorded(sessionId, round, planHash, retentionBps);
    }

    // ------------------------------------------------------------------ views

    /// @notice An emulator's record (registeredBlock 0: not registered).
    /// @param emulatorHash the emulator
    function getEmulator(bytes32 emulatorHash) external view returns (Emulator memory) {
        return _emulators[emulatorHash];
    }

    /// @notice Whether an emulator is attached to a session.
    /// @param sessionId the session
    /// @param emulatorHash the emulator
    function isAttached(uint256 sessionId, bytes32 emulatorHash) external view returns (bool) {
        return _attached[sessionId][emulatorHash];
    }

    /// @notice Number of emulators attached to a session (their hashes are in EmulatorAttached events).
    /// @param sessionId the session
    function attachedCount(uint256 sessionId) external view returns (uint256) {
        return _attachedCount[sessionId];
    }

    /// @notice The address that records the session's plans: the controller set, else the proposer.
    /// @param sessionId the session
    function controllerOf(uint256 sessionId) external view returns (address) {
        address ctl = _controller[sessionId];
        if (ctl != address(0)) return ctl;
        uint256 proposalId = sessions.getSession(sessionId).proposalId;
        if (proposalId == 0) revert UnknownSession(sessionId);
        (address proposer,,,,,,) = governance.proposalInfo(proposalId);
        return proposer;
    }

    /// @notice The plan hash recorded for a round (zero if none).
    /// @param sessionId the session
    /// @param round the round (1-based)
    function planHashOf(uint256 sessionId, uint256 round) external view returns (bytes32) {
        return _plan[sessionId][round];
    }

    // ------------------------------------------------------------------ internals

    /// @dev The session's proposal and proposer; reverts unless the session exists and is still open
    ///      (Joining or Training).
    function _openSession(uint256 sessionId) private view returns (uint256 proposalId, address proposer) {
        TrainingSessions.Session memory s = sessions.getSession(sessionId);
        if (s.state == TrainingSessions.State.None) revert UnknownSession(sessionId);
        if (s.state != TrainingSessions.State.Joining && s.state != TrainingSessions.State.Training) {
            revert SessionClosed(sessionId, s.state);
        }
        proposalId = s.proposalId;
        (proposer,,,,,,) = governance.proposalInfo(proposalId);
    }
}
