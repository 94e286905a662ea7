// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title INodeRegistry
/// @notice Who the nodes of the network are: stake, libp2p identity, announce address and capacity. The
///         types, errors, events and functions of NodeRegistry; the other contracts read a node through
///         this interface (`eligibility` on the vote and join paths, `slash` from TrainingSessions).
interface INodeRegistry {
    /// @notice Lifecycle of a node. Withdrawn nodes may register again.
    enum Status {
        None,
        Active,
        Exiting,
        Withdrawn
    }

    /// @notice What a node trains on: the names of the `deviceKind` codes, in the order of
    ///         node.vocab.DeviceKind (tests/test_vocab_mirror.py compares the two).
    /// @dev `deviceKind` stays a uint8 and the registry accepts every code up to MAX_DEVICE_KIND (15), not
    ///      only this list: it stores the code without interpreting it, so a node with a kind newer than the
    ///      deployed contract can still register. Readers map unknown codes to "unknown".
    enum DeviceKind {
        Cpu,
        Cuda,
        Mps
    }

    /// @notice Everything the registry stores about one node (for off-chain readers).
    struct NodeInfo {
        bytes peerId;
        string announceAddr;
        uint32 memoryMB;
        uint8 deviceKind; // a DeviceKind code (or a newer one, up to MAX_DEVICE_KIND)
        uint32 throughput;
        uint96 stake;
        uint40 registeredBlock;
        uint40 exitAvailableAt;
        Status status;
    }

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
    error InvalidParameter(string field);
    error StakeLocked(address node, uint256 openSessions);
    error NotLocked(address node);

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
    event StakeLockChanged(address indexed node, uint256 openSessions);

    // ------------------------------------------------------------------ membership

    /// @notice Register the sender as a node, staking msg.value (at least minStake).
    /// @param peerId libp2p peer id (binary multihash, 1..128 bytes)
    /// @param announceAddr multiaddr other peers dial (1..256 bytes)
    /// @param memoryMB memory the node can devote to one shard, in MB (> 0)
    /// @param deviceKind a DeviceKind code: 0 cpu, 1 cuda, 2 mps, ... (<= MAX_DEVICE_KIND)
    /// @param throughput measured throughput (tokens/s or similar; informative)
    function register(
        bytes calldata peerId,
        string calldata announceAddr,
        uint32 memoryMB,
        uint8 deviceKind,
        uint32 throughput
    ) external payable;

    /// @notice Update the sender's identity, address and capacity (stake and registration block stay).
    /// @param peerId libp2p peer id (binary multihash, 1..128 bytes)
    /// @param announceAddr multiaddr other peers dial (1..256 bytes)
    /// @param memoryMB memory the node can devote to one shard, in MB (> 0)
    /// @param deviceKind a DeviceKind code: 0 cpu, 1 cuda, 2 mps, ... (<= MAX_DEVICE_KIND)
    /// @param throughput measured throughput
    function update(
        bytes calldata peerId,
        string calldata announceAddr,
        uint32 memoryMB,
        uint8 deviceKind,
        uint32 throughput
    ) external;

    /// @notice Stop being an active node; the stake can be withdrawn after exitDelaySeconds.
    function requestExit() external;

    /// @notice Return the remaining stake to the sender once the exit delay has passed.
    function withdraw() external;

    // ------------------------------------------------------------------ slashing

    /// @notice Set the only address allowed to slash (the TrainingSessions contract). Owner, once.
    /// @param slasher_ the TrainingSessions contract
    function setSlasher(address slasher_) external;

    /// @notice Take up to `amount` wei of a node's stake. Only the slasher.
    /// @param node the node to slash
    /// @param amount the wei to take; capped at the node's stake
    /// @return taken the wei actually taken
    function slash(address node, uint256 amount) external returns (uint256 taken);

    /// @notice Lock a node's stake while it is a member of an open session (counted: one lock per
    ///         session). While locked the node can neither requestExit nor withdraw. Only the slasher
    ///         (TrainingSessions, on join).
    /// @param node an active node
    function lockStake(address node) external;

    /// @notice Release one session's lock (TrainingSessions, when the member releases an ended session).
    /// @param node a node holding at least one lock
    function unlockStake(address node) external;

    /// @notice Send the slashed wei to `to`. Owner only.
    /// @param to receiver of the slashed funds
    function sweepSlashed(address payable to) external;

    // ------------------------------------------------------------------ views

    /// @notice The packed vote/join slot of a node: stake, registration block, status, memory.
    /// @param node the node's address
    function eligibility(address node)
        external
        view
        returns (uint96 stake, uint40 registeredBlock, Status status, uint32 memoryMB);

    /// @notice Open sessions holding the node's stake (0: it may requestExit / withdraw).
    /// @param node the node's address
    function locksOf(address node) external view returns (uint256);

    /// @notice Everything stored about a node (status None if unknown).
    /// @param node the node's address
    function getNode(address node) external view returns (NodeInfo memory info);

    /// @notice True while the node is registered and has not requested exit.
    /// @param node the node's address
    function isActive(address node) external view returns (bool);

    /// @notice Block of the node's latest registration (0 if never registered).
    /// @param node the node's address
    function registeredAtBlock(address node) external view returns (uint256);

    /// @notice Number of active nodes now.
    function activeCount() external view returns (uint256);

    /// @notice Sum of the active nodes' stake now (wei).
    function totalActiveStake() external view returns (uint256);

    /// @notice Active count and stake as they were at the start of the current block, i.e. of the nodes
    ///         registered in an earlier block (what a proposal created now may count as eligible).
    function totalsAtBlockStart() external view returns (uint256 count, uint256 stake);

    /// @notice How many distinct addresses ever registered (for off-chain listing).
    function nodeCount() external view returns (uint256);

    /// @notice The index-th address that ever registered (0-based; any status).
    /// @param index position in registration order
    function nodeAt(uint256 index) external view returns (address);

    /// @notice Minimum stake (wei) a node sends with register().
    function minStake() external view returns (uint256);

    /// @notice Seconds between requestExit() and the earliest withdraw().
    function exitDelaySeconds() external view returns (uint256);

    /// @notice The only address allowed to slash (the TrainingSessions contract); set once.
    function slasher() external view returns (address);

    /// @notice Slashed wei held by the registry until the owner sweeps it.
    function slashedBalance() external view returns (uint256);

    /// @notice Longest exit delay a registry can be deployed with (so unlock times always fit uint40).
    function MAX_EXIT_DELAY_SECONDS() external view returns (uint256);

    /// @notice The dev chain (anvil, Hardhat) on which a zero minimum stake is allowed.
    function DEV_CHAIN_ID() external view returns (uint256);

    /// @notice Longest peer id accepted, in bytes.
    function MAX_PEER_ID_BYTES() external view returns (uint256);

    /// @notice Longest announce address accepted, in bytes.
    function MAX_ADDR_BYTES() external view returns (uint256);

    /// @notice Highest deviceKind code accepted (see DeviceKind: room for kinds newer than the contract).
    function MAX_DEVICE_KIND() external view returns (uint8);
}
