"""Foundry invariant fuzzing of the contracts (issue 11, "How it is checked"), run from pytest.

Runs ``forge test`` on ``tests/contracts/foundry/SessionsInvariants.t.sol`` (configuration in ``foundry.toml``; forge is the
npm ``@foundry-rs/forge`` pinned in package.json, compiling offline through ``scripts/forge_solc.sh``) and fails
on any violated invariant, on a handler call that reverts, or on a campaign shorter than 10,000 calls. The two
suites and what they check are described in ``docs/security.md`` (chain section, "Invariant fuzzing").
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from coordinator.compile import ROOT

FORGE = ROOT / "node_modules" / ".bin" / "forge"
SUITE = "tests/contracts/foundry/SessionsInvariants.t.sol"
SUITES = {"ByzantineMinorityInvariants", "ByzantineAnyInvariants"}
MIN_CALLS = 10_000
RESULT = re.compile(r"\[(PASS|FAIL)[^\]]*\] invariant_protocol\(\) \(runs: (\d+), calls: (\d+), reverts: (\d+)\)")
SUITE_LINE = re.compile(r"^Ran \d+ tests? for \S+:(\w+)$", re.M)

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="forge compiles through the npm solc (node)")


def parse_results(out: str) -> dict[str, tuple[str, int, int, int]]:
    """{suite contract: (PASS|FAIL, runs, calls, reverts)} from forge's output."""
    results: dict[str, tuple[str, int, int, int]] = {}
    for block in re.split(r"(?m)^(?=Ran )", out):
        suite = SUITE_LINE.match(block)
        found = RESULT.search(block)
        if suite and found:
            verdict, runs, calls, reverts = found.groups()
            results[suite.group(1)] = (verdict, int(runs), int(calls), int(reverts))
    return results


def test_parse_results_reads_forge_output():
    out = (
        "Ran 1 test for tests/contracts/foundry/SessionsInvariants.t.sol:ByzantineAnyInvariants\n"
        "[PASS] invariant_protocol() (runs: 128, calls: 12800, reverts: 0)\n\n"
        "Ran 1 test for tests/contracts/foundry/SessionsInvariants.t.sol:ByzantineMinorityInvariants\n"
        "[FAIL: an honest actor was slashed] invariant_protocol() (runs: 3, calls: 300, reverts: 0)\n"
    )
    assert parse_results(out) == {
        "ByzantineAnyInvariants": ("PASS", 128, 12800, 0),
        "ByzantineMinorityInvariants": ("FAIL", 3, 300, 0),
    }


@pytest.mark.slow  # ~20 s compile + ~60 s of fuzzing on one core (two suites, 12,800 calls each)
def test_invariants_hold_for_at_least_10000_calls_each():
    assert FORGE.exists(), "forge missing: run scripts/setup.sh (npm ci installs @foundry-rs/forge)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOUNDRY_")}  # the committed configuration
    out = subprocess.run(
        [str(FORGE), "test", "--match-path", SUITE, "-vv"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=900,
    )
    text = out.stdout + out.stderr
    results = parse_results(text)
    assert set(results) == SUITES, f"forge ran {sorted(results)} (rc {out.returncode}):\n{text[-3000:]}"
    for suite, (verdict, _runs, calls, reverts) in results.items():
        assert verdict == "PASS", f"{suite}: invariant violated:\n{text[-6000:]}"
        assert calls >= MIN_CALLS, f"{suite}: only {calls} calls (foundry.toml [invariant] runs x depth)"
        assert reverts == 0, f"{suite}: {reverts} handler calls reverted"
    assert out.returncode == 0, text[-3000:]
