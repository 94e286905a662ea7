"""Custom-error decoding on eth-tester: names and arguments come back from raw revert data."""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_utils import keccak, to_checksum_address

from node.chain.errors import ContractRevert, ErrorDecoder, as_revert, translate
from node.errors import BsnsError

from tests.support.evm import deploy_probe


def test_decoder_names_error_and_arguments(probe_decoder):
    who = "0x" + "ab" * 20
    data = keccak(text="TooSmall(address,uint256,uint256)")[:4] + encode(["address", "uint256", "uint256"], [who, 0, 1])
    err = probe_decoder.decode(data, "Probe")
    assert isinstance(err, BsnsError)
    assert err.name == "TooSmall"
    checksummed = to_checksum_address(who)
    assert err.args == (checksummed, 0, 1)
    assert str(err) == f"Probe reverted: TooSmall({checksummed}, 0, 1)"
    assert "\n" not in str(err)


def test_decoder_standard_and_unknown_errors(probe_decoder):
    reason = bytes.fromhex("08c379a0") + encode(["string"], ["nope"])
    assert probe_decoder.decode(reason, "X").args == ("nope",)
    panic = probe_decoder.decode(bytes.fromhex("4e487b71") + encode(["uint256"], [0x32]), "X")
    assert (panic.name, panic.args) == ("Panic", ("0x32",))
    unknown = probe_decoder.decode(bytes.fromhex("deadbeef"), "X")
    assert unknown.name == "UnknownError(0xdeadbeef)"


def test_shared_selector_prefers_the_callee():
    abi = [{"type": "error", "name": "Closed", "inputs": []}]
    dec = ErrorDecoder({"A": abi, "B": abi})
    data = keccak(text="Closed()")[:4]
    assert dec.decode(data, "B").contract == "B"
    assert dec.decode(data, None).contract in ("A", "B")


def test_eth_tester_reverts_decode(tester_w3, tester_keys, probe_artifact, probe_decoder):
    from node.chain.sender import TxSender

    probe = deploy_probe(tester_w3, TxSender(tester_w3, tester_keys[0]), probe_artifact)
    sender_addr = tester_w3.eth.account.from_key(tester_keys[0]).address
    with pytest.raises(Exception) as info:
        probe.functions.ping(0, b"\x00" * 32).call({"from": sender_addr})
    err = as_revert(info.value, "Probe", probe_decoder)
    assert (err.name, err.args) == ("TooSmall", (sender_addr, 0, 1))

    probe.functions.close().transact({"from": tester_w3.eth.accounts[0]})
    with pytest.raises(Exception) as info:
        probe.functions.ping(5, b"\x00" * 32).estimate_gas()
    assert as_revert(info.value, "Probe", probe_decoder).name == "Closed"

    with pytest.raises(Exception) as info:
        probe.functions.needs(0).call()
    err = as_revert(info.value, "Probe", probe_decoder)
    assert (err.name, err.args) == ("Error", ("n must be positive",))


def test_translate_leaves_bugs_alone():
    bug = KeyError("x")
    assert translate(bug) is bug
    assert as_revert(bug) is None


def test_revert_pickles():
    import pickle

    err = ContractRevert("Probe", "TooSmall", ("0x1", 0, 1), b"\x01")
    back = pickle.loads(pickle.dumps(err))
    assert (back.name, back.args, str(back)) == (err.name, err.args, str(err))
