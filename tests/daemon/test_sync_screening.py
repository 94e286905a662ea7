"""The round sync's aggregation under attack: weights from the partition, poisoned updates refused and logged.

``RoundSync._aggregate`` is what every replica runs on the agreed set; it is tested here on small synthetic
adapters with the sync's real collaborators faked (net serves bytes, the partition is a table). ``bsns bench poison``
measures what the same function does to accuracy under each attack.
"""

import pytest

torch = pytest.importorskip("torch")

from node.daemon.ports import Member  # noqa: E402
from node.daemon.sync import PIPELINE_SYNC, RoundSync  # noqa: E402
from node.hashing import keccak_hex  # noqa: E402
from node.train.adapter_state import canonical_bytes, state_from_bytes  # noqa: E402
from node.train.aggregate import fedavg, rule_class  # noqa: E402

from .fakes import FakeNet  # noqa: E402

START = {"a.w": torch.zeros(6, 4), "b": torch.zeros(3)}
COUNTS = {0: 100, 1: 50, 2: 50, 3: 100}   # what the deterministic partition gives each replica


def _honest(rep):
    g = torch.Generator().manual_seed(rep)
    return {k: 0.1 + 0.02 * torch.randn(v.shape, generator=g) for k, v in START.items()}


def _sync(rule="fedavg"):
    events = []
    sync = RoundSync(1, Member("0x0", 0, 0, peer_id="p0"), chain=None, net=FakeNet().port("p0"), store=None,
                     rule=rule_class(rule)(), policy=PIPELINE_SYNC, sync_timeout=1.0, poll=0.01,
                     sleep=lambda s: None, emit=lambda kind, **i: events.append((kind, i)),
                     fetch_blob=None, global_before=lambda rnd: canonical_bytes(START),
                     sample_count=COUNTS.__getitem__)
    return sync, events


def _run(blobs, rule="fedavg"):
    sync, events = _sync(rule)
    chosen = {r: keccak_hex(b) for r, b in blobs.items()}
    data, h = sync._aggregate(0, chosen, blobs)
    assert h == keccak_hex(data)
    return state_from_bytes(data), {i["replica"]: i["reason"] for k, i in events if k == "update_refused"}


def _expected(reps):
    return fedavg([_honest(r) for r in reps], [COUNTS[r] for r in reps])


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_weights_come_from_the_partition_not_the_announcement():
    """The sync is given no announced counts at all: a replica announcing 10^15 samples changes nothing."""
    blobs = {r: canonical_bytes(_honest(r)) for r in range(4)}
    agg, refused = _run(blobs)
    assert refused == {} and _same(agg, _expected([0, 1, 2, 3]))


@pytest.mark.parametrize("attack, reason", [
    ("nan", "non-finite"), ("inf", "non-finite"), ("scaled", "norm"), ("shape", "shape"), ("garbage", "undecodable"),
    ("unchanged", "unchanged"),
])
def test_a_poisoned_update_is_refused_and_named(attack, reason):
    bad = _honest(3)
    if attack == "nan":
        bad["b"][0] = float("nan")
    elif attack == "inf":
        bad["a.w"][1, 1] = float("inf")
    elif attack == "scaled":
        bad = {k: -10 * v for k, v in bad.items()}
    elif attack == "shape":
        bad["a.w"] = torch.zeros(4, 6)
    elif attack == "unchanged":
        bad = dict(START)
    blobs = {r: canonical_bytes(_honest(r)) for r in range(3)}
    blobs[3] = b"\x00not safetensors" if attack == "garbage" else canonical_bytes(bad)
    agg, refused = _run(blobs)
    assert list(refused) == [3] and refused[3].startswith(reason)
    assert _same(agg, _expected([0, 1, 2]))


def test_a_copied_update_counts_once():
    blobs = {r: canonical_bytes(_honest(r)) for r in range(4)}
    blobs[3] = blobs[1]
    agg, refused = _run(blobs)
    assert list(refused) == [3] and refused[3].startswith("copied: identical to replica 1's")
    assert _same(agg, _expected([0, 1, 2]))


def test_everything_refused_keeps_the_adapter_the_round_started_from():
    blobs = {0: canonical_bytes(START), 1: b"junk"}
    agg, refused = _run(blobs)
    assert sorted(refused) == [0, 1] and _same(agg, START)


def test_robust_rule_runs_on_what_survives_screening():
    blobs = {r: canonical_bytes(_honest(r)) for r in range(4)}
    noisy = {k: v + 0.02 * torch.randn(v.shape, generator=torch.Generator().manual_seed(9)) for k, v in _honest(3).items()}
    blobs[3] = canonical_bytes(noisy)
    agg, refused = _run(blobs, "geometric-median")
    assert refused == {}
    ref = rule_class("geometric-median")().aggregate([_honest(0), _honest(1), _honest(2), noisy], [100, 50, 50, 100])
    assert _same(agg, ref)


def test_the_sync_applies_the_server_update_to_the_screened_aggregate():
    """With server momentum the final is read from the two finals before the round, as every replica holds them."""
    from node.train.server import server_update_for

    before = {0: {k: v - 0.05 for k, v in START.items()}, 1: START}
    sync, _ = _sync()
    sync.server = server_update_for("fedavgm")
    sync.global_before = lambda rnd: canonical_bytes(before[rnd])
    blobs = {r: canonical_bytes(_honest(r)) for r in range(4)}
    data, _h = sync._aggregate(1, {r: keccak_hex(b) for r, b in blobs.items()}, blobs)
    mean = _expected([0, 1, 2, 3])
    want = state_from_bytes(server_update_for("fedavgm").apply(canonical_bytes(mean), [canonical_bytes(before[0]),
                                                                                       canonical_bytes(START)]))
    got = state_from_bytes(data)
    assert _same(got, want) and not _same(got, mean)
