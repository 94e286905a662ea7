"""Slither on the contracts (issue 11, "How it is checked"): every finding is fixed or accepted with its reason.

Slither runs from its own virtual environment, ``.venv-slither`` (it pins web3 < 8; ``scripts/setup.sh`` creates it
with the pinned ``slither-analyzer``), on the Foundry build of ``contracts/`` (forge from node_modules compiles
offline through the project's npm solc, ``foundry.toml``). Low, medium and high findings count; informational and
optimization detectors are not run. ``tests/contracts/slither-triage.toml`` lists the accepted findings: a finding
not in it fails the test, and so does an entry that matches no finding (the file stays the list of what is).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib

import pytest

from coordinator.compile import ROOT

SLITHER = ROOT / ".venv-slither" / "bin" / "slither"
TRIAGE = ROOT / "tests" / "contracts" / "slither-triage.toml"
_LOCATION = re.compile(r" \((?:contracts|node_modules|tests)/[^)]*#[0-9-]+\)")


def finding_key(result: dict) -> tuple[str, str]:
    """(detector, first description line without source locations): stable when lines move."""
    head = result["description"].strip().splitlines()[0]
    return result["check"], _LOCATION.sub("", head).strip()


def untriaged(results: list[dict], accepted: list[dict]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(findings not accepted, accepted entries that match no finding)."""
    found = {finding_key(r) for r in results}
    listed = {(a["check"], a["finding"]) for a in accepted}
    return sorted(found - listed), sorted(listed - found)


def test_triage_entries_each_carry_a_reason():
    accepted = tomllib.loads(TRIAGE.read_text(encoding="utf-8"))["accepted"]
    assert accepted and all(a.get("reason", "").strip() for a in accepted)
    keys = [(a["check"], a["finding"]) for a in accepted]
    assert len(keys) == len(set(keys)), "an entry is listed twice"


def test_untriaged_catches_new_and_stale_findings():
    one = {"check": "reentrancy-eth", "description": "Reentrancy in X.f() (contracts/X.sol#10-20):\n\t..."}
    accepted = [{"check": "reentrancy-eth", "finding": "Reentrancy in X.f():", "reason": "r"}]
    assert untriaged([one], accepted) == ([], [])
    moved = dict(one, description="Reentrancy in X.f() (contracts/X.sol#30-40):\n")
    assert untriaged([moved], accepted) == ([], [])  # a line shift is the same finding
    new = {"check": "arbitrary-send-eth", "description": "X.g() (contracts/X.sol#5) sends eth to arbitrary user"}
    assert untriaged([one, new], accepted) == ([("arbitrary-send-eth", "X.g() sends eth to arbitrary user")], [])
    assert untriaged([], accepted) == ([], [("reentrancy-eth", "Reentrancy in X.f():")])


@pytest.mark.slow  # forge build (~20 s) + slither (~30 s) on one core
def test_slither_finds_nothing_untriaged(tmp_path):
    assert SLITHER.exists(), "no .venv-slither: run scripts/setup.sh (it installs the pinned slither-analyzer)"
    out = tmp_path / "slither.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOUNDRY_")}
    env["PATH"] = f"{ROOT / 'node_modules' / '.bin'}{os.pathsep}{env.get('PATH', '')}"  # forge
    run = subprocess.run(
        [str(SLITHER), ".", "--compile-force-framework", "foundry", "--filter-paths", "node_modules|tests/",
         "--exclude-dependencies", "--exclude-informational", "--exclude-optimization", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert out.exists(), f"slither produced no report (rc {run.returncode}):\n{run.stderr[-3000:]}"
    report = json.loads(out.read_text())
    assert report["success"], report.get("error")
    results = report["results"].get("detectors", [])
    accepted = tomllib.loads(TRIAGE.read_text(encoding="utf-8"))["accepted"]
    new, stale = untriaged(results, accepted)
    assert not new, "slither findings not in tests/contracts/slither-triage.toml (fix them or triage them):\n" + \
        "\n".join(f"  {c}: {f}" for c, f in new)
    assert not stale, "triage entries that match no finding any more (remove them):\n" + \
        "\n".join(f"  {c}: {f}" for c, f in stale)
