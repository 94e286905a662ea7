"""Deployment parameters, amounts and the deployment file: bad input is refused before any transaction."""

from __future__ import annotations

import pytest

from coordinator.deploy import DeployError, DeployParams, deploy, parse_amount
from node.chain.deployment import Deployment, DeploymentError
from node.chain.sender import TxSender


@pytest.mark.parametrize("text, wei", [("1000", 1000), ("1 ether", 10**18), ("0.5eth", 5 * 10**17),
                                       ("20 gwei", 2 * 10**10), (7, 7)])
def test_parse_amount(text, wei):
    assert parse_amount(text) == wei


@pytest.mark.parametrize("text", ["1 banana", "-1", "0.5 wei", ""])
def test_parse_amount_refuses(text):
    with pytest.raises(DeployError):
        parse_amount(text)


def test_params_name_the_bad_field():
    with pytest.raises(DeployError, match=r"^quorum_bps: "):
        DeployParams.make(quorum_bps=10_001)
    with pytest.raises(DeployError, match=r"^voting_period_blocks: "):
        DeployParams.make(voting_period_blocks=0)


def test_deployment_file_round_trip_and_chain_check(tmp_path, tester_w3, tester_keys):
    dep = deploy(tester_w3, TxSender(tester_w3, tester_keys[0]), DeployParams(voting_period_blocks=3))
    path = dep.save(tmp_path / "d.json")
    back = Deployment.load(path, chain_id=dep.chain_id)
    assert back == dep and back.parameters["voting_period_blocks"] == 3
    assert back.parameters["proposal_deposit"] == DeployParams().proposal_deposit > 0
    back.check_code(tester_w3)
    with pytest.raises(DeploymentError, match="is for chain"):
        Deployment.load(path, chain_id=dep.chain_id + 1)
    with pytest.raises(DeploymentError, match="run `bsns deploy` first"):
        Deployment.load(tmp_path / "none.json", chain_id=1)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DeploymentError, match="malformed"):
        Deployment.load(tmp_path / "bad.json")


def test_zero_min_stake_and_unbounded_exit_delay_are_refused_before_any_transaction(tester_w3, tester_keys):
    """Free identities would let anyone fill a shard (only the dev chain 31337 may have them), and an exit delay
    past a year used to wrap NodeRegistry's uint40 unlock time into an immediate withdrawal."""
    sender = TxSender(tester_w3, tester_keys[0])
    nonce = tester_w3.eth.get_transaction_count(sender.address)
    with pytest.raises(DeployError, match="min_stake: 0 is allowed only on the dev chain"):
        deploy(tester_w3, sender, DeployParams(min_stake=0))
    assert tester_w3.eth.get_transaction_count(sender.address) == nonce
    with pytest.raises(DeployError, match="proposal_deposit: 0 is allowed only on the dev chain"):
        deploy(tester_w3, sender, DeployParams(proposal_deposit=0))  # free proposals flood the voters
    assert tester_w3.eth.get_transaction_count(sender.address) == nonce
    with pytest.raises(DeployError, match="exit_delay_seconds"):
        DeployParams.make(exit_delay_seconds=2**40)
