"""Aggregation of replicas' adapter states: one strategy object per rule, registered by its name.

A rule (``AggregationRule``) turns one round's replica updates of a shard into the round's aggregate, the way
Flower's ``Strategy.aggregate_fit`` does; rules register themselves under their ``node.vocab.Aggregation``
name, and ``rule_for(training)`` gives the configured rule of a job spec. Built in: sample-weighted FedAvg,
coordinate-wise median, trimmed mean, the geometric median (RFA: Pillutla, Kakade and Harchaoui, "Robust
Aggregation for Federated Learning", 2019), which keeps breakdown point 1/2 over whole updates where the
coordinate-wise rules treat each number alone, and norm clipping (centered clipping: Karimireddy, He and Jaggi,
"Learning from History for Byzantine Robust Optimization", 2021), a mean in which no update moves the result
farther than a typical honest one does. Updates are screened before any rule sees them
(``node.train.screen``); the weights a caller passes come from the deterministic data partition, never from
what a replica announces.

Every replica of a shard computes the aggregate itself and commits its hash on chain, so the result
must be bit-identical on every node given the same inputs in the same order. That rules out
multi-threaded reductions whose summation order depends on the thread count: sums here are
explicit left-to-right element-wise accumulations in float64 on CPU (element-wise ops do not
reorder), sorting is exact, and the result is cast to float32 once at the end. The geometric median's distances
are numpy's pairwise float64 sums (single-threaded, a fixed order), never BLAS or torch reductions, and the weights
made from them are rounded to 9 significant digits, so a last-bit difference between CPUs cannot reach the result. Callers order the
inputs canonically (e.g. by replica index) before calling.

Torch has no weighted/robust aggregation over dicts of tensors with these guarantees, hence the
short hand-written code.
"""

from __future__ import annotations

import math

from collections.abc import Mapping, Sequence
from typing import ClassVar

from node.errors import BsnsError
from node.vocab import Aggregation, UnknownWord


class AggregationError(BsnsError):
    """Inputs that cannot be aggregated (no states, mismatched names or shapes, bad weights)."""


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


def _weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """One finite, non-negative weight per state with a positive finite sum (equal weights if None)."""
    if weights is None:
        return [1.0] * n
    if len(weights) != n:
        raise AggregationError(f"{n} states but {len(weights)} weights")
    try:
        w = [float(x) for x in weights]
    except (OverflowError, TypeError, ValueError):
        raise AggregationError(f"weights must be finite numbers, got {list(weights)}") from None
    if any(not math.isfinite(x) or x < 0 for x in w) or not 0 < sum(w) < math.inf:
        raise AggregationError(f"weights must be finite, non-negative with a positive sum, got {w}")
    return w


def fedavg(states: Sequence[Mapping], weights: Sequence[float] | None = None) -> dict:
    """Weighted mean of each tensor; ``weights`` are the replicas' sample counts (equal if None)."""
    import torch

    keys = _check(states)
    w = _weights(weights, len(states))
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


#: Weiszfeld iterations of the geometric median: a fixed count (not a tolerance) so every node stops at the same
#: iterate; RFA reports that a few iterations suffice, and the bench (``bsns bench poison``) measures it.
GEOMEDIAN_ITERATIONS = 8
#: smoothing of the Weiszfeld weights (RFA's nu): a point at the current estimate does not divide by zero
GEOMEDIAN_NU = 1e-8


def geometric_median(states: Sequence[Mapping], weights: Sequence[float] | None = None,
                     iterations: int = GEOMEDIAN_ITERATIONS, nu: float = GEOMEDIAN_NU) -> dict:
    """Smoothed Weiszfeld iterations from the weighted mean (RFA, Algorithm 2): each iterate is a weighted mean of
    the states with weight ``w_i / max(nu, |z - x_i|)``, so a state far from the rest pulls with a bounded force."""
    import numpy as np
    import torch

    from node.train.screen import distance, flatten

    keys = _check(states)
    w = _weights(weights, len(states))
    xs = [flatten(s, keys) for s in states]

    def weighted(beta: list[float]):
        total = 0.0
        for b in beta:
            total += b
        acc = np.zeros_like(xs[0])
        for x, b in zip(xs, beta):
            acc = acc + x * (b / total)  # element-wise, left to right: the same bits on every node
        return acc

    z = weighted(w)
    for _ in range(iterations):
        # distances are reductions, whose last bits may differ between CPUs (SIMD widths): the weights are rounded
        # to 9 significant digits so that every node lands on the same iterate, bit for bit
        z = weighted([float(f"{wi / max(nu, distance(z, x)):.9g}") for wi, x in zip(w, xs)])
    out, at = {}, 0
    for k in keys:
        n = states[0][k].numel()
        out[k] = torch.from_numpy(z[at:at + n].copy()).reshape(states[0][k].shape).to(torch.float32).contiguous()
        at += n
    return out


#: centered-clipping iterations of ``norm_clip``: a fixed count, as for the geometric median
NORM_CLIP_ITERATIONS = 3


def norm_clip(states: Sequence[Mapping], weights: Sequence[float] | None = None,
              iterations: int = NORM_CLIP_ITERATIONS) -> dict:
    """Centered clipping: from the coordinate-wise median ``v``, each iteration moves ``v`` by the weighted mean of
    the states' offsets ``x_i - v``, each clipped to the median offset norm (so a state far from the rest counts as
    if it were at a typical honest distance, in its own direction). The radius adapts to the round: honest
    replicas' offsets set it, never an attacker's. Distances are numpy's pairwise float64 sums and the clip factors
    are rounded to 9 significant digits, as in ``geometric_median``: bit-identical on every node."""
    import numpy as np
    import torch

    from node.train.screen import distance, flatten

    keys = _check(states)
    w = _weights(weights, len(states))
    total = 0.0
    for b in w:
        total += b
    xs = [flatten(s, keys) for s in states]
    v = np.median(np.stack(xs), axis=0)  # exact: a sort and at most one halving per coordinate
    for _ in range(iterations):
        dists = [distance(x, v) for x in xs]
        radius = float(f"{float(np.median(np.array(sorted(dists)))):.9g}")
        step = np.zeros_like(v)
        for x, d, b in zip(xs, dists, w):
            clip = 1.0 if d <= radius or d == 0.0 else float(f"{radius / d:.9g}")
            step = step + (x - v) * (clip * b / total)   # element-wise, left to right
        v = v + step
    out, at = {}, 0
    for k in keys:
        n = states[0][k].numel()
        out[k] = torch.from_numpy(v[at:at + n].copy()).reshape(states[0][k].shape).to(torch.float32).contiguous()
        at += n
    return out


class AggregationRule:
    """A registered rule: ``aggregate(states, weights)`` over the replicas' states in replica order."""

    name: ClassVar[Aggregation]

    @classmethod
    def from_training(cls, training) -> "AggregationRule":
        """The rule configured by a spec's ``[training]`` section (rules without parameters ignore it)."""
        return cls()

    def aggregate(self, states: Sequence[Mapping], weights: Sequence[float] | None = None) -> dict:
        raise NotImplementedError


_RULES: dict[Aggregation, type[AggregationRule]] = {}


def register_rule(cls: type[AggregationRule]) -> type[AggregationRule]:
    """Class decorator: make a rule available under its ``name``."""
    _RULES[cls.name] = cls
    return cls


@register_rule
class FedAvg(AggregationRule):
    name = Aggregation.FEDAVG

    def aggregate(self, states, weights=None):
        return fedavg(states, weights)


@register_rule
class Median(AggregationRule):
    name = Aggregation.MEDIAN

    def aggregate(self, states, weights=None):
        return median(states)


@register_rule
class TrimmedMean(AggregationRule):
    name = Aggregation.TRIMMED_MEAN

    def __init__(self, trim: float = 0.1) -> None:
        self.trim = trim

    @classmethod
    def from_training(cls, training) -> "TrimmedMean":
        return cls(training.trim_fraction)

    def aggregate(self, states, weights=None):
        return trimmed_mean(states, self.trim)


@register_rule
class GeometricMedian(AggregationRule):
    name = Aggregation.GEOMETRIC_MEDIAN

    def aggregate(self, states, weights=None):
        return geometric_median(states, weights)


@register_rule
class NormClip(AggregationRule):
    name = Aggregation.NORM_CLIP

    def aggregate(self, states, weights=None):
        return norm_clip(states, weights)


def rule_class(rule: Aggregation | int | str) -> type[AggregationRule]:
    """The registered rule for a name or an on-chain code."""
    try:
        return _RULES[Aggregation.parse(rule)]
    except UnknownWord as exc:
        raise AggregationError(str(exc)) from None


def rule_for(training) -> AggregationRule:
    """The aggregation rule a job spec's ``[training]`` section names, configured by it."""
    return rule_class(training.aggregation).from_training(training)
