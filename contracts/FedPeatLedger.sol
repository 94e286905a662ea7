// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IFedPeatLedger} from "./interfaces/IFedPeatLedger.sol";
import {IFineTuneGovernance} from "./interfaces/IFineTuneGovernance.sol";
import {ITrainingSessions} from "./interfaces/ITrainingSessions.sol";

/// @title FedPeatLedger
/// @notice FedPEAT on chain: the emulators (compressed, frozen stand-ins of a base model) by content hash,
///         which emulators a session uses, and the controller's per-round plan (each device's emulator
///         retention, 0 = sits out) with the hash of the plan the coordinator keeps off chain.
/// @dev Who may act for a session is read from the other contracts, not copied: the proposer of the
///      proposal that opened the session (TrainingSessions.getSession -> FineTuneGovernance.proposalInfo),
///      or a controller address that proposer sets. A round plan stores only its hash per (session, round);
///      the per-device retentions travel in the event (no storage per device, no loop over storage).
contract FedPeatLedger is IFedPeatLedger {
    /// @inheritdoc IFedPeatLedger
    uint256 public constant BPS = 10_000;
    /// @inheritdoc IFedPeatLedger
    uint8 public constant MAX_RULE = uint8(type(EmulatorRule).max);
    /// @inheritdoc IFedPeatLedger
    uint256 public constant MAX_DEVICES = 1024;

    /// @inheritdoc IFedPeatLedger
    ITrainingSessions public immutable sessions;
    /// @inheritdoc IFedPeatLedger
    IFineTuneGovernance public immutable governance;

    mapping(bytes32 => Emulator) private _emulators;
    mapping(uint256 => mapping(bytes32 => bool)) private _attached;
    mapping(uint256 => uint256) private _attachedCount;
    mapping(uint256 => address) private _controller;
    mapping(uint256 => mapping(uint256 => bytes32)) private _plan;

    /// @param sessions_ the TrainingSessions contract whose sessions the plans belong to
    /// @param governance_ the FineTuneGovernance contract that opens those sessions (names the proposer)
    constructor(ITrainingSessions sessions_, IFineTuneGovernance governance_) {
        if (address(sessions_) == address(0) || address(governance_) == address(0)) revert ZeroAddress();
        if (address(governance_.sessions()) != address(sessions_)) {
            revert GovernanceMismatch(address(governance_.sessions()), address(sessions_));
        }
        sessions = sessions_;
        governance = governance_;
    }

    // ------------------------------------------------------------------ emulators

    /// @inheritdoc IFedPeatLedger
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

    /// @inheritdoc IFedPeatLedger
    function setController(uint256 sessionId, address controller) external {
        if (controller == address(0)) revert ZeroAddress();
        (, address proposer) = _openSession(sessionId);
        if (msg.sender != proposer) revert NotProposer(msg.sender, proposer);
        _controller[sessionId] = controller;
        emit ControllerSet(sessionId, controller, msg.sender);
    }

    /// @inheritdoc IFedPeatLedger
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

    /// @inheritdoc IFedPeatLedger
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

    /// @inheritdoc IFedPeatLedger
    function getEmulator(bytes32 emulatorHash) external view returns (Emulator memory) {
        return _emulators[emulatorHash];
    }

    /// @inheritdoc IFedPeatLedger
    function isAttached(uint256 sessionId, bytes32 emulatorHash) external view returns (bool) {
        return _attached[sessionId][emulatorHash];
    }

    /// @inheritdoc IFedPeatLedger
    function attachedCount(uint256 sessionId) external view returns (uint256) {
        return _attachedCount[sessionId];
    }

    /// @inheritdoc IFedPeatLedger
    function controllerOf(uint256 sessionId) external view returns (address) {
        address ctl = _controller[sessionId];
        if (ctl != address(0)) return ctl;
        uint256 proposalId = sessions.getSession(sessionId).proposalId;
        if (proposalId == 0) revert UnknownSession(sessionId);
        (address proposer,,,,,,) = governance.proposalInfo(proposalId);
        return proposer;
    }

    /// @inheritdoc IFedPeatLedger
    function planHashOf(uint256 sessionId, uint256 round) external view returns (bytes32) {
        return _plan[sessionId][round];
    }

    // ------------------------------------------------------------------ internals

    /// @dev The session's proposal and proposer; reverts unless the session exists and is still open
    ///      (Joining or Training).
    function _openSession(uint256 sessionId) private view returns (uint256 proposalId, address proposer) {
        ITrainingSessions.Session memory s = sessions.getSession(sessionId);
        if (s.state == ITrainingSessions.State.None) revert UnknownSession(sessionId);
        if (s.state != ITrainingSessions.State.Joining && s.state != ITrainingSessions.State.Training) {
            revert SessionClosed(sessionId, s.state);
        }
        proposalId = s.proposalId;
        (proposer,,,,,,) = governance.proposalInfo(proposalId);
    }
}
