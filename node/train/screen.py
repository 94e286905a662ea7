"""Screening of one round's replica updates before aggregation: which updates a node refuses, and why.

A replica may send anything. Before any aggregation rule sees the updates, ``screen`` refuses (in this order):

- an update whose tensor names or shapes differ from the adapter the round started from ("shape");
- an update with a NaN or an infinity ("non-finite");
- an update identical to the adapter the round started from: no training was done ("unchanged");
- updates identical to one another: one replica copied another's ("copied"). Bytes cannot tell the copy from
  the original, so the group counts once: the copy of the lowest replica is kept and the others are refused
  (the copier adds no weight to the content it copied; refusing the whole group, as before, left one honest
  update of three at 3 replicas per shard and cost 2 points of accuracy in ``bsns bench poison``);
- with at least ``MIN_FOR_NORM`` updates left, an update whose distance from the round's start is more than
  ``NORM_FACTOR`` times the median distance ("norm"): a scaled update;
- with at least ``MIN_FOR_NORM`` updates left, an update whose change from the round's start points against the
  coordinate-wise median change of the remaining updates (cosine below ``MIN_COSINE``: "direction"): a
  sign-flipped update of honest size, which the norm test cannot see (``bsns bench poison``'s ``lying-count``).

The result is a pure function of the updates in replica order and the reference adapter, with distances from
numpy's pairwise float64 sums: every honest replica holding the same set refuses the same replicas and so
computes the same aggregate. What survives can still be poisoned subtly (noise of honest size, a stale update):
the robust rules in ``node.train.aggregate`` bound that. ``screened_aggregate`` is the whole step every replica
runs on a round's agreed set (the daemon's sync and ``bsns bench poison`` both call it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: an update farther than this many times the median distance from the round's start is refused. Honest
#: replicas' distances differ by data and partition (the bench measures them within ~1.5x of each other);
#: a scaled attack beyond 3x is refused, one below it is bounded by the robust rules.
NORM_FACTOR = 3.0
#: with fewer updates the median distance is not a majority's: the norm and direction tests are skipped
MIN_FOR_NORM = 3
#: an update whose change has a cosine below this with the median change is refused: honest replicas train the
#: same task from the same start, so their changes agree in direction (the bench measures it), while a reversed
#: one has a cosine near -1
MIN_COSINE = 0.0


@dataclass
class Screening:
    """The replicas (caller's labels) kept, in order, and those refused with a one-line reason each."""

    kept: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)


def flatten(state: Mapping, keys: list[str]):
    """The tensors ``keys`` of ``state`` as one flat float64 numpy vector."""
    import numpy as np
    import torch

    return np.concatenate([state[k].detach().to(device="cpu", dtype=torch.float64).reshape(-1).numpy()
                           for k in keys])


def distance(a, b) -> float:
    """Euclidean distance of two flat float64 vectors (numpy's pairwise sum: no thread-dependent order)."""
    import numpy as np

    d = a - b
    return float(np.sqrt(np.add.reduce(d * d)))


def _shape_fault(state: Mapping, reference: Mapping) -> str | None:
    if sorted(state) != sorted(reference):
        odd = sorted(set(state) ^ set(reference))[0]
        return f"shape: tensor names differ from the adapter (e.g. {odd!r})"
    for k in sorted(reference):
        if tuple(state[k].shape) != tuple(reference[k].shape):
            return f"shape: tensor {k!r} is {tuple(state[k].shape)}, the adapter's is {tuple(reference[k].shape)}"
    return None


def screen(states: Sequence[Mapping], reference: Mapping, labels: Sequence[int] | None = None,
           norm_factor: float = NORM_FACTOR) -> Screening:
    """Which of ``states`` (labelled by ``labels``, default their positions) an aggregation may use."""
    import numpy as np

    labels = list(range(len(states))) if labels is None else list(labels)
    out = Screening()
    keys = sorted(reference)
    ref = flatten(reference, keys)
    flat: dict[int, object] = {}
    for lab, s in zip(labels, states):
        fault = _shape_fault(s, reference)
        if fault is None:
            x = flatten(s, keys)
            if not np.isfinite(x).all():
                bad = next(k for k in keys if not np.isfinite(flatten(s, [k])).all())
                fault = f"non-finite: NaN or infinity in {bad!r}"
            elif np.array_equal(x, ref):
                fault = "unchanged: identical to the adapter the round started from (no training)"
            else:
                flat[lab] = x
        if fault is not None:
            out.refused[lab] = fault
    for i, a in enumerate(labels):
        if a not in flat:
            continue
        twins = [b for b in labels[i + 1:] if b in flat and np.array_equal(flat[a], flat[b])]
        for lab in twins:   # the content counts once, as replica ``a``'s (the lowest of the group)
            out.refused[lab] = f"copied: identical to replica {a}'s update (counted once, as {a}'s)"
            del flat[lab]
    dist = {lab: distance(x, ref) for lab, x in flat.items()}
    if len(dist) >= MIN_FOR_NORM:
        med = float(np.median(np.array(sorted(dist.values()))))
        for lab, d in dist.items():
            if d > norm_factor * med:
                out.refused[lab] = f"norm: {d:.4g} from the round's start, over {norm_factor:g}x the median {med:.4g}"
    left = [lab for lab in labels if lab in flat and lab not in out.refused]
    if len(left) >= MIN_FOR_NORM:
        deltas = np.stack([flat[lab] - ref for lab in left])
        center = np.median(deltas, axis=0)  # exact: a sort and at most one halving per coordinate
        cn = float(np.sqrt(np.add.reduce(center * center)))
        for lab, d in zip(left, deltas):
            dn = float(np.sqrt(np.add.reduce(d * d)))
            cos = float(np.add.reduce(d * center)) / (dn * cn) if dn > 0 and cn > 0 else 1.0
            if cos < MIN_COSINE:
                out.refused[lab] = (f"direction: its change points against the others' (cosine {cos:.3f} with their "
                                    f"median change)")
    out.kept = [lab for lab in labels if lab in flat and lab not in out.refused]
    out.refused = {lab: out.refused[lab] for lab in labels if lab in out.refused}
    return out


def screened_aggregate(blobs: Mapping[int, bytes], start: bytes, rule, sample_count) -> tuple[bytes, dict[int, str]]:
    """(aggregate bytes, {replica: reason refused}) of one round: the replicas' update bytes are decoded and
    screened against the round's starting adapter ``start``, and ``rule`` aggregates the survivors in replica
    order, weighted by ``sample_count(replica)`` (the partition's count, never an announced one). When every
    update is refused the adapter stays as the round started: ``start`` is returned."""
    from node.train.adapter_state import AdapterStateError, canonical_bytes, state_from_bytes

    refused: dict[int, str] = {}
    states, reps = [], []
    for r in sorted(blobs):
        try:
            states.append(state_from_bytes(blobs[r]))
            reps.append(r)
        except AdapterStateError as exc:
            refused[r] = f"undecodable: {exc}"
    res = screen(states, state_from_bytes(start), reps)
    refused.update(res.refused)
    refused = {r: refused[r] for r in sorted(refused)}
    if not res.kept:
        return start, refused
    by_rep = dict(zip(reps, states))
    agg = rule.aggregate([by_rep[r] for r in res.kept], [sample_count(r) for r in res.kept])
    return canonical_bytes(agg), refused
