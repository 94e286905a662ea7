"""Fixtures for the chain layer's tests: the Probe contract (its artifact, its error decoder, its deployment)."""

from __future__ import annotations

import pytest

from tests.support.evm import load_probe


@pytest.fixture(scope="session")
def probe_artifact() -> dict:
    return load_probe()


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

