// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ERC20Votes} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Votes.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";
import {Governor} from "@openzeppelin/contracts/governance/Governor.sol";
import {GovernorCountingSimple} from "@openzeppelin/contracts/governance/extensions/GovernorCountingSimple.sol";
import {GovernorVotes} from "@openzeppelin/contracts/governance/extensions/GovernorVotes.sol";
import {IVotes} from "@openzeppelin/contracts/governance/utils/IVotes.sol";

/// @title BaselineVotesToken
/// @notice Bench only (`bsns bench gas`): the ERC20Votes token behind the OpenZeppelin Governor baseline.
contract BaselineVotesToken is ERC20, ERC20Permit, ERC20Votes {
    constructor() ERC20("Baseline votes", "BASE") ERC20Permit("Baseline votes") {}

    /// @notice Anyone mints: a throwaway token on a throwaway chain.
    /// @param to receiver
    /// @param amount amount
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function _update(address from, address to, uint256 value) internal override(ERC20, ERC20Votes) {
        super._update(from, to, value);
    }

    /// @inheritdoc Nonces
    function nonces(address owner) public view override(ERC20Permit, Nonces) returns (uint256) {
        return super.nonces(owner);
    }
}

/// @title BaselineGovernor
/// @notice Bench only: OpenZeppelin Governor + GovernorCountingSimple + GovernorVotes, the reference whose
///         castVote gas FineTuneGovernance.castVote is compared with.
contract BaselineGovernor is Governor, GovernorCountingSimple, GovernorVotes {
    constructor(IVotes token) Governor("Baseline") GovernorVotes(token) {}

    /// @notice Blocks between propose and the vote snapshot.
    function votingDelay() public pure override returns (uint256) {
        return 1;
    }

    /// @notice Blocks the vote stays open.
    function votingPeriod() public pure override returns (uint256) {
        return 50;
    }

    /// @notice A fixed quorum of 1 token unit (the bench only measures castVote).
    function quorum(uint256) public pure override returns (uint256) {
        return 1;
    }
}
