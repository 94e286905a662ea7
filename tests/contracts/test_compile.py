"""The committed contract artifacts are exactly what the pinned compiler makes of the sources."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from coordinator import compile as compile_mod

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="needs node for the npm solc")


def test_shim_reports_the_pinned_solc_version():
    out = subprocess.run([str(compile_mod.SHIM), "--version"], capture_output=True, text=True, timeout=60, check=True)
    pinned = json.loads((compile_mod.ROOT / "package.json").read_text())["devDependencies"]["solc"]
    assert f"Version: {pinned}+commit." in out.stdout


def test_shim_refuses_unknown_arguments():
    out = subprocess.run([str(compile_mod.SHIM), "--bogus"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "usage" in out.stderr


def test_artifacts_were_made_from_the_current_sources():
    """Fast guard (no compiler run): every artifact records the hash of the sources it came from."""
    expected = compile_mod.source_hash()
    arts = sorted(compile_mod.ARTIFACTS_DIR.glob("*.json"))
    assert arts
    stale = [p.name for p in arts if json.loads(p.read_text())["sourceHash"] != expected]
    assert not stale, f"sources changed since these were compiled (run python -m coordinator.compile): {stale}"


@pytest.mark.slow  # the via-IR compile takes ~20 s of CPU
def test_committed_artifacts_match_the_sources():
    """Full check: recompiling gives byte-identical files (also catches edits to the JSON itself)."""
    artifacts = compile_mod.compile_contracts()
    stale = compile_mod.stale_artifacts(artifacts)
    assert not stale, f"artifacts out of date (run python -m coordinator.compile): {stale}"
    names = {json.loads(text)["contractName"] for text in artifacts.values()}
    assert {"NodeRegistry", "FineTuneGovernance", "TrainingSessions", "AdapterRegistry"} <= names
    for text in artifacts.values():
        art = json.loads(text)
        assert art["bytecode"].startswith("0x") and len(art["bytecode"]) > 2
        assert art["deployedBytecode"].startswith("0x") and len(art["deployedBytecode"]) > 2
        assert art["evmVersion"] == compile_mod.EVM_VERSION
        # the EIP-170 limit: anything larger cannot be deployed on a real chain
        assert (len(art["deployedBytecode"]) - 2) // 2 <= 24_576, art["contractName"]
