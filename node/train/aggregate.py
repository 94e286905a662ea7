"""Aggregation of replicas' adapter states: sample-weighted FedAvg, coordinate-wise median, trimmed mean.

Every replica of a shard computes the aggregate itself and commits its hash on chain, so the result
must be bit-identical on every node given the same inputs in the same order. That rules out
multi-threaded reductions whose summation order depends on the thread count: sums here are
explicit left-to-right element-wise accumulations in float64 on CPU (element-wise ops do not
reorder), sorting is exact, and the result is cast to float32 once at the end. Callers order the
inputs canonically (e.g. by replica index) before calling.

Torch has no weighted/robust aggregation over dicts of tensors with these guarantees, hence the
short hand-written code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from node.errors import BsnsError

RULES = ("fedavg", "median", "trimmed_mean")  # index = the on-chain uint8 `aggregation`


class AggregationError(BsnsError):
    """Inputs that cannot be aggregated (no states, mismatched names or shapes, bad weights)."""


def rule_name(code: int | str) -> str:
    """Map the on-chain uint8 (0 fedavg, 1 median, 2 trimmed mean) or a name to the rule name."""
    if isinstance(code, str):
        alias = {"trimmed-mean": "trimmed_mean", "trimmed": "trimmed_mean", "mean": "fedavg"}.get(code, code)
        if alias not in RULES:
            raise AggregationError(f"unknown aggregation rule {code!r}; expected one of {', '.join(RULES)}")
        return alias
    if not 0 <= int(code) < len(RULES):
        raise AggregationError(f"unknown aggregation code {code}; expected 0 (fedavg), 1 (median) or 2 (trimmed mean)")
    return RULES[int(code)]


def _check(states: Sequence[Mapping]) -> list[str]:
    if not states:
        raise AggregationError("nothing to aggregate: no adapter states")
    keys = sorted(states[0])
    for i, s in enumerate(states[1:], start=1):
        if sorted(s) != keys:
            missing = set(keys) ^ set(s)
            raise AggregationError(f"state {i} has different tensor names than state 0 (e.g. {sorted(missing)[0]!r})")
        for k in keys:
            if tuple(s[k].shape) != tuple(states[0][k].shape):
                raise AggregationError(f"tensor {k!r} has shape {tuple(s[k].shape)} in state {i}, "
                                       f"{tuple(states[0][k].shape)} in state 0")
    return keys


def _f64(t):
    import torch

    return t.detach().to(device="cpu", dtype=torch.float64).contiguous()


def fedavg(states: Sequence[Mapping], weights: Sequence[float] | None = None) -> dict:
    """Weighted mean of each tensor; ``weights`` are the replicas' sample counts (equal if None)."""
    import torch

    keys = _check(states)
    w = [1.0] * len(states) if weights is None else [float(x) for x in weights]
    if len(w) != len(states):
        raise AggregationError(f"{len(states)} states but {len(w)} weights")
    if any(x < 0 for x in w) or sum(w) <= 0:
        raise AggregationError(f"weights must be non-negative with a positive sum, got {w}")
    total = 0.0
    for x in w:
        total += x
    out = {}
    for k in keys:
        acc = torch.zeros(states[0][k].shape, dtype=torch.float64)
        for s, x in zip(states, w):
            acc = acc + _f64(s[k]) * (x / total)
        out[k] = acc.to(torch.float32).contiguous()
    return out


def median(states: Sequence[Mapping]) -> dict:
    """Coordinate-wise median; for an even count, the mean of the two middle values."""
    import torch

    keys = _check(states)
    n = len(states)
    out = {}
    for k in keys:
        srt = torch.sort(torch.stack([_f64(s[k]) for s in states]), dim=0, stable=True).values
        if n % 2:
            m = srt[n // 2]
        else:
            m = (srt[n // 2 - 1] + srt[n // 2]) * 0.5
        out[k] = m.to(torch.float32).contiguous()
    return out


def trimmed_mean(states: Sequence[Mapping], trim: float = 0.1) -> dict:
    """Coordinate-wise mean after dropping the ``floor(trim * n)`` smallest and largest values."""
    import torch

    if not 0.0 <= trim < 0.5:
        raise AggregationError(f"trim must be in [0, 0.5), got {trim}")
    keys = _check(states)
    n = len(states)
    cut = int(trim * n)
    out = {}
    for k in keys:
        srt = torch.sort(torch.stack([_f64(s[k]) for s in states]), dim=0, stable=True).values
        acc = torch.zeros(srt.shape[1:], dtype=torch.float64)
        for i in range(cut, n - cut):
            acc = acc + srt[i]
        out[k] = (acc / (n - 2 * cut)).to(torch.float32).contiguous()
    return out


def aggregate(rule: int | str, states: Sequence[Mapping], weights: Sequence[float] | None = None,
              trim: float = 0.1) -> dict:
    """Apply the proposal's rule (on-chain code or name) to the replicas' states."""
    name = rule_name(rule)
    if name == "fedavg":
        return fedavg(states, weights)
    if name == "median":
        return median(states)
    return trimmed_mean(states, trim)
