"""Fixtures for the chain layer's tests: an in-process eth-tester chain, the Probe contract, anvil."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def probe_artifact() -> dict:
    return json.loads((FIXTURES / "Probe.json").read_text())


@pytest.fixture
def tester_w3():
    from web3 import EthereumTesterProvider, Web3

    return Web3(EthereumTesterProvider())


@pytest.fixture
def tester_keys(tester_w3) -> list[bytes]:
    """Private keys of eth-tester's funded accounts (in-process test chain only)."""
    return [k.to_bytes() for k in tester_w3.provider.ethereum_tester.backend.account_keys]


@pytest.fixture
def probe_decoder(probe_artifact):
    from node.chain.errors import ErrorDecoder

    return ErrorDecoder({"Probe": probe_artifact["abi"]})


@pytest.fixture
def use_probe_decoder(monkeypatch, probe_decoder):
    """Make the project-wide decoder know the Probe's errors (it normally reads contracts/artifacts)."""
    import node.chain.errors as errors

    monkeypatch.setattr(errors, "project_decoder", lambda: probe_decoder)
    return probe_decoder


def deploy_probe(w3, sender, artifact):
    ctor = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"]).constructor()
    result = sender.send(ctor, purpose="deploy Probe")
    return w3.eth.contract(address=result.contract_address, abi=artifact["abi"])


@pytest.fixture(scope="module")
def anvil_chain():
    """A throwaway anvil for the module; stopped afterwards, also when a test fails."""
    from coordinator.localchain import anvil_binary, throwaway_anvil

    try:
        anvil_binary()
    except Exception as exc:  # pragma: no cover - set-up problem, reported not hidden
        pytest.fail(f"anvil missing: {exc}")
    with throwaway_anvil() as chain:
        yield chain
