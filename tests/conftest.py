"""What every test folder shares: offline model hub settings, one eth-tester chain fixture and one anvil fixture.

Tests mirror the code: ``tests/<x>`` tests ``node/<x>`` (chain, p2p, model, tuners, train, emulator, daemon) or
``coordinator/<x>`` (fedpeat, bench; ``tests/cli`` the CLI and the top-level coordinator modules);
``tests/contracts`` the Solidity contracts and their compilation; ``tests/e2e`` whole sessions through the real
parts. Markers: ``slow`` (long; the full run includes them), ``anvil`` (needs the anvil binary), ``gpu`` (CUDA).
The fast tier is ``pytest -m "not slow and not anvil" -n 2``. The full run (``scripts/test.sh``) uses both cores
too, with ``--dist loadscope``: a module's tests stay on one worker, so a module's cluster (anvil, daemons) is built
once, and two modules' clusters may run side by side (their timeouts allow for it).
"""

from __future__ import annotations

import os

import pytest

from tests.support.evm import Chain, new_chain

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Longest first: the end-to-end modules, then the other slow ones, then the rest (a stable sort), so that on two
    workers the short modules fill the gaps at the end instead of one cluster running alone after everything else."""
    def rank(item) -> int:
        if "/tests/e2e/" in str(item.fspath):
            return 0
        return 1 if item.get_closest_marker("slow") else 2
    module_rank: dict[str, int] = {}
    for item in items:  # a module keeps its tests together (its module-scoped fixtures are built once)
        module_rank[str(item.fspath)] = min(module_rank.get(str(item.fspath), 2), rank(item))
    items.sort(key=lambda item: module_rank[str(item.fspath)])


@pytest.fixture(scope="module")
def chain() -> Chain:
    """An in-process EVM (eth-tester) for the module; contract tests deploy on it and roll back with ``snap``."""
    return new_chain()


@pytest.fixture
def tester_w3():
    """A fresh in-process EVM for one test (a Web3 over eth-tester)."""
    return new_chain().w3


@pytest.fixture
def tester_keys(tester_w3) -> list[bytes]:
    """Private keys of ``tester_w3``'s funded accounts (in-process test chain only)."""
    return [k.to_bytes() for k in tester_w3.provider.ethereum_tester.backend.account_keys]


@pytest.fixture(scope="module")
def anvil():
    """A throwaway anvil for the module; stopped afterwards, also when a test fails."""
    from coordinator.localchain import anvil_binary, throwaway_anvil

    try:
        anvil_binary()
    except Exception as exc:  # a set-up problem, reported not hidden
        pytest.fail(f"anvil missing: {exc}")
    with throwaway_anvil() as chain:
        yield chain
