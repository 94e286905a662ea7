"""`bsns bench noniid` through the CLI: at a small size it prints each federated run beside centralised training of
the same examples from the same run, and a bad variant or method is one line and a non-zero exit."""

import re

import pytest

from tests.support.cli import bsns


@pytest.mark.slow
def test_bench_noniid_prints_each_variant_beside_the_centralised_baseline():
    code, out = bsns("bench", "noniid", "--frozen", "5", "--train-limit", "2000", "--validation", "300",
                     "--max-length", "16", "--rounds", "3", "--interval", "10", "--seeds", "0",
                     "--variants", "fedavg,fedavgm")
    assert code == 0, out
    rows = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\| (\S+) \| ([\d.]+) \|", out, re.M)}
    assert set(rows) == {"centralised", "fedavg", "fedavgm"}, out
    assert rows["centralised"] > 65, out   # the baseline learned (untrained is ~50% on this split)
    assert re.search(r"^\| fedavgm \| [\d.]+ \| [\d.]+ \| [+-][\d.]+ \|$", out, re.M), out  # the gap is printed


@pytest.mark.parametrize("args, message", [
    (("--variants", "fedprox"), "unknown variant 'fedprox'"),
    (("--method", "ia3"), "unknown method 'ia3'"),
])
def test_bench_noniid_bad_input_is_one_line(args, message):
    code, out = bsns("bench", "noniid", *args)
    assert code != 0 and message in out and "Traceback" not in out, out
