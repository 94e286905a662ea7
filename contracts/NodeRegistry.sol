// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {INodeRegistry} from "./interfaces/INodeRegistry.sol";

/// @title NodeRegistry
/// @notice Who the nodes of the network are: stake, libp2p identity, announce address and capacity.
/// @dev Owns membership only. The vote path (FineTuneGovernance.castVote) and the join path
///      (TrainingSessions.join) read a node through `eligibility`, which is ONE storage slot, and the
///      running totals are kept "as of the start of the current block" so that a proposal can snapshot
///      the weight of the nodes registered before its creation block without any loop over nodes.
contract NodeRegistry is INodeRegistry, Ownable, ReentrancyGuard {
    /// @notice The packed slot read on the vote and join paths (stake, registration block, status, memory).
    struct Eligibility {
        uint96 stake; // wei; total ETH supply fits in 96 bits
        uint40 registeredBlock; // block of the (latest) registration
        uint40 exitAvailableAt; // unix time from which withdraw() works; 0 unless exiting
        Status status;
        uint32 memoryMB; // memory the node offers to hold a shard
        uint16 locks; // open sessions this node is a member of: its stake cannot leave while > 0
    }

    struct Profile {
        bytes peerId;
        string announceAddr;
        uint8 deviceKind;
        uint32 throughput;
    }

    /// @dev Running totals of the active nodes; `prev*` hold the totals as they were at the start of
    ///      `changedBlock`, so readers can get the start-of-block totals in O(1).
    struct Totals {
        uint64 count;
        uint128 stake;
        uint64 changedBlock;
    }

    struct PrevTotals {
        uint64 count;
        uint128 stake;
    }

    /// @inheritdoc INodeRegistry
    uint256 public constant MAX_PEER_ID_BYTES = 128;
    /// @inheritdoc INodeRegistry
    uint256 public constant MAX_ADDR_BYTES = 256;
    /// @inheritdoc INodeRegistry
    /// @dev Deliberately above type(DeviceKind).max: the registry stores the code, it does not interpret
    ///      it, so kinds added to node.vocab.DeviceKind later need no new contract (the vocab mirror test
    ///      checks that every known kind stays below this bound).
    uint8 public constant MAX_DEVICE_KIND = 15;
    /// @inheritdoc INodeRegistry
    uint256 public constant MAX_EXIT_DELAY_SECONDS = 365 days;
    /// @inheritdoc INodeRegistry
    uint256 public constant DEV_CHAIN_ID = 31337;

    /// @inheritdoc INodeRegistry
    uint256 public immutable minStake;
    /// @inheritdoc INodeRegistry
    uint256 public immutable exitDelaySeconds;
    /// @inheritdoc INodeRegistry
    address public slasher;
    /// @inheritdoc INodeRegistry
    uint256 public slashedBalance;

    mapping(address => Eligibility) private _elig;
    mapping(address => Profile) private _profile;
    address[] private _everRegistered;
    mapping(address => bool) private _known;
    Totals private _totals;
    PrevTotals private _prev;

    /// @param minStake_ minimum stake in wei
    /// @param exitDelaySeconds_ delay between requestExit and withdraw, in seconds
    /// @dev A zero minimum stake makes identities free (Sybil capture of a shard costs nothing): only the
    ///      dev chain may have it. The exit delay is bounded so that `block.timestamp + delay` always fits
    ///      the uint40 `exitAvailableAt` (a wrapped value would allow an immediate withdrawal).
    constructor(uint256 minStake_, uint256 exitDelaySeconds_) Ownable(msg.sender) {
        if (minStake_ == 0 && block.chainid != DEV_CHAIN_ID) revert InvalidParameter("minStake");
        if (exitDelaySeconds_ > MAX_EXIT_DELAY_SECONDS) revert InvalidParameter("exitDelaySeconds");
        minStake = minStake_;
        exitDelaySeconds = exitDelaySeconds_;
    }

    // ------------------------------------------------------------------ membership

    /// @inheritdoc INodeRegistry
    function register(
        bytes calldata peerId,
        string calldata announceAddr,
        uint32 memoryMB,
        uint8 deviceKind,
        uint32 throughput
    ) external payable {
        Eligibility storage e = _elig[msg.sender];
        if (e.status == Status.Active || e.status == Status.Exiting) revert AlreadyRegistered(msg.sender);
        if (msg.value < minStake) revert StakeTooLow(msg.value, minStake);
        _checkProfile(peerId, announceAddr, memoryMB, deviceKind);

        uint96 stake = SafeCast.toUint96(msg.value);
        _elig[msg.sender] = Eligibility({
            stake: stake,
            registeredBlock: uint40(block.number),
            exitAvailableAt: 0,
            status: Status.Active,
            memoryMB: memoryMB,
            locks: 0
        });
        _profile[msg.sender] = Profile(peerId, announceAddr, deviceKind, throughput);
        if (!_known[msg.sender]) {
            _known[msg.sender] = true;
            _everRegistered.push(msg.sender);
        }
        _changeTotals(true, stake);
        emit NodeRegistered(msg.sender, peerId, announceAddr, memoryMB, deviceKind, throughput, msg.value);
    }

    /// @inheritdoc INodeRegistry
    function update(
        bytes calldata peerId,
        string calldata announceAddr,
        uint32 memoryMB,
        uint8 deviceKind,
        uint32 throughput
    ) external {
        Eligibility storage e = _elig[msg.sender];
        if (e.status != Status.Active) revert NotActive(msg.sender);
        _checkProfile(peerId, announceAddr, memoryMB, deviceKind);
        e.memoryMB = memoryMB;
        _profile[msg.sender] = Profile(peerId, announceAddr, deviceKind, throughput);
        emit NodeUpdated(msg.sender, peerId, announceAddr, memoryMB, deviceKind, throughput);
    }

    /// @inheritdoc INodeRegistry
    /// @dev The stake stays slashable during the delay, which is what the delay is for.
    function requestExit() external {
        Eligibility storage e = _elig[msg.sender];
        if (e.status != Status.Active) revert NotActive(msg.sender);
        // a member of an open session stays active and slashable until it released every session
        if (e.locks != 0) revert StakeLocked(msg.sender, e.locks);
        uint256 availableAt = block.timestamp + exitDelaySeconds;
        e.status = Status.Exiting;
        e.exitAvailableAt = SafeCast.toUint40(availableAt);
        _changeTotals(false, e.stake);
        emit ExitRequested(msg.sender, availableAt);
    }

    /// @inheritdoc INodeRegistry
    function withdraw() external nonReentrant {
        Eligibility storage e = _elig[msg.sender];
        if (e.status != Status.Exiting) revert NotExiting(msg.sender);
        // a node deactivated by a slash is Exiting while still a member: its stake stays at risk
        if (e.locks != 0) revert StakeLocked(msg.sender, e.locks);
        if (block.timestamp < e.exitAvailableAt) revert ExitDelayNotPassed(e.exitAvailableAt, block.timestamp);
        uint256 amount = e.stake;
        e.stake = 0;
        e.status = Status.Withdrawn;
        e.exitAvailableAt = 0;
        emit Withdrawn(msg.sender, amount);
        if (amount > 0) Address.sendValue(payable(msg.sender), amount);
    }

    // ------------------------------------------------------------------ slashing

    /// @inheritdoc INodeRegistry
    function setSlasher(address slasher_) external onlyOwner {
        if (slasher != address(0)) revert SlasherAlreadySet(slasher);
        if (slasher_ == address(0)) revert ZeroAddress();
        slasher = slasher_;
        emit SlasherSet(slasher_);
    }

    /// @inheritdoc INodeRegistry
    /// @dev A node left with less than minStake stops being active (its remainder becomes withdrawable
    ///      after the exit delay), so a slashed node cannot keep voting or joining.
    function slash(address node, uint256 amount) external returns (uint256 taken) {
        if (msg.sender != slasher) revert NotSlasher(msg.sender);
        Eligibility storage e = _elig[node];
        uint256 stake = e.stake;
        if (stake == 0 || (e.status != Status.Active && e.status != Status.Exiting)) revert NothingToSlash(node);
        taken = amount < stake ? amount : stake;
        uint256 remaining = stake - taken;
        e.stake = uint96(remaining);
        slashedBalance += taken;
        bool deactivated = false;
        if (e.status == Status.Active) {
            if (remaining < minStake) {
                _changeTotals(false, uint96(stake));
                e.status = Status.Exiting;
                e.exitAvailableAt = SafeCast.toUint40(block.timestamp + exitDelaySeconds);
                deactivated = true;
                emit ExitRequested(node, block.timestamp + exitDelaySeconds);
            } else {
                _subStake(taken);
            }
        }
        emit Slashed(node, taken, remaining, deactivated);
    }

    /// @inheritdoc INodeRegistry
    function lockStake(address node) external {
        if (msg.sender != slasher) revert NotSlasher(msg.sender);
        Eligibility storage e = _elig[node];
        if (e.status != Status.Active) revert NotActive(node);
        uint16 n = e.locks + 1;
        e.locks = n;
        emit StakeLockChanged(node, n);
    }

    /// @inheritdoc INodeRegistry
    function unlockStake(address node) external {
        if (msg.sender != slasher) revert NotSlasher(msg.sender);
        Eligibility storage e = _elig[node];
        uint16 n = e.locks;
        if (n == 0) revert NotLocked(node);
        e.locks = n - 1;
        emit StakeLockChanged(node, n - 1);
    }

    /// @inheritdoc INodeRegistry
    function sweepSlashed(address payable to) external onlyOwner nonReentrant {
        if (to == address(0)) revert ZeroAddress();
        uint256 amount = slashedBalance;
        if (amount == 0) revert NothingToSweep();
        slashedBalance = 0;
        emit SlashedSwept(to, amount);
        Address.sendValue(to, amount);
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc INodeRegistry
    function eligibility(address node)
        external
        view
        returns (uint96 stake, uint40 registeredBlock, Status status, uint32 memoryMB)
    {
        Eligibility memory e = _elig[node];
        return (e.stake, e.registeredBlock, e.status, e.memoryMB);
    }

    /// @inheritdoc INodeRegistry
    function locksOf(address node) external view returns (uint256) {
        return _elig[node].locks;
    }

    /// @inheritdoc INodeRegistry
    function getNode(address node) external view returns (NodeInfo memory info) {
        Eligibility memory e = _elig[node];
        Profile storage p = _profile[node];
        info = NodeInfo({
            peerId: p.peerId,
            announceAddr: p.announceAddr,
            memoryMB: e.memoryMB,
            deviceKind: p.deviceKind,
            throughput: p.throughput,
            stake: e.stake,
            registeredBlock: e.registeredBlock,
            exitAvailableAt: e.exitAvailableAt,
            status: e.status
        });
    }

    /// @inheritdoc INodeRegistry
    function isActive(address node) external view returns (bool) {
        return _elig[node].status == Status.Active;
    }

    /// @inheritdoc INodeRegistry
    function registeredAtBlock(address node) external view returns (uint256) {
        return _elig[node].registeredBlock;
    }

    /// @inheritdoc INodeRegistry
    function activeCount() external view returns (uint256) {
        return _totals.count;
    }

    /// @inheritdoc INodeRegistry
    function totalActiveStake() external view returns (uint256) {
        return _totals.stake;
    }

    /// @inheritdoc INodeRegistry
    function totalsAtBlockStart() external view returns (uint256 count, uint256 stake) {
        Totals memory t = _totals;
        if (t.changedBlock == block.number) {
            PrevTotals memory p = _prev;
            return (p.count, p.stake);
        }
        return (t.count, t.stake);
    }

    /// @inheritdoc INodeRegistry
    function nodeCount() external view returns (uint256) {
        return _everRegistered.length;
    }

    /// @inheritdoc INodeRegistry
    function nodeAt(uint256 index) external view returns (address) {
        if (index >= _everRegistered.length) revert IndexOutOfRange(index, _everRegistered.length);
        return _everRegistered[index];
    }

    // ------------------------------------------------------------------ internals

    function _checkProfile(bytes calldata peerId, string calldata announceAddr, uint32 memoryMB, uint8 deviceKind)
        private
        pure
    {
        if (peerId.length == 0 || peerId.length > MAX_PEER_ID_BYTES) revert InvalidNodeInfo("peerId");
        uint256 al = bytes(announceAddr).length;
        if (al == 0 || al > MAX_ADDR_BYTES) revert InvalidNodeInfo("announceAddr");
        if (memoryMB == 0) revert InvalidNodeInfo("memoryMB");
        if (deviceKind > MAX_DEVICE_KIND) revert InvalidNodeInfo("deviceKind");
    }

    /// @dev Saves the start-of-block totals the first time they change in a block.
    function _snapshotIfNewBlock() private returns (Totals memory t) {
        t = _totals;
        if (t.changedBlock != block.number) {
            _prev = PrevTotals(t.count, t.stake);
            t.changedBlock = uint64(block.number);
        }
    }

    function _changeTotals(bool add, uint96 stake) private {
        Totals memory t = _snapshotIfNewBlock();
        if (add) {
            t.count += 1;
            t.stake += stake;
        } else {
            t.count -= 1;
            t.stake -= stake;
        }
        _totals = t;
    }

    function _subStake(uint256 amount) private {
        Totals memory t = _snapshotIfNewBlock();
        t.stake -= uint128(amount);
        _totals = t;
    }
}
