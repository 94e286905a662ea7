"""Data partitions of a session: which replica trains on which examples.

Owns the three strategies a proposal can name (``iid``, ``dirichlet`` label skew with parameter
alpha, ``contiguous`` blocks) and the rule that makes them recomputable by anyone: the random stream
is seeded from keccak-256(dataset hash, strategy, alpha, session seed, number of parts), so the
same inputs give the same partition in any process, on any machine, in any Python >= 3.11.

Written by hand on purpose: numpy's ``Generator.dirichlet``/``permutation`` and Python's
``random.shuffle``/``gammavariate`` do not promise the same output across versions, but Python
guarantees that ``random.Random(int).random()`` does. Everything here (Fisher-Yates shuffle,
Marsaglia-Tsang gamma sampling) is built on that one guaranteed primitive.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from node.errors import BsnsError
from node.hashing import keccak256, keccak_hex
from node.vocab import Distribution, UnknownWord


class PartitionError(BsnsError):
    """A partition request that cannot be satisfied (bad strategy, alpha, or too few examples)."""


def _seed_int(dataset_hash: str | bytes, strategy: str, alpha: float, seed: int, num_parts: int) -> int:
    if isinstance(dataset_hash, str):
        h = dataset_hash[2:] if dataset_hash.startswith("0x") else dataset_hash
        dataset_hash = bytes.fromhex(h)
    material = b"bsns-partition-v1|" + dataset_hash + b"|" + strategy.encode() + b"|" + repr(float(alpha)).encode() \
        + b"|" + str(int(seed)).encode() + b"|" + str(int(num_parts)).encode()
    return int.from_bytes(keccak256(material), "big")


def _shuffle(items: list[int], rng: random.Random) -> None:
    # Fisher-Yates on rng.random() only (see the module docstring for why not random.shuffle).
    for i in range(len(items) - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        items[i], items[j] = items[j], items[i]


def _normal(rng: random.Random) -> float:
    # Box-Muller; 1 - random() lies in (0, 1], so the log is finite.
    u1, u2 = 1.0 - rng.random(), rng.random()
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def _gamma(shape: float, rng: random.Random) -> float:
    # Marsaglia & Tsang (2000); shape < 1 through the boost Gamma(a) = Gamma(a+1) * U^(1/a).
    if shape < 1.0:
        u = 1.0 - rng.random()
        return _gamma(shape + 1.0, rng) * u ** (1.0 / shape)
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x = _normal(rng)
        v = (1.0 + c * x) ** 3
        if v <= 0:
            continue
        u = 1.0 - rng.random()
        if math.log(u) < 0.5 * x * x + d - d * v + d * math.log(v):
            return d * v


def _dirichlet(alpha: float, k: int, rng: random.Random) -> list[float]:
    g = [_gamma(alpha, rng) for _ in range(k)]
    s = sum(g)
    if s <= 0.0:  # every draw underflowed (tiny alpha): all mass on one part, chosen by the stream
        j = int(rng.random() * k)
        return [1.0 if i == j else 0.0 for i in range(k)]
    return [x / s for x in g]


def _split_even(items: list[int], k: int) -> list[list[int]]:
    n = len(items)
    bounds = [n * i // k for i in range(k + 1)]
    return [items[bounds[i]:bounds[i + 1]] for i in range(k)]


def partition(labels: Sequence[int] | int, num_parts: int, strategy: Distribution | int | str, *, seed: int,
              dataset_hash: str | bytes, alpha: float = 0.5, min_size: int = 1) -> list[list[int]]:
    """Split example indices ``0..n-1`` into ``num_parts`` lists, one per replica.

    ``labels`` is the training set's label list (needed for ``dirichlet``) or just its length.
    ``iid``: a seeded shuffle cut into equal parts. ``contiguous``: the data set's own order cut into
    equal blocks (no randomness). ``dirichlet``: per class, proportions ~ Dir(alpha) over the parts,
    and that class's shuffled examples are cut by them (Hsu et al., 2019); smaller alpha = more skew.
    Draws are repeated from the same stream until every part has ``min_size`` examples.
    Each returned list is sorted ascending so that the batch order is decided by the trainer alone.
    """
    try:
        dist = Distribution.parse(strategy)
    except UnknownWord as exc:
        raise PartitionError(str(exc)) from None
    if num_parts < 1:
        raise PartitionError(f"number of parts must be >= 1, got {num_parts}")
    n = labels if isinstance(labels, int) else len(labels)
    if n < num_parts * max(min_size, 1):
        raise PartitionError(f"{n} examples cannot fill {num_parts} parts of at least {max(min_size, 1)}")
    if dist == Distribution.CONTIGUOUS:
        return _split_even(list(range(n)), num_parts)
    rng = random.Random(_seed_int(dataset_hash, dist, alpha if dist == Distribution.DIRICHLET else 0.0, seed, num_parts))
    if dist == Distribution.IID:
        idx = list(range(n))
        _shuffle(idx, rng)
        return [sorted(p) for p in _split_even(idx, num_parts)]
    if isinstance(labels, int):
        raise PartitionError("dirichlet partitioning needs the labels, not only the data set size")
    if not alpha > 0:
        raise PartitionError(f"dirichlet alpha must be > 0, got {alpha}")
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    for _attempt in range(1000):
        parts: list[list[int]] = [[] for _ in range(num_parts)]
        for y in sorted(by_class):
            members = list(by_class[y])
            _shuffle(members, rng)
            props = _dirichlet(float(alpha), num_parts, rng)
            cum, cuts = 0.0, []
            for p in props[:-1]:
                cum += p
                cuts.append(int(round(cum * len(members))))
            cuts = [0] + cuts + [len(members)]
            for j in range(num_parts):
                parts[j].extend(members[cuts[j]:cuts[j + 1]])
        if min(len(p) for p in parts) >= min_size:
            return [sorted(p) for p in parts]
    raise PartitionError(f"dirichlet alpha={alpha} left a part with fewer than {min_size} examples after 1000 draws")


def partition_hash(parts: Sequence[Sequence[int]]) -> str:
    """keccak-256 of the partition as text, so two parties can compare who trained on what."""
    text = ";".join(",".join(str(int(i)) for i in p) for p in parts)
    return keccak_hex(text.encode())


def label_histogram(labels: Sequence[int], part: Sequence[int]) -> dict[int, int]:
    """Count of each label in one part (for logs and the skew test)."""
    out: dict[int, int] = {}
    for i in part:
        y = int(labels[i])
        out[y] = out.get(y, 0) + 1
    return dict(sorted(out.items()))
