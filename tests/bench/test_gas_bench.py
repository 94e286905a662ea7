"""`bsns bench gas` runs end to end on eth-tester and reports every call for both sizes and the OZ baseline, and
the two gas claims the README makes, which are deterministic (same EVM, same calls), hold: no call but the round
plan (whose event carries one retention per device) costs more with more nodes, and a vote costs less than
OpenZeppelin Governor's."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

CALLS = {"register", "propose", "castVote", "execute", "settleDeposit", "join", "start", "commit (first of round)",
         "commit (agrees, not final)", "commit (finalizes round)", "closeRound", "reportFaulty", "release", "publish",
         "registerEmulator", "attachEmulator", "setController", "recordRoundPlan", "bind", "proveUnbound"}


@pytest.mark.slow
def test_bench_reports_every_call_for_both_sizes_and_the_baseline(capsys):
    from coordinator.bench import gas

    chain, small, large, oz = gas.run(None, sizes=(4, 8), baseline=True)
    assert set(small.gas) == CALLS and set(large.gas) == CALLS
    assert all(v > 21_000 for v in small.gas.values())
    assert set(oz) == {"first vote on a proposal", "a later vote"} and oz["first vote on a proposal"] > 21_000
    # gas does not grow with the number of nodes: no loop over nodes in any transaction
    grows = {call for call in CALLS if large.gas[call] != small.gas[call]}
    # a proof's signature and author differ with the key: a calldata byte may be zero in one (4 gas, not 16)
    assert abs(large.gas["proveUnbound"] - small.gas["proveUnbound"]) <= 12 * 4
    assert grows - {"proveUnbound"} == {"recordRoundPlan"}, {c: (small.gas[c], large.gas[c]) for c in grows}
    # a vote is cheaper than OpenZeppelin Governor's, even its later (warm) votes
    assert small.gas["castVote"] < oz["a later vote"] < oz["first vote on a proposal"]
    # binding the local update (issue 11, item 4) keeps a node's round under 2 x a commit
    assert small.gas["bind"] < small.gas["commit (agrees, not final)"]
    gas.render(small, large, oz, "eth-tester")
    out = capsys.readouterr().out
    assert "4 nodes" in out and "8 nodes" in out and "OpenZeppelin Governor castVote" in out
    assert f"{small.gas['castVote']:,}" in out and "commit + bind" in out


def test_bench_cli_refuses_an_unreachable_chain():
    from coordinator.cli import app

    r = CliRunner().invoke(app, ["bench", "gas", "--rpc", "http://127.0.0.1:1", "--no-baseline"])
    assert r.exit_code != 0
    assert "cannot reach the chain at http://127.0.0.1:1" in str(r.exception) + r.output
