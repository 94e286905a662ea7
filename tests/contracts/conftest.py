"""Fixtures of the contract unit tests: the five contracts deployed once per module on the root conftest's
eth-tester chain, and a snapshot rolled back after each test. Helpers live in tests/support/evm.py."""

from __future__ import annotations

import pytest

from tests.support.evm import System, deploy_system


@pytest.fixture(scope="module")
def system(chain) -> System:
    return deploy_system(chain)


@pytest.fixture
def snap(chain):
    """Run the test on a snapshot of the module's chain and roll back afterwards."""
    sid = chain.tester.take_snapshot()
    yield chain
    chain.tester.revert_to_snapshot(sid)
