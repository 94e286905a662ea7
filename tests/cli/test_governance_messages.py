"""Governance refusals say what is true, with the time to wait, on a real anvil through the CLI entry point.

The chain mines only when told to (``anvil_mine``), so every block number in the messages is known; the home
records the chain with 1 s blocks (what `bsns chain up` writes), so the waits are in seconds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.cli import bsns

pytestmark = pytest.mark.anvil
SPEC = Path(__file__).resolve().parents[1] / "chain" / "fixtures" / "job.toml"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """anvil (mining on demand), `bsns deploy` with a 3-block voting delay, nodes 1 and 2 registered."""
    from coordinator.localchain import throwaway_anvil
    from node.chain.rpc import connect, record_chain

    home = tmp_path_factory.mktemp("home")
    with throwaway_anvil() as anvil, pytest.MonkeyPatch.context() as mp:
        mp.setenv("BSNS_HOME", str(home))
        for var in ("BSNS_RPC", "BSNS_DEPLOYMENT", "BSNS_DEV_ACCOUNT"):
            mp.delenv(var, raising=False)
        record_chain(anvil.url, 1.0)  # as `bsns chain up` does: later commands find it without --rpc
        code, out = bsns("deploy", "--dev-account", "0", "--voting-delay", "3", "--voting-period", "5")
        assert code == 0, out
        for i in (1, 2):
            code, out = bsns("node", "register", "--dev-account", str(i))
            assert code == 0, out
        yield connect(anvil.url), home


def mine(w3, n: int) -> None:
    w3.provider.make_request("anvil_mine", [hex(n)])


def test_vote_before_voting_opens_says_when_it_opens_and_sends_nothing(chain):
    w3, _ = chain
    code, out = bsns("propose", str(SPEC), "--dev-account", "0")
    assert code == 0, out
    pid = int(re.search(r"proposal (\d+) created in block (\d+)", out).group(1))
    created = int(re.search(r"created in block (\d+)", out).group(1))
    assert f"voting from block {created + 4} to {created + 8} (opens in about 4 s at 1 s blocks); 2 eligible, " \
           f"quorum 1" in out
    nonce = w3.eth.get_transaction_count(w3.eth.account.from_key(_dev(1)).address)
    code, out = bsns("vote", str(pid), "for", "--dev-account", "1")
    assert (code, out.strip()) == (1, f"error: voting on proposal {pid} opens at block {created + 4} (the chain is "
                                      f"at {created}; about 4 s at 1 s blocks)")
    assert w3.eth.get_transaction_count(w3.eth.account.from_key(_dev(1)).address) == nonce  # nothing sent

    mine(w3, 3)  # the vote now lands in the first block that counts
    code, out = bsns("vote", str(pid), "for", "--dev-account", "1")
    assert code == 0 and f"(for 1, against 0); quorum 1, the vote ends with block {created + 8}" in out, out

    code, out = bsns("vote", str(pid), "for", "--dev-account", "3")  # not a node
    assert code == 1 and out.strip().endswith(
        "cannot vote on proposal 1: it is not an active node (`bsns node register`, or a daemon's [register])"), out

    code, out = bsns("execute", str(pid), "--dev-account", "3")
    head = w3.eth.block_number
    assert (code, out.strip()) == (1, f"error: FineTuneGovernance reverted: NotSucceeded({pid}, 1): proposal {pid} "
                                      f"can be executed after block {created + 8}, when its vote ends (the chain is "
                                      f"at {head}; about {created + 9 - head} s at 1 s blocks)")
    mine(w3, 5)
    code, out = bsns("vote", str(pid), "for", "--dev-account", "2")
    assert code == 1 and out.strip().endswith(f"voting on proposal {pid} closed at block {created + 8} (the chain is "
                                              f"at {w3.eth.block_number}): it passed (1 for, 0 against, quorum 1); "
                                              f"`bsns execute {pid}` opens its session"), out
    assert bsns("execute", str(pid), "--dev-account", "3")[0] == 0
    code, out = bsns("execute", str(pid), "--dev-account", "3")
    assert code == 1 and out.strip().endswith(f"proposal {pid} was already executed: session 1"), out


def test_a_defeated_proposal_says_why(chain):
    w3, _ = chain
    code, out = bsns("propose", str(SPEC), "--dev-account", "0")
    pid = int(re.search(r"proposal (\d+) created", out).group(1))
    mine(w3, 10)
    code, out = bsns("execute", str(pid), "--dev-account", "3")
    assert (code, out.strip()) == (1, f"error: FineTuneGovernance reverted: NotSucceeded({pid}, 3): it was "
                                      f"defeated: 0 votes cast, the quorum is 1 of 2 eligible")
    code, out = bsns("wait", "proposal", str(pid), "--timeout", "5")
    assert (code, out.strip()) == (1, f"error: proposal {pid}: it was defeated: 0 votes cast, the quorum is 1 of 2 "
                                      f"eligible")
    code, out = bsns("vote", "99", "for", "--dev-account", "1")
    assert (code, out.strip()) == (1, f"error: FineTuneGovernance reverted: UnknownProposal(99): there is no "
                                      f"proposal 99 on this deployment (proposals 1 to {pid})")


def test_the_contracts_coming_error_has_its_message(chain):
    """VotingNotStarted(id, startsAt), the contract's answer to a vote on a Pending proposal, gets the message."""
    from coordinator.chainclock import ChainClock
    from coordinator.refusals import explain_revert
    from node.chain.errors import ContractRevert

    w3, _ = chain
    exc = ContractRevert("FineTuneGovernance", "VotingNotStarted", (1, w3.eth.block_number + 2))
    msg = explain_revert(exc, _gov(chain), None, 1, None, ChainClock(w3.eth.block_number, None))
    assert msg == (f"FineTuneGovernance reverted: VotingNotStarted(1, {w3.eth.block_number + 2}): voting on "
                   f"proposal 1 opens at block {w3.eth.block_number + 2} (the chain is at {w3.eth.block_number}; "
                   f"2 more blocks; this chain mines a block only when a transaction arrives "
                   f"(`bsns chain up --on-demand`))")


def test_status_says_which_chain_and_deployment(chain):
    w3, home = chain
    code, out = bsns("status")
    assert code == 0, out
    url = w3.provider.endpoint_uri
    assert out.splitlines()[0] == f"chain {url} (chain id 31337, block {w3.eth.block_number}, 1 s blocks)"
    assert out.splitlines()[1].startswith(f"deployment {home / 'deployments' / '31337.json'} (deployed in block ")


def _dev(i: int) -> bytes:
    from node.chain.keys import dev_key

    return dev_key(i, 31337).private_key


def _gov(chain):
    from node.chain.clients import GovernanceClient
    from node.chain.deployment import Deployment

    w3, home = chain
    dep = Deployment.load(home / "deployments" / "31337.json")
    return GovernanceClient(w3, dep.address("FineTuneGovernance"))
