"""Aggregators: correct values, bit-identical across processes and thread counts, clear errors."""

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from node.train.aggregate import AggregationError, fedavg, median, rule_for, trimmed_mean



def aggregate(rule, states, weights=None, trim=0.1):
    """The rule a spec's [training] section names (by name or on-chain code), applied."""
    return rule_for(SimpleNamespace(aggregation=rule, trim_fraction=trim)).aggregate(states, weights)

def _states(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"a.w": torch.randn(33, 17, generator=g), "b.bias": torch.randn(5, generator=g)} for _ in range(n)]


def test_fedavg_weights_by_samples():
    s = [{"x": torch.tensor([0.0, 2.0])}, {"x": torch.tensor([4.0, 6.0])}]
    out = fedavg(s, [3, 1])
    assert torch.equal(out["x"], torch.tensor([1.0, 3.0]))
    assert out["x"].dtype == torch.float32


def test_median_and_trimmed_mean_resist_an_outlier():
    s = [{"x": torch.tensor([1.0])}, {"x": torch.tensor([2.0])}, {"x": torch.tensor([3.0])},
         {"x": torch.tensor([1000.0])}]
    assert median(s)["x"].item() == 2.5
    assert trimmed_mean(s, 0.25)["x"].item() == 2.5
    assert fedavg(s)["x"].item() == pytest.approx(251.5)
    assert median(s[:3])["x"].item() == 2.0


def test_single_state_is_returned_unchanged():
    s = _states(1)
    for rule in ("fedavg", "median", "trimmed-mean", "geometric-median"):
        out = aggregate(rule, s, [10])
        assert all(torch.equal(out[k], s[0][k]) for k in s[0])


def _digest(state):
    import hashlib

    return hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()


@pytest.mark.parametrize("rule", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_bit_identical_across_processes_and_threads(rule):
    here = _digest(aggregate(rule, _states(5, seed=42), [1, 2, 3, 4, 5], trim=0.2))
    code = ("import hashlib, torch; torch.set_num_threads(2);"
            "from types import SimpleNamespace as NS; from node.train.aggregate import rule_for;"
            "g = torch.Generator().manual_seed(42);"
            "s = [{'a.w': torch.randn(33, 17, generator=g), 'b.bias': torch.randn(5, generator=g)} for _ in range(5)];"
            f"o = rule_for(NS(aggregation={rule}, trim_fraction=0.2)).aggregate(s, [1, 2, 3, 4, 5]);"
            "print(hashlib.sha256(b''.join(o[k].numpy().tobytes() for k in sorted(o))).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == here


def test_mismatched_inputs_are_clear_errors():
    a, b = _states(2)
    b = dict(b)
    b.pop("b.bias")
    with pytest.raises(AggregationError, match="different tensor names"):
        fedavg([a, b])
    with pytest.raises(AggregationError, match="shape"):
        median([a, {"a.w": torch.zeros(2), "b.bias": torch.zeros(5)}])
    with pytest.raises(AggregationError, match="no adapter states"):
        fedavg([])
    with pytest.raises(AggregationError, match="unknown aggregation"):
        aggregate("mode", [a])
    with pytest.raises(AggregationError, match="weights"):
        fedavg([a, a], [0, 0])


def test_fedavg_refuses_weights_too_large_for_a_float():
    a, b = _states(2)
    with pytest.raises(AggregationError, match="finite"):
        fedavg([a, b], [1, 10**400])


def test_geometric_median_resists_a_scaled_update_and_keeps_a_clean_mean_close():
    """One sign-flipped x10 update of four moves FedAvg far away; the geometric median stays near the honest mean."""
    g = torch.Generator().manual_seed(3)
    honest = [{"x": torch.ones(50) + 0.1 * torch.randn(50, generator=g)} for _ in range(3)]
    attack = {"x": -10 * torch.ones(50)}
    clean = fedavg(honest)["x"]
    gm = aggregate("geometric-median", [*honest, attack], [1, 1, 1, 1])["x"]
    fa = fedavg([*honest, attack])["x"]
    assert (gm - clean).norm() < 0.5 * (fa - clean).norm()
    assert (gm - clean).norm() < 0.2 * clean.norm()
    # without an attacker it is close to the mean (it is a different estimator, not the mean)
    assert (aggregate("geometric-median", honest)["x"] - clean).norm() < 0.05 * clean.norm()


def test_geometric_median_weights_by_samples():
    s = [{"x": torch.tensor([0.0])}, {"x": torch.tensor([1.0])}, {"x": torch.tensor([1.0])}]
    assert aggregate("geometric-median", s, [1, 1, 1])["x"].item() == pytest.approx(1.0, abs=0.01)
    assert aggregate("geometric-median", s, [5, 1, 1])["x"].item() == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize("threads", [1, 2])
def test_geometric_median_bit_identical_in_another_process(threads):
    here = _digest(aggregate("geometric-median", _states(5, seed=7), [1, 2, 3, 4, 5]))
    code = (f"import hashlib, torch; torch.set_num_threads({threads});"
            "from types import SimpleNamespace as NS; from node.train.aggregate import rule_for;"
            "g = torch.Generator().manual_seed(7);"
            "s = [{'a.w': torch.randn(33, 17, generator=g), 'b.bias': torch.randn(5, generator=g)} for _ in range(5)];"
            "o = rule_for(NS(aggregation='geometric-median', trim_fraction=0.1)).aggregate(s, [1, 2, 3, 4, 5]);"
            "print(hashlib.sha256(b''.join(o[k].numpy().tobytes() for k in sorted(o))).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == here


def test_norm_clip_bounds_an_outlier_and_keeps_a_clean_mean():
    """Centered clipping: one sign-flipped x10 update of four moves the result by at most a typical honest offset,
    and without an attacker the result is the weighted mean (nothing is farther than the median radius by much)."""
    g = torch.Generator().manual_seed(3)
    honest = [{"x": torch.ones(50) + 0.1 * torch.randn(50, generator=g)} for _ in range(3)]
    attack = {"x": -10 * torch.ones(50)}
    clean = fedavg(honest)["x"]
    nc = aggregate("norm-clip", [*honest, attack], [1, 1, 1, 1])["x"]
    fa = fedavg([*honest, attack])["x"]
    spread = max((h["x"] - clean).norm() for h in honest)
    assert (nc - clean).norm() < 0.1 * (fa - clean).norm()
    assert (nc - clean).norm() < 2 * spread
    assert (aggregate("norm-clip", honest)["x"] - clean).norm() < 0.5 * spread


def test_norm_clip_weights_by_samples():
    s = [{"x": torch.tensor([0.0])}, {"x": torch.tensor([1.0])}, {"x": torch.tensor([2.0])}]
    assert aggregate("norm-clip", s, [1, 1, 1])["x"].item() == pytest.approx(1.0, abs=1e-6)
    assert aggregate("norm-clip", s, [1, 1, 4])["x"].item() > 1.2


@pytest.mark.parametrize("threads", [1, 2])
def test_norm_clip_bit_identical_in_another_process(threads):
    here = _digest(aggregate("norm-clip", _states(5, seed=7), [1, 2, 3, 4, 5]))
    code = (f"import hashlib, torch; torch.set_num_threads({threads});"
            "from types import SimpleNamespace as NS; from node.train.aggregate import rule_for;"
            "g = torch.Generator().manual_seed(7);"
            "s = [{'a.w': torch.randn(33, 17, generator=g), 'b.bias': torch.randn(5, generator=g)} for _ in range(5)];"
            "o = rule_for(NS(aggregation='norm-clip', trim_fraction=0.1)).aggregate(s, [1, 2, 3, 4, 5]);"
            "print(hashlib.sha256(b''.join(o[k].numpy().tobytes() for k in sorted(o))).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == here
