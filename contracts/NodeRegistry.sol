// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

/// @title NodeRegistry
/// @notice Who the nodes of the network are: stake, libp2p identity, announce address and capacity.
/// @dev Owns membership only. The vote path (FineTuneGovernance.castVote) and the join path
///      (TrainingSessions.join) read a node through `eligibility`, which is ONE storage slot, and the
///      running totals are kept "as of the start of the current block" so that a proposal can snapshot
///      the weight of the nodes registered before its creation block without any loop over nodes.
contract NodeRegistry is Ownable, ReentrancyGuard {
    /// @notice Lifecycle of a node. Withdrawn nodes may register again.
    enum Status {
        None,
        Active,
        Exiting,
        Withdrawn
    }

    /// @notice The packed slot read on the vote and join paths (stake, registration block, status, memory).
    struct Eligibility {
        uint96 stake; // wei; total ETH supply fits in 96 bits
        uint40 registeredBlock; // block of the (latest) registration
        uint40 exitAvailableAt; // unix time from which withdraw() works; 0 unless exiting
        Status status;
        uint32 memoryMB; // memory the node offers to hold a shard
    }

    /// @notice Everything the registry stores about one node (for off-chain readers).
    struct NodeInfo {
        bytes peerId;
        string announceAddr;
        uint32 memoryMB;
        uint8 deviceKind;
        uint32 throughput;
        uint96 stake;
        uint40 registeredBlock;
        uint40 exitAvailableAt;
        Status status;
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

    uint256 public constant MAX_PEER_ID_BYTES = 128;
    uint256 public constant MAX_ADDR_BYTES = 256;
    uint8 public constant MAX_DEVICE_KIND = 15;

    /// @notice Minimum stake (wei) a node sends with register().
    uint256 public immutable minStake;
    /// @notice Seconds between requestExit() and the earliest withdraw().
    uint256 public immutable exitDelaySeconds;
    /// @notice The only address allowed to slash (the TrainingSessions contract); set once.
    address public slasher;
    /// @notice Slashed wei held by the registry until the owner sweeps it.
    uint256 public slashedBalance;

    mapping(address => Eligibility) private _elig;
    mapping(address => Profile) private _profile;
    address[] private _everRegistered;
    mapping(address => bool) private _known;
    Totals private _totals;
    PrevTotals private _prev;

    error StakeTooLow(uint256 sent, uint256 minimum);
    error AlreadyRegistered(address node);
    error InvalidNodeInfo(string field);
    error NotActive(address node);
    error NotExiting(address node);
    error ExitDelayNotPassed(uint256 availableAt, uint256 nowTimestamp);
    error NotSlasher(address caller);
    error SlasherAlreadySet(address slasher);
    error ZeroAddress();
    error NothingToSlash(address node);
    error NothingToSweep();
    error IndexOutOfRange(uint256 index, uint256 count);

    event NodeRegistered(
        address indexed node, bytes peerId, string announceAddr, uint32 memoryMB, uint8 deviceKind,
        uint32 throughput, uint256 stake
    );
    event NodeUpdated(address indexed node, bytes peerId, string announceAddr, uint32 memoryMB, uint8 deviceKind, uint32 throughput);
    event ExitRequested(address indexed node, uint256 availableAt);
    event Withdrawn(address indexed node, uint256 amount);
    event SlasherSet(address indexed slasher);
    event Slashed(address indexed node, uint256 amount, uint256 remainingStake, bool deactivated);
    event SlashedSwept(address indexed to, uint256 amount);

    /// @param minStake_ minimum stake in wei
    /// @param exitDelaySeconds_ delay between requestExit and withdraw, in seconds
    constructor(uint256 minStake_, uint256 exitDelaySeconds_) Ownable(msg.sender) {
        minStake = minStake_;
        exitDelaySeconds = exitDelaySeconds_;
    }

    // ------------------------------------------------------------------ membership

    /// @notice Register the sender as a node, staking msg.value (at least minStake).
    /// @param peerId libp2p peer id (binary multihash, 1..128 bytes)
    /// @param announceAddr multiaddr other peers dial (1..256 bytes)
    /// @param memoryMB memory the node can devote to one shard, in MB (> 0)
    /// @param deviceKind 0 cpu, 1 cuda, 2 mps, ... (<= 15)
    /// @param throughput measured throughput (tokens/s or similar; informative)
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
            memoryMB: memoryMB
        });
        _profile[msg.sender] = Profile(peerId, announceAddr, deviceKind, throughput);
        if (!_known[msg.sender]) {
            _known[msg.sender] = true;
            _everRegistered.push(msg.sender);
        }
        _changeTotals(true, stake);
        emit NodeRegistered(msg.sender, peerId, announceAddr, memoryMB, deviceKind, throughput, msg.value);
    }

    /// @notice Update the sender's identity, address and capacity (stake and registration block stay).
    /// @param peerId libp2p peer id (binary multihash, 1..128 bytes)
    /// @param announceAddr multiaddr other peers dial (1..256 bytes)
    /// @param memoryMB memory the node can devote to one shard, in MB (> 0)
    /// @param deviceKind 0 cpu, 1 cuda, 2 mps, ... (<= 15)
    /// @param throughput measured throughput
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

    /// @notice Stop being an active node; the stake can be withdrawn after exitDelaySeconds.
    /// @dev The stake stays slashable during the delay, which is what the delay is for.
    function requestExit() external {
        Eligibility storage e = _elig[msg.sender];
        if (e.status != Status.Active) revert NotActive(msg.sender);
        uint256 availableAt = block.timestamp + exitDelaySeconds;
        e.status = Status.Exiting;
        e.exitAvailableAt = uint40(availableAt);
        _changeTotals(false, e.stake);
        emit ExitRequested(msg.sender, availableAt);
    }

    /// @notice Return the remaining stake to the sender once the exit delay has passed.
    function withdraw() external nonReentrant {
        Eligibility storage e = _elig[msg.sender];
        if (e.status != Status.Exiting) revert NotExiting(msg.sender);
        if (block.timestamp < e.exitAvailableAt) revert ExitDelayNotPassed(e.exitAvailableAt, block.timestamp);
        uint256 amount = e.stake;
        e.stake = 0;
        e.status = Status.Withdrawn;
        e.exitAvailableAt = 0;
        emit Withdrawn(msg.sender, amount);
        if (amount > 0) Address.sendValue(payable(msg.sender), amount);
    }

    // ------------------------------------------------------------------ slashing

    /// @notice Set the only address allowed to slash (the TrainingSessions contract). Owner, once.
    /// @param slasher_ the TrainingSessions contract
    function setSlasher(address slasher_) external onlyOwner {
        if (slasher != address(0)) revert SlasherAlreadySet(slasher);
        if (slasher_ == address(0)) revert ZeroAddress();
        slasher = slasher_;
        emit SlasherSet(slasher_);
    }

    /// @notice Take up to `amount` wei of a node's stake. Only the slasher.
    /// @dev A node left with less than minStake stops being active (its remainder becomes withdrawable
    ///      after the exit delay), so a slashed node cannot keep voting or joining.
    /// @param node the node to slash
    /// @param amount the wei to take; capped at the node's stake
    /// @return taken the wei actually taken
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
                e.exitAvailableAt = uint40(block.timestamp + exitDelaySeconds);
                deactivated = true;
                emit ExitRequested(node, block.timestamp + exitDelaySeconds);
            } else {
                _subStake(taken);
            }
        }
        emit Slashed(node, taken, remaining, deactivated);
    }

    /// @notice Send the slashed wei to `to`. Owner only.
    /// @param to receiver of the slashed funds
    function sweepSlashed(address payable to) external onlyOwner nonReentrant {
        if (to == address(0)) revert ZeroAddress();
        uint256 amount = slashedBalance;
        if (amount == 0) revert NothingToSweep();
        slashedBalance = 0;
        emit SlashedSwept(to, amount);
        Address.sendValue(to, amount);
    }

    // ------------------------------------------------------------------ views

    /// @notice The packed vote/join slot of a node: stake, registration block, status, memory.
    /// @param node the node's address
    function eligibility(address node)
        external
        view
        returns (uint96 stake, uint40 registeredBlock, Status status, uint32 memoryMB)
    {
        Eligibility memory e = _elig[node];
        return (e.stake, e.registeredBlock, e.status, e.memoryMB);
    }

    /// @notice Everything stored about a node (status None if unknown).
    /// @param node the node's address
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

    /// @notice True while the node is registered and has not requested exit.
    /// @param node the node's address
    function isActive(address node) external view returns (bool) {
        return _elig[node].status == Status.Active;
    }

    /// @notice Block of the node's latest registration (0 if never registered).
    /// @param node the node's address
    function registeredAtBlock(address node) external view returns (uint256) {
        return _elig[node].registeredBlock;
    }

    /// @notice Number of active nodes now.
    function activeCount() external view returns (uint256) {
        return _totals.count;
    }

    /// @notice Sum of the active nodes' stake now (wei).
    function totalActiveStake() external view returns (uint256) {
        return _totals.stake;
    }

    /// @notice Active count and stake as they were at the start of the current block, i.e. of the nodes
    ///         registered in an earlier block (what a proposal created now may count as eligible).
    function totalsAtBlockStart() external view returns (uint256 count, uint256 stake) {
        Totals memory t = _totals;
        if (t.changedBlock == block.number) {
            PrevTotals memory p = _prev;
            return (p.count, p.stake);
        }
        return (t.count, t.stake);
    }

    /// @notice How many distinct addresses ever registered (for off-chain listing).
    function nodeCount() external view returns (uint256) {
        return _everRegistered.length;
    }

    /// @notice The index-th address that ever registered (0-based; any status).
    /// @param index position in registration order
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
