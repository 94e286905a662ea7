"""The session's partition (``node.daemon.session.partition_of``): every replica's part fills a batch, so a skewed
Dirichlet draw cannot leave a replica that ``batch_indices`` refuses mid-session (bench noniid found parts of 26
examples at alpha 0.1)."""

from node.daemon.session import partition_of
from node.job import JobSpec

from .specs import LORA, sst2_spec

LABELS = [0] * 100 + [1] * 100


def _spec(batch: int, seed: int) -> JobSpec:
    return JobSpec.from_text(sst2_spec("skew", method="lora", config=LORA, layers=[[0, 6]], memory_mb=[1024],
                                       data={"distribution": "dirichlet", "alpha": 0.1},
                                       training={"rounds": 1, "sync_interval": 1, "batch_size": batch,
                                                 "learning_rate": 1e-3, "seed": seed}))


def test_every_replica_of_a_skewed_session_can_fill_a_batch():
    for seed in range(5):
        parts = partition_of(_spec(16, seed), 4, LABELS)
        assert min(len(p) for p in parts) >= 16, (seed, [len(p) for p in parts])
        assert sorted(i for p in parts for i in p) == list(range(len(LABELS)))


def test_the_bound_is_not_vacuous():
    """With a batch of 1 the same seeds give parts smaller than 16: the bound above is what moved them."""
    assert any(min(len(p) for p in partition_of(_spec(1, seed), 4, LABELS)) < 16 for seed in range(5))
