"""Adapter state: canonical bytes and the keccak-256 hash that goes on chain."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from node.errors import BsnsError
from node.train.adapter_state import (
    adapter_hash, canonical_bytes, file_adapter_hash, load_adapter, save_adapter, state_from_bytes,
)

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"layers.{i}.adapter.{w}": torch.randn(4, 3, generator=g) for i in range(12) for w in ("down", "up")}


def test_bytes_independent_of_insertion_order_dtype_and_layout():
    state = _state()
    reordered = {k: state[k] for k in reversed(list(state))}
    # same values in another layout (a transposed view) and dtype (float64 holds fp32 values exactly)
    other = {k: v.t().contiguous().t().double() for k, v in reordered.items()}
    assert not next(iter(other.values())).is_contiguous()
    assert canonical_bytes(reordered) == canonical_bytes(state) == canonical_bytes(other)
    assert adapter_hash(reordered) == adapter_hash(state)


def test_hash_changes_with_one_weight():
    state = _state()
    h = adapter_hash(state)
    assert h.startswith("0x") and len(h) == 66
    state["layers.3.adapter.up"][1, 2] += 1e-6
    assert adapter_hash(state) != h


def test_hash_stable_across_processes():
    code = ("import sys; sys.path.insert(0, %r); from tests.train.test_adapter_state import _state; "
            "from node.train.adapter_state import adapter_hash; print(adapter_hash(_state(7)))" % str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == adapter_hash(_state(7))


def test_save_load_roundtrip_and_file_hash(tmp_path):
    state = _state(3)
    h = save_adapter(state, tmp_path / "a.safetensors")
    assert h == adapter_hash(state) == file_adapter_hash(tmp_path / "a.safetensors")
    loaded = load_adapter(tmp_path / "a.safetensors", expected_hash=h)
    assert sorted(loaded) == sorted(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_wrong_hash_and_non_canonical_bytes_are_refused(tmp_path):
    from safetensors.torch import save_file

    state = _state(1)
    save_adapter(state, tmp_path / "a.safetensors")
    with pytest.raises(BsnsError, match="hashes to"):
        load_adapter(tmp_path / "a.safetensors", expected_hash="0x" + "00" * 32)
    save_file({k: v.half() for k, v in state.items()}, tmp_path / "b.safetensors", metadata={"x": "y"})
    with pytest.raises(BsnsError, match="canonical"):
        load_adapter(tmp_path / "b.safetensors")
    with pytest.raises(BsnsError, match="not a safetensors"):
        state_from_bytes(b"garbage")
    with pytest.raises(BsnsError, match="empty"):
        adapter_hash({})
