// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {INodeRegistry} from "./interfaces/INodeRegistry.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {
    IFineTuneGovernance,
    JOB_MAX_LEARNING_RATE_E9,
    JOB_MAX_ROUNDS,
    JOB_MAX_SEED,
    JOB_MAX_SYNC_INTERVAL
} from "./interfaces/IFineTuneGovernance.sol";
import {ITrainingSessions, SESSION_MAX_REPLICAS, SESSION_MAX_SHARDS} from "./interfaces/ITrainingSessions.sol";

/// @title FineTuneGovernance
/// @notice Proposals to fine-tune: the job parameters the network must agree on, the vote of the
///         registered nodes, and the execution that opens a training session.
/// @dev Modelled on OpenZeppelin Governor's states and numbering (IFineTuneGovernance.ProposalState)
///      but written by hand: Governor's voting power comes from
///      token checkpoints, while here the voters are the registry's nodes registered before the
///      proposal's creation block. castVote reads one registry slot (`eligibility`), writes the voter's
///      receipt and updates the tally that shares its slot with the (already non-zero) creation block.
///      A proposal costs a deposit, returned only if the proposal reaches quorum: spam that nobody votes on is
///      paid for, a proposal the network considers (for or against) costs nothing but gas.
contract FineTuneGovernance is IFineTuneGovernance {
    /// @dev The slot castVote reads and writes: non-zero from creation on, so a vote pays no zero->non-zero.
    struct ProposalCore {
        uint40 createdBlock;
        uint96 forVotes;
        uint96 againstVotes;
        bool canceled;
        bool executed;
    }

    struct ProposalMeta {
        address proposer;
        uint96 eligibleWeight; // weight of the nodes registered before the creation block
    }

    /// @inheritdoc IFineTuneGovernance
    uint256 public constant MAX_SHARDS = SESSION_MAX_SHARDS;
    /// @inheritdoc IFineTuneGovernance
    uint256 public constant MAX_STRING_BYTES = 256;
    /// @inheritdoc IFineTuneGovernance
    uint256 public constant MAX_REPLICAS = SESSION_MAX_REPLICAS;
    uint256 private constant MAX_SPEC_BYTES = 32_768; // spec text limit (calldata + event cost)
    uint256 private constant BPS = 10_000;
    uint8 private constant RECEIPT_AGAINST = 1;
    uint8 private constant RECEIPT_FOR = 2;

    /// @inheritdoc IFineTuneGovernance
    INodeRegistry public immutable registry;
    /// @inheritdoc IFineTuneGovernance
    ITrainingSessions public immutable sessions;
    /// @inheritdoc IFineTuneGovernance
    uint256 public immutable votingDelayBlocks;
    /// @inheritdoc IFineTuneGovernance
    uint256 public immutable votingPeriodBlocks;
    /// @inheritdoc IFineTuneGovernance
    uint256 public immutable quorumBps;
    /// @inheritdoc IFineTuneGovernance
    uint256 public immutable thresholdBps;
    /// @inheritdoc IFineTuneGovernance
    bool public immutable weightByStake;
    /// @inheritdoc IFineTuneGovernance
    uint256 public immutable proposalDeposit;
    /// @inheritdoc IFineTuneGovernance
    uint256 public constant DEV_CHAIN_ID = 31337;
    /// @inheritdoc IFineTuneGovernance
    uint256 public proposalCount;
    /// @inheritdoc IFineTuneGovernance
    uint256 public forfeitedDeposits;

    mapping(uint256 => ProposalCore) private _core;
    mapping(uint256 => ProposalMeta) private _meta;
    mapping(uint256 => JobParams) private _params;
    mapping(uint256 => uint256) private _sessionOf;
    mapping(uint256 => mapping(address => uint8)) private _receipt;
    mapping(uint256 => uint256) private _deposit; // wei held until settleDeposit

    /// @param registry_ the NodeRegistry whose nodes vote
    /// @param sessions_ the TrainingSessions contract execute() opens sessions in
    /// @param votingDelayBlocks_ blocks after creation before voting opens
    /// @param votingPeriodBlocks_ blocks voting stays open (> 0)
    /// @param quorumBps_ share of eligible weight that must vote, in bps (<= 10000)
    /// @param thresholdBps_ share of cast weight that must be for, in bps (1..10000)
    /// @param weightByStake_ weigh votes by stake (true) or one node one vote (false)
    /// @param proposalDeposit_ wei each proposal pays; zero only on the dev chain (free proposals let anyone
    ///        flood the voters)
    constructor(
        INodeRegistry registry_,
        ITrainingSessions sessions_,
        uint256 votingDelayBlocks_,
        uint256 votingPeriodBlocks_,
        uint256 quorumBps_,
        uint256 thresholdBps_,
        bool weightByStake_,
        uint256 proposalDeposit_
    ) {
        if (address(registry_) == address(0)) revert InvalidConfig("registry");
        if (address(sessions_) == address(0)) revert InvalidConfig("sessions");
        if (votingPeriodBlocks_ == 0) revert InvalidConfig("votingPeriodBlocks");
        if (quorumBps_ > BPS) revert InvalidConfig("quorumBps");
        if (thresholdBps_ == 0 || thresholdBps_ > BPS) revert InvalidConfig("thresholdBps");
        if (proposalDeposit_ == 0 && block.chainid != DEV_CHAIN_ID) revert InvalidConfig("proposalDeposit");
        registry = registry_;
        sessions = sessions_;
        votingDelayBlocks = votingDelayBlocks_;
        votingPeriodBlocks = votingPeriodBlocks_;
        quorumBps = quorumBps_;
        thresholdBps = thresholdBps_;
        weightByStake = weightByStake_;
        proposalDeposit = proposalDeposit_;
    }

    /// @inheritdoc IFineTuneGovernance
    function propose(JobParams calldata params, string calldata specToml)
        external
        payable
        returns (uint256 proposalId)
    {
        if (msg.value != proposalDeposit) revert WrongDeposit(msg.value, proposalDeposit);
        _validate(params);
        uint256 specLen = bytes(specToml).length;
        if (specLen == 0 || specLen > MAX_SPEC_BYTES) revert InvalidParam("specToml");
        bytes32 textHash = keccak256(bytes(specToml));
        if (textHash != params.specHash) revert SpecHashMismatch(params.specHash, textHash);
        (uint256 count, uint256 stake) = registry.totalsAtBlockStart();
        uint256 weight = weightByStake ? stake : count;
        if (weight == 0) revert NoEligibleVoters();

        proposalId = ++proposalCount;
        _core[proposalId] = ProposalCore({
            createdBlock: uint40(block.number),
            forVotes: 0,
            againstVotes: 0,
            canceled: false,
            executed: false
        });
        _meta[proposalId] = ProposalMeta(msg.sender, uint96(weight));
        _params[proposalId] = params;
        if (msg.value != 0) _deposit[proposalId] = msg.value;
        uint256 start = block.number + votingDelayBlocks;
        emit ProposalCreated(proposalId, msg.sender, params.specHash, start, start + votingPeriodBlocks, weight);
        emit ProposalSpec(proposalId, specToml);
    }

    /// @inheritdoc IFineTuneGovernance
    function castVote(uint256 proposalId, bool support) external {
        // the ProposalCore slot is read and written as one word (see _CREATED etc. below)
        ProposalCore storage ps = _core[proposalId];
        uint256 w;
        assembly ("memory-safe") {
            w := sload(ps.slot)
        }
        uint256 created = w & _MASK40;
        if (created == 0) revert UnknownProposal(proposalId);
        uint256 start = created + votingDelayBlocks;
        bool canceled = (w >> _CANCELED_OFF) & 0xff != 0;
        if (!canceled && block.number <= start) revert VotingNotStarted(proposalId, start + 1);
        if (canceled || block.number > start + votingPeriodBlocks) revert VotingClosed(proposalId, state(proposalId));
        (uint96 stake, uint40 registeredBlock, INodeRegistry.Status status,) = registry.eligibility(msg.sender);
        if (status != INodeRegistry.Status.Active || registeredBlock >= created) {
            revert NotEligible(msg.sender, proposalId);
        }
        if (_receipt[proposalId][msg.sender] != 0) revert AlreadyVoted(msg.sender, proposalId);
        _receipt[proposalId][msg.sender] = support ? RECEIPT_FOR : RECEIPT_AGAINST;
        uint256 weight = weightByStake ? stake : 1;
        uint256 off = support ? _FOR_OFF : _AGAINST_OFF;
        uint256 tally = ((w >> off) & _MASK96) + weight;
        if (tally > _MASK96) revert InvalidParam("weight"); // unreachable: total ETH supply < 2^96 wei
        w = (w & ~(_MASK96 << off)) | (tally << off);
        assembly ("memory-safe") {
            sstore(ps.slot, w)
        }
        emit VoteCast(msg.sender, proposalId, support, weight);
    }

    // Storage layout of ProposalCore (first member in the lowest bits), used by castVote's one-word
    // read-modify-write: the legacy code generator would otherwise SLOAD/SSTORE it field by field.
    uint256 private constant _MASK40 = (1 << 40) - 1;
    uint256 private constant _MASK96 = (1 << 96) - 1;
    uint256 private constant _FOR_OFF = 40;
    uint256 private constant _AGAINST_OFF = 136;
    uint256 private constant _CANCELED_OFF = 232;

    /// @inheritdoc IFineTuneGovernance
    function execute(uint256 proposalId) external returns (uint256 sessionId) {
        ProposalCore storage p = _core[proposalId];
        ProposalState st = state(proposalId);
        if (st != ProposalState.Succeeded) revert NotSucceeded(proposalId, st);
        p.executed = true; // before the external call: execute cannot run twice
        JobParams storage jp = _params[proposalId];
        sessionId = sessions.openSession(proposalId, jp.shardMemoryMB, jp.rounds, jp.minReplicas);
        _sessionOf[proposalId] = sessionId;
        emit ProposalExecuted(proposalId, sessionId);
    }

    /// @inheritdoc IFineTuneGovernance
    function cancel(uint256 proposalId) external {
        ProposalState st = state(proposalId);
        address proposer = _meta[proposalId].proposer;
        if (msg.sender != proposer) revert NotProposer(msg.sender, proposer);
        if (st != ProposalState.Pending && st != ProposalState.Active) revert CannotCancel(proposalId, st);
        _core[proposalId].canceled = true;
        emit ProposalCanceled(proposalId);
    }

    /// @inheritdoc IFineTuneGovernance
    function settleDeposit(uint256 proposalId) external {
        ProposalCore memory p = _core[proposalId];
        if (p.createdBlock == 0) revert UnknownProposal(proposalId);
        ProposalState st = _state(proposalId, p);
        if (st == ProposalState.Pending || st == ProposalState.Active) revert DepositNotSettleable(proposalId, st);
        uint256 amount = _deposit[proposalId];
        if (amount == 0) revert NoDeposit(proposalId);
        _deposit[proposalId] = 0; // before the transfer: settled once, whatever the proposer's code does
        if (!p.canceled && _quorumReached(proposalId, p)) {
            address proposer = _meta[proposalId].proposer;
            emit DepositReturned(proposalId, proposer, amount);
            Address.sendValue(payable(proposer), amount);
        } else {
            forfeitedDeposits += amount;
            emit DepositForfeited(proposalId, amount);
        }
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IFineTuneGovernance
    function depositOf(uint256 proposalId) external view returns (uint256) {
        return _deposit[proposalId];
    }

    /// @inheritdoc IFineTuneGovernance
    function state(uint256 proposalId) public view returns (ProposalState) {
        ProposalCore memory p = _core[proposalId];
        if (p.createdBlock == 0) revert UnknownProposal(proposalId);
        return _state(proposalId, p);
    }

    /// @inheritdoc IFineTuneGovernance
    function getParams(uint256 proposalId) external view returns (JobParams memory) {
        if (_core[proposalId].createdBlock == 0) revert UnknownProposal(proposalId);
        return _params[proposalId];
    }

    /// @inheritdoc IFineTuneGovernance
    function proposalVotes(uint256 proposalId) external view returns (uint256 forVotes, uint256 againstVotes) {
        ProposalCore memory p = _core[proposalId];
        return (p.forVotes, p.againstVotes);
    }

    /// @inheritdoc IFineTuneGovernance
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
        )
    {
        ProposalCore memory p = _core[proposalId];
        if (p.createdBlock == 0) revert UnknownProposal(proposalId);
        ProposalMeta memory m = _meta[proposalId];
        proposer = m.proposer;
        createdBlock = p.createdBlock;
        voteStart = createdBlock + votingDelayBlocks;
        voteEnd = voteStart + votingPeriodBlocks;
        eligibleWeight = m.eligibleWeight;
        quorumWeight = _quorumWeight(eligibleWeight);
        sessionId = _sessionOf[proposalId];
    }

    /// @inheritdoc IFineTuneGovernance
    function receiptOf(uint256 proposalId, address voter) external view returns (uint8) {
        return _receipt[proposalId][voter];
    }

    /// @inheritdoc IFineTuneGovernance
    function hasVoted(uint256 proposalId, address voter) external view returns (bool) {
        return _receipt[proposalId][voter] != 0;
    }

    /// @inheritdoc IFineTuneGovernance
    function canVote(uint256 proposalId, address voter) external view returns (bool) {
        ProposalCore memory p = _core[proposalId];
        if (p.createdBlock == 0 || _state(proposalId, p) != ProposalState.Active) return false;
        if (_receipt[proposalId][voter] != 0) return false;
        (, uint40 registeredBlock, INodeRegistry.Status status,) = registry.eligibility(voter);
        return status == INodeRegistry.Status.Active && registeredBlock < p.createdBlock;
    }

    // ------------------------------------------------------------------ internals

    function _state(uint256 proposalId, ProposalCore memory p) private view returns (ProposalState) {
        if (p.executed) return ProposalState.Executed;
        if (p.canceled) return ProposalState.Canceled;
        uint256 start = p.createdBlock + votingDelayBlocks;
        if (block.number <= start) return ProposalState.Pending;
        if (block.number <= start + votingPeriodBlocks) return ProposalState.Active;
        uint256 cast = uint256(p.forVotes) + p.againstVotes;
        bool thresholdReached = p.forVotes > 0 && uint256(p.forVotes) * BPS >= thresholdBps * cast;
        return _quorumReached(proposalId, p) && thresholdReached ? ProposalState.Succeeded : ProposalState.Defeated;
    }

    /// @dev At least one vote, and the cast weight at least the quorum weight. The vote is needed for a quorum of
    ///      0 bps, where every proposal would otherwise "reach" quorum and get its deposit back unseen.
    function _quorumReached(uint256 proposalId, ProposalCore memory p) private view returns (bool) {
        uint256 cast = uint256(p.forVotes) + p.againstVotes;
        return cast > 0 && cast >= _quorumWeight(_meta[proposalId].eligibleWeight);
    }

    /// @dev ceil(eligible * quorumBps / 10000): a quorum of 1 bps of 1 node still needs that node.
    function _quorumWeight(uint256 eligible) private view returns (uint256) {
        return (eligible * quorumBps + BPS - 1) / BPS;
    }

    function _validate(JobParams calldata p) private pure {
        _checkString(p.baseModel, "baseModel");
        if (p.baseModelHash == bytes32(0)) revert InvalidParam("baseModelHash");
        _checkString(p.dataset, "dataset");
        if (p.datasetHash == bytes32(0)) revert InvalidParam("datasetHash");
        _checkString(p.task, "task");
        _checkString(p.method, "method");
        if (p.methodConfigHash == bytes32(0)) revert InvalidParam("methodConfigHash");
        uint256 nb = p.layerBounds.length;
        if (nb < 2 || nb > MAX_SHARDS + 1 || p.layerBounds[0] != 0) revert InvalidParam("layerBounds");
        for (uint256 i = 1; i < nb; ++i) {
            if (p.layerBounds[i] <= p.layerBounds[i - 1]) revert InvalidParam("layerBounds");
        }
        if (p.shardMemoryMB.length != nb - 1) revert InvalidParam("shardMemoryMB");
        for (uint256 i = 0; i < nb - 1; ++i) {
            if (p.shardMemoryMB[i] == 0) revert InvalidParam("shardMemoryMB");
        }
        if (p.distribution > uint8(type(Distribution).max)) revert InvalidParam("distribution");
        if (p.distribution == uint8(Distribution.Dirichlet) && p.distributionParam == 0) {
            revert InvalidParam("distributionParam");
        }
        if (p.syncInterval == 0 || p.syncInterval > JOB_MAX_SYNC_INTERVAL) revert InvalidParam("syncInterval");
        if (p.rounds == 0 || p.rounds > JOB_MAX_ROUNDS) revert InvalidParam("rounds");
        if (p.aggregation > uint8(type(Aggregation).max)) revert InvalidParam("aggregation");
        if (p.serverUpdate > uint8(type(ServerUpdate).max)) revert InvalidParam("serverUpdate");
        if (p.minReplicas == 0 || p.minReplicas > MAX_REPLICAS) revert InvalidParam("minReplicas");
        if (p.learningRateE9 == 0 || p.learningRateE9 > JOB_MAX_LEARNING_RATE_E9) revert InvalidParam("learningRateE9");
        if (p.seed > JOB_MAX_SEED) revert InvalidParam("seed");
        if (p.specHash == bytes32(0)) revert InvalidParam("specHash");
    }

    function _checkString(string calldata s, string memory field) private pure {
        uint256 len = bytes(s).length;
        if (len == 0 || len > MAX_STRING_BYTES) revert InvalidParam(field);
    }
}
