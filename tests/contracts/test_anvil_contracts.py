"""The contracts through a real anvil: a whole job (register → publish) over JSON-RPC costs exactly the gas
it costs on eth-tester, and a refusal arrives as the named custom error."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.anvil, pytest.mark.slow]


@pytest.fixture(scope="module")
def anvil():
    from coordinator.localchain import anvil_binary, throwaway_anvil

    try:
        anvil_binary()
    except Exception as exc:  # set-up problem: reported, not hidden
        pytest.fail(f"anvil missing: {exc}")
    with throwaway_anvil() as chain:
        yield chain


def test_whole_job_on_anvil_costs_what_it_costs_in_process(anvil):
    from coordinator.bench import gas

    _, on_anvil, _, _ = gas.run(anvil.url, sizes=(4, 8), baseline=False)
    in_process = gas.run_scenario(gas.connect(None), 4)
    assert on_anvil.gas == in_process.gas


def test_custom_error_over_rpc(anvil):
    from web3 import Web3

    from node.chain.errors import as_revert
    from node.chain.artifacts import load_artifact

    w3 = Web3(Web3.HTTPProvider(anvil.url))
    art = load_artifact("NodeRegistry")
    c = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    r = w3.eth.wait_for_transaction_receipt(c.constructor(10**18, 60).transact({"from": w3.eth.accounts[0]}))
    reg = w3.eth.contract(address=r.contractAddress, abi=art["abi"])
    with pytest.raises(Exception) as info:
        reg.functions.register(b"\x01", "/a", 0, 0, 0).transact({"from": w3.eth.accounts[1], "value": 10**18})
    rev = as_revert(info.value)
    assert rev is not None and (rev.name, tuple(rev.args)) == ("InvalidNodeInfo", ("memoryMB",))
