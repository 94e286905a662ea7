"""Data sets: deterministic split and batch order, SST-2 parsing errors, text blocks, file hash."""

from __future__ import annotations

import pytest

from node.errors import BsnsError
from node.train import data


def test_split_is_deterministic_disjoint_and_complete():
    tr, va = data.split_indices(1000, 100, seed=5)
    assert (tr, va) == data.split_indices(1000, 100, seed=5)
    assert len(va) == 100 and not set(tr) & set(va) and sorted(tr + va) == list(range(1000))
    assert data.split_indices(1000, 100, seed=6)[1] != va


def test_batch_order_depends_on_seed_and_step_only():
    full = list(data.batch_indices(100, 8, seed=3, steps=30))
    assert all(len(b) == 8 for b in full)
    # epoch 0 covers 12 distinct batches without repeats
    assert len({i for b in full[:12] for i in b}) == 96
    assert full != list(data.batch_indices(100, 8, seed=4, steps=30))
    # resuming from a step reproduces the same batches
    assert list(data.batch_indices(100, 8, seed=3, steps=10, start_step=20)) == full[20:]
    with pytest.raises(BsnsError):
        next(data.batch_indices(5, 8, seed=0, steps=1))


def test_sst2_reader_and_errors(tmp_path):
    sentences, labels = data.read_sst2()
    assert len(sentences) == 67349 and set(labels) == {0, 1}
    bad = tmp_path / "bad.tsv"
    bad.write_text("label\tsentence\n2\toops\n")
    with pytest.raises(BsnsError, match="bad.tsv:2"):
        data.read_sst2(bad)
    with pytest.raises(BsnsError, match="not found"):
        data.read_sst2(tmp_path / "missing.tsv")


def test_collate_pads_and_masks():
    ts = data.TokenizedSet([[5, 6, 7], [8]], [1, 0], pad_token_id=0, task="sequence-classification")
    b = ts.collate([0, 1])
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["labels"].tolist() == [1, 0]
    lm = data.TokenizedSet([[5, 6, 7], [8]], [0, 0], pad_token_id=0, task="causal-lm").collate([0, 1])
    assert lm["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]


def test_file_hash_is_keccak_of_bytes(tmp_path):
    from eth_utils import keccak

    f = tmp_path / "x.txt"
    f.write_bytes(b"hello")
    assert data.file_hash(f) == "0x" + keccak(b"hello").hex()


def test_sst2_tokenises_lazily_and_like_the_tokenizer():
    from node.model import resolve_model_path

    tok = data.load_tokenizer(str(resolve_model_path("minilm")))
    train, val = data.sst2_sets(tok, max_length=16, val_size=50)
    sentences, labels = data.read_sst2()
    _, val_idx = data.split_indices(len(sentences), 50)
    assert len(val) == 50 and val.targets == [labels[i] for i in val_idx]
    assert sum(x is not None for x in train._ids) == 0  # nothing tokenised before a batch asks
    batch = val.collate([3, 0])
    want = tok([sentences[val_idx[3]], sentences[val_idx[0]]], truncation=True, max_length=16, padding=True)
    assert batch["input_ids"].tolist() == want["input_ids"]
    assert batch["attention_mask"].tolist() == want["attention_mask"]
    assert val.subset([0, 3]).collate([1, 0])["input_ids"].tolist() == want["input_ids"]
