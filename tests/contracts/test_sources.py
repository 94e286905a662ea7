"""The Solidity sources keep their shape: every contract under 500 lines, the types, errors and events of
each contract in its interface (contracts/interfaces), NatSpec on every external or public function."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
SOURCES = sorted(p for p in CONTRACTS.rglob("*.sol") if "bench" not in p.parts)
DEPLOYED = sorted(CONTRACTS.glob("*.sol"))
MAX_LINES = 500

_FUNCTION = re.compile(r"^[ \t]*function\s+(\w+)\s*\(([^;{]*)[;{]", re.M)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_source_over_the_limit(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MAX_LINES


@pytest.mark.parametrize("path", DEPLOYED, ids=lambda p: p.name)
def test_errors_events_and_enums_live_in_the_interfaces(path):
    src = path.read_text(encoding="utf-8")
    found = re.findall(r"^[ \t]*(error|event|enum)\s+(\w+)", src, re.M)
    assert found == [], f"{path.name} declares {found}: they belong in contracts/interfaces/I{path.stem}.sol"
    assert f"is I{path.stem}" in src, f"{path.name} does not implement its interface"


def undocumented(src: str) -> list[str]:
    """External or public functions without a /// comment right above them."""
    out = []
    for m in _FUNCTION.finditer(src):
        if not re.search(r"\b(external|public)\b", m.group(2)):
            continue
        lines = src[: m.start()].rstrip("\n").splitlines()
        if not lines or not lines[-1].strip().startswith("///"):
            out.append(m.group(1))
    return out


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_every_external_function_has_natspec(path):
    assert undocumented(path.read_text(encoding="utf-8")) == []


def test_the_natspec_check_can_fail():
    src = """
    /// @notice documented
    function a() external {}

    function b(uint256 x)
        external
        view
        returns (uint256);
    function c() private {}
    """
    assert undocumented(src) == ["b"]
