"""Fuzzing helpers (hypothesis) shared by the decoder tests: run a property under a memory bound.

A property passes when the decoder returns or raises the protocol's own error (``P2PError`` and its
kinds) and stays within ``HEADROOM`` bytes of extra address space on the way. ``EXAMPLES`` parametrises a
test with a few hundred examples in the default run and 10,000 in the slow tier.
"""

from __future__ import annotations

import resource

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.p2p.errors import P2PError

EXAMPLES = [pytest.param(300, id="300"), pytest.param(10_000, id="10000", marks=pytest.mark.slow)]
HEADROOM = 256 << 20   # address space a decode may add; a hostile length field asks for gigabytes


def fuzz(examples: int, strategy, check, warmup=None) -> None:
    """Run ``check`` on ``examples`` draws of ``strategy`` with the process's address space capped at
    what it uses now plus ``HEADROOM`` (``RLIMIT_AS``): an allocation sized by a hostile field fails
    with an error the property does not accept. Cheaper than tracemalloc, which costs milliseconds
    per example. ``warmup`` is one input run before the cap (lazy imports, first-call caches)."""
    import psutil

    if warmup is not None:
        try:
            check(warmup)
        except P2PError:
            pass

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(data) -> None:
        try:
            check(data)
        except P2PError:
            pass   # the protocol's own error: what a hostile peer is supposed to get

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = psutil.Process().memory_info().vms + HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        run()
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def mutated(corpus: list[bytes]) -> st.SearchStrategy:
    """Valid encodings from ``corpus`` with up to four bytes overwritten, sometimes cut short or
    extended: cheap to draw, and most draws get past the magic to the checks behind it."""
    def apply(args) -> bytes:
        base, edits, cut, tail = args
        data = bytearray(base)
        for pos, value in edits:
            if data:
                data[pos % len(data)] = value
        if cut is not None:
            data = data[:cut % (len(data) + 1)]
        return bytes(data) + tail
    return st.tuples(st.sampled_from(corpus), st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)),
                                                       max_size=4),
                     st.none() | st.integers(0, 1 << 16), st.binary(max_size=8)).map(apply)
