// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Vm
/// @notice The few Foundry cheatcodes the invariant suite uses, declared here because forge-std is not
///         installable offline (only an old unofficial copy is on npm). Forge answers calls to this address.
interface Vm {
    function prank(address sender) external;
    function roll(uint256 blockNumber) external;
    function warp(uint256 timestamp) external;
    function deal(address account, uint256 balance) external;
    function addr(uint256 privateKey) external pure returns (address);
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
}

/// @dev keccak256("hevm cheat code")'s last 20 bytes: the address forge serves cheatcodes at.
Vm constant VM = Vm(0x7109709ECfa91a80626fF3989D68f67F5b1DD12D);
