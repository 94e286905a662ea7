"""Partitions: deterministic from (dataset hash, strategy, seed), disjoint and complete, and skewed when asked."""

import subprocess
import sys

import pytest

from node.train.partition import PartitionError, label_histogram, partition, partition_hash

H = "0x" + "ab" * 32
LABELS = [i % 2 for i in range(2000)]


def _covers(parts, n):
    flat = sorted(i for p in parts for i in p)
    return flat == list(range(n))


@pytest.mark.parametrize("strategy", ["iid", "dirichlet", "contiguous", 0, 1, 2])
def test_disjoint_complete_and_deterministic(strategy):
    a = partition(LABELS, 4, strategy, seed=7, dataset_hash=H, alpha=0.5)
    b = partition(LABELS, 4, strategy, seed=7, dataset_hash=H, alpha=0.5)
    assert a == b
    assert len(a) == 4 and all(len(p) > 0 for p in a)
    assert _covers(a, len(LABELS))


def test_same_partition_in_another_process():
    code = ("from node.train.partition import partition, partition_hash;"
            f"print(partition_hash(partition({LABELS!r}, 3, 'dirichlet', seed=11, dataset_hash={H!r}, alpha=0.3)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == partition_hash(partition(LABELS, 3, "dirichlet", seed=11, dataset_hash=H, alpha=0.3))


def test_seed_and_dataset_hash_change_the_partition():
    base = partition(LABELS, 2, "iid", seed=1, dataset_hash=H)
    assert partition(LABELS, 2, "iid", seed=2, dataset_hash=H) != base
    assert partition(LABELS, 2, "iid", seed=1, dataset_hash="0x" + "cd" * 32) != base


def test_contiguous_blocks_follow_dataset_order():
    parts = partition(10, 3, "contiguous", seed=0, dataset_hash=H)
    assert parts == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]


def test_iid_parts_balanced_in_size_and_labels():
    parts = partition(LABELS, 4, "iid", seed=3, dataset_hash=H)
    assert {len(p) for p in parts} == {500}
    for p in parts:
        h = label_histogram(LABELS, p)
        assert abs(h[0] - h[1]) < 0.2 * len(p)


def test_dirichlet_skews_labels_more_with_smaller_alpha():
    def skew(alpha):
        parts = partition(LABELS, 4, "dirichlet", seed=5, dataset_hash=H, alpha=alpha)
        # mean over parts of |share of label 1 - 0.5|
        return sum(abs(label_histogram(LABELS, p).get(1, 0) / len(p) - 0.5) for p in parts) / len(parts)

    assert skew(0.1) > 0.25          # strongly skewed: parts dominated by one label
    assert skew(100.0) < 0.05        # alpha large: close to iid
    assert skew(0.1) > skew(1.0) > skew(100.0)


def test_bad_requests_are_clear_errors():
    with pytest.raises(PartitionError, match="unknown data distribution"):
        partition(LABELS, 2, "zipf", seed=0, dataset_hash=H)
    with pytest.raises(PartitionError, match="cannot fill"):
        partition(3, 4, "iid", seed=0, dataset_hash=H)
    with pytest.raises(PartitionError, match="alpha"):
        partition(LABELS, 2, "dirichlet", seed=0, dataset_hash=H, alpha=0)
    with pytest.raises(PartitionError, match="code 7"):
        partition(LABELS, 2, 7, seed=0, dataset_hash=H)
