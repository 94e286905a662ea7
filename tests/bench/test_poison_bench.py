"""`bsns bench poison` at a small size through the CLI: the unscreened FedAvg of announced weights is wrecked by a
NaN update and a lying count, the daemon's screened geometric median is not, and no honest update is refused."""

import re

import pytest

from tests.support.cli import bsns

pytestmark = pytest.mark.slow


def test_bench_poison_shows_fedavgs_damage_and_the_robust_rule_holding():
    code, out = bsns("bench", "poison", "--validation", "300", "--attacks", "nan,lying-count",
                     "--rules", "fedavg-announced,geometric-median")
    assert code == 0, out
    rows = {m.group(1): (float(m.group(2)), float(m.group(3)))
            for m in re.finditer(r"^\| (\S+) \| ([\d.]+)\S* (?:\(\S+\) )?\| ([\d.]+)", out, re.M)}
    assert set(rows) == {"clean", "nan", "lying-count"}, out
    clean_before, clean_gm = rows["clean"]
    assert clean_gm > 70 and clean_before > 70, out           # it learned (a 4-round, 800-example run did not)
    for attack in ("nan", "lying-count"):
        before, gm = rows[attack]
        assert before < clean_before - 10, out               # the old sync's aggregate is poisoned
        assert gm >= clean_gm - 2, out                       # the screened robust rule holds
    assert "honest updates the screen refused in all runs: 0" in out
