// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {INodeRegistry} from "./INodeRegistry.sol";
import {ITrainingSessions} from "./ITrainingSessions.sol";

// Bounds on JobParams beyond their integer widths: the same numbers as node.vocab.JOB_MAX, which the spec
// validator applies (tests/test_vocab_mirror.py compares the two), so a proposal the validator accepts is
// one propose accepts and a proposal sent around the validator is refused by the contract, naming the field.

/// @dev Most rounds of one job: with at most MAX_EPOCHS x (commitTimeoutBlocks + 1) blocks a round, this
///      bounds how long a session can hold its members' stake.
uint256 constant JOB_MAX_ROUNDS = 100_000;
/// @dev Most local steps between two syncs: bounds the work one round asks of a node.
uint256 constant JOB_MAX_SYNC_INTERVAL = 1_000_000;
/// @dev Largest learning rate x 1e9 (a learning rate of at most 1).
uint256 constant JOB_MAX_LEARNING_RATE_E9 = 1_000_000_000;
/// @dev Largest seed: torch takes a signed 64-bit seed.
uint256 constant JOB_MAX_SEED = 9_223_372_036_854_775_807;

/// @title IFineTuneGovernance
/// @notice Proposals to fine-tune: the job parameters the network must agree on, the vote of the
///         registered nodes, and the execution that opens a training session. The types, errors, events
///         and functions of FineTuneGovernance; AdapterRegistry and FedPeatLedger read a session's job
///         parameters and proposer through this interface.
interface IFineTuneGovernance {
    /// @notice OpenZeppelin Governor's state numbering (the subset this contract uses).
    enum ProposalState {
        Pending,
        Active,
        Canceled,
        Defeated,
        Succeeded,
        Executed
    }

    /// @notice How a session's training set is split among the replicas of a shard: the names of
    ///         JobParams.distribution, in the order of node.vocab.Distribution (tests/test_vocab_mirror.py).
    enum Distribution {
        Iid,
        Dirichlet,
        Contiguous
    }

    /// @notice How the replicas of a shard combine their updates each round: the names of
    ///         JobParams.aggregation, in the order of node.vocab.Aggregation (tests/test_vocab_mirror.py).
    enum Aggregation {
        FedAvg,
        Median,
        TrimmedMean,
        GeometricMedian,
        NormClip
    }

    /// @notice How a round's aggregate becomes the round's final adapter: the names of JobParams.serverUpdate, in
    ///         the order of node.vocab.ServerUpdate (tests/test_vocab_mirror.py).
    enum ServerUpdate {
        None,
        FedAvgM
    }

    /// @notice The fields of a job spec that must be agreed on chain (the rest is in the TOML, hashed).
    ///         This struct is the one written field order: the Python client reads it from the ABI.
    /// @dev distribution, aggregation and serverUpdate stay uint8 in the ABI; propose accepts only codes of their enums.
    struct JobParams {
        string baseModel;
        bytes32 baseModelHash;
        string dataset;
        bytes32 datasetHash;
        string task;
        string method;
        bytes32 methodConfigHash;
        uint16[] layerBounds; // numShards + 1 increasing boundaries starting at 0, e.g. [0, 3, 6]
        uint32[] shardMemoryMB; // memory each shard needs, MB
        uint8 distribution; // a Distribution
        uint32 distributionParam; // e.g. dirichlet alpha x 1000
        uint32 syncInterval; // local steps between syncs
        uint32 rounds;
        uint8 aggregation; // an Aggregation
        uint8 serverUpdate; // a ServerUpdate
        uint16 minReplicas;
        uint64 learningRateE9; // learning rate x 1e9
        uint64 seed;
        bytes32 specHash; // keccak-256 of the canonical TOML spec
    }

    error InvalidConfig(string field);
    /// @notice propose was sent `sent` wei; it takes exactly the proposal deposit, `required`.
    error WrongDeposit(uint256 sent, uint256 required);
    /// @notice The deposit of a proposal is settled once its vote is over (not Pending or Active).
    error DepositNotSettleable(uint256 proposalId, ProposalState state);
    /// @notice The proposal holds no deposit: settled already, or proposed with a zero deposit.
    error NoDeposit(uint256 proposalId);
    error InvalidParam(string field);
    error SpecHashMismatch(bytes32 specHash, bytes32 textHash);
    error NoEligibleVoters();
    error UnknownProposal(uint256 proposalId);
    /// @notice A vote on a proposal that is still Pending: votes count from block `startsAt` on.
    error VotingNotStarted(uint256 proposalId, uint256 startsAt);
    error VotingClosed(uint256 proposalId, ProposalState state);
    error NotEligible(address voter, uint256 proposalId);
    error AlreadyVoted(address voter, uint256 proposalId);
    error NotSucceeded(uint256 proposalId, ProposalState state);
    error NotProposer(address caller, address proposer);
    error CannotCancel(uint256 proposalId, ProposalState state);

    event ProposalCreated(
        uint256 indexed proposalId, address indexed proposer, bytes32 specHash, uint256 voteStart, uint256 voteEnd,
        uint256 eligibleWeight
    );
    event ProposalSpec(uint256 indexed proposalId, string specToml);
    event VoteCast(address indexed voter, uint256 indexed proposalId, bool support, uint256 weight);
    event ProposalCanceled(uint256 indexed proposalId);
    event ProposalExecuted(uint256 indexed proposalId, uint256 indexed sessionId);
    /// @notice The proposal reached quorum: its deposit went back to its proposer.
    event DepositReturned(uint256 indexed proposalId, address indexed proposer, uint256 amount);
    /// @notice The proposal did not reach quorum (or was canceled): its deposit stays in this contract for good.
    event DepositForfeited(uint256 indexed proposalId, uint256 amount);

    /// @notice Propose a fine-tuning job. Anyone may propose, paying exactly `proposalDeposit` wei (returned by
    ///         `settleDeposit` if the proposal reaches quorum); the nodes registered before this block vote.
    /// @dev The full TOML spec travels in calldata and in the ProposalSpec event only (never stored), so
    ///      a daemon reads the whole spec from the chain and checks it against params.specHash.
    /// @param params the job's agreed fields (validated; a bad field reverts InvalidParam(field))
    /// @param specToml the canonical TOML job spec (1..32768 bytes); keccak256(bytes(specToml)) must equal
    ///        params.specHash
    /// @return proposalId the new proposal's id (1-based)
    function propose(JobParams calldata params, string calldata specToml) external payable returns (uint256 proposalId);

    /// @notice Settle a proposal's deposit once its vote is over. Anyone may call, once per proposal. Quorum reached
    ///         (at least one vote, and the cast weight at least the quorum weight, whatever the outcome) and not
    ///         canceled: the deposit goes back to the proposer (DepositReturned). Otherwise it is forfeited
    ///         (DepositForfeited): it stays in this contract, which has no function that moves it (a burn).
    /// @dev Pull rather than push: castVote and execute never send ether, so their gas and safety do not
    ///      depend on the proposer. Reverts DepositNotSettleable while Pending or Active, NoDeposit once settled.
    /// @param proposalId the proposal
    function settleDeposit(uint256 proposalId) external;

    /// @notice Vote for or against a proposal while it is Active. Only nodes that are active and were
    ///         registered in a block before the proposal's creation block; once each.
    /// @param proposalId the proposal
    /// @param support true for, false against
    function castVote(uint256 proposalId, bool support) external;

    /// @notice Open the training session of a Succeeded proposal, once. Anyone may call.
    /// @param proposalId the proposal
    /// @return sessionId the session opened in TrainingSessions
    function execute(uint256 proposalId) external returns (uint256 sessionId);

    /// @notice Cancel a Pending or Active proposal. Only its proposer.
    /// @param proposalId the proposal
    function cancel(uint256 proposalId) external;

    // ------------------------------------------------------------------ views

    /// @notice The proposal's state (reverts UnknownProposal for an id never proposed).
    /// @param proposalId the proposal
    function state(uint256 proposalId) external view returns (ProposalState);

    /// @notice The agreed job parameters of a proposal.
    /// @param proposalId the proposal
    function getParams(uint256 proposalId) external view returns (JobParams memory);

    /// @notice Tally of a proposal: for and against weight.
    /// @param proposalId the proposal
    function proposalVotes(uint256 proposalId) external view returns (uint256 forVotes, uint256 againstVotes);

    /// @notice Creation block, vote window (votes count in blocks voteStart+1 .. voteEnd), proposer,
    ///         eligible weight, quorum weight and the session opened (0 if not executed).
    /// @param proposalId the proposal
    function proposalInfo(uint256 proposalId)
        external
        view
        returns (
            address proposer,
            uint256 createdBlock,
            uint256 voteStart,
            uint256 voteEnd,
            uint256 eligibleWeight,
            uint256 quorumWeight,
            uint256 sessionId
        );

    /// @notice 0 not voted, 1 against, 2 for.
    /// @param proposalId the proposal
    /// @param voter the voter
    function receiptOf(uint256 proposalId, address voter) external view returns (uint8);

    /// @notice Whether `voter` has voted on the proposal.
    /// @param proposalId the proposal
    /// @param voter the voter
    function hasVoted(uint256 proposalId, address voter) external view returns (bool);

    /// @notice Whether `voter` may vote on the proposal now (active, registered before creation, not voted, window open).
    /// @param proposalId the proposal
    /// @param voter the voter
    function canVote(uint256 proposalId, address voter) external view returns (bool);

    /// @notice The NodeRegistry whose nodes vote.
    function registry() external view returns (INodeRegistry);

    /// @notice The TrainingSessions contract execute() opens sessions in.
    function sessions() external view returns (ITrainingSessions);

    /// @notice Blocks after creation before voting opens.
    function votingDelayBlocks() external view returns (uint256);

    /// @notice Blocks voting stays open.
    function votingPeriodBlocks() external view returns (uint256);

    /// @notice Share of the eligible weight (bps) that must vote (for + against).
    function quorumBps() external view returns (uint256);

    /// @notice Share of the cast weight (bps) that must be for: for * 10000 >= thresholdBps * (for + against).
    function thresholdBps() external view returns (uint256);

    /// @notice True: a vote weighs the node's stake; false: one node one vote.
    function weightByStake() external view returns (bool);

    /// @notice Wei that propose takes (fixed at deployment; zero only on the dev chain, DEV_CHAIN_ID).
    function proposalDeposit() external view returns (uint256);

    /// @notice Wei the proposal still holds as its deposit (0 once settled).
    /// @param proposalId the proposal
    function depositOf(uint256 proposalId) external view returns (uint256);

    /// @notice Wei of the deposits forfeited so far (they stay in this contract).
    function forfeitedDeposits() external view returns (uint256);

    /// @notice The chain on which a zero proposal deposit is allowed (anvil and Hardhat): 31337.
    function DEV_CHAIN_ID() external view returns (uint256);

    /// @notice Number of proposals (ids are 1..proposalCount).
    function proposalCount() external view returns (uint256);

    /// @notice Most shards of one job (TrainingSessions' MAX_SHARDS).
    function MAX_SHARDS() external view returns (uint256);

    /// @notice Longest baseModel, dataset, task and method string accepted, in bytes.
    function MAX_STRING_BYTES() external view returns (uint256);

    /// @notice Highest minReplicas accepted (TrainingSessions' MAX_REPLICAS_PER_SHARD).
    function MAX_REPLICAS() external view returns (uint256);
}
