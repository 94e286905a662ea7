"""A FedPEAT spec's emulators: the [fedpeat] table, one hash for a spec and retention in any process, the wire
blob that hashes to the emulator's hash and rebuilds it without the base weights, and refusal of wrong blobs."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from node.emulator import EmulatorError, emulator_blob, emulator_for_spec, emulator_from_blob
from node.train.build import adapt, load_full_model
from node.job import JobSpec, SpecError

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "minilm-sst2-fedpeat.toml"


def spec_with(**fedpeat) -> JobSpec:
    text = SPEC.read_text()
    head, _ = text.split("[fedpeat]")
    table = "".join(f"{k} = {json.dumps(v)}\n" for k, v in fedpeat.items())
    return JobSpec.from_text(head + "[fedpeat]\n" + table)


@pytest.fixture(scope="module")
def base():
    return load_full_model(JobSpec.from_toml(SPEC))


def test_spec_table_defaults_and_errors_name_the_field():
    spec = JobSpec.from_toml(SPEC)
    assert spec.fedpeat.options == [0.25, 0.5, 0.75, 1.0] and spec.fedpeat.k == 1 and spec.fedpeat.case == 1
    assert spec_with(options=[1.0, 0.5, 0.5], shared_retention=0.5).fedpeat.options == [0.5, 1.0]
    lora = JobSpec.from_toml(ROOT / "specs" / "minilm-sst2-lora.toml")
    assert lora.fedpeat is None
    with pytest.raises(SpecError, match=r"fedpeat.*exactly one shard"):
        JobSpec.from_text(lora.toml_text + "\n[fedpeat]\n")
    with pytest.raises(SpecError, match=r"fedpeat.options"):
        spec_with(options=[0.5, 1.5])
    with pytest.raises(SpecError, match=r"fedpeat: .*shared_retention 1.0 must be one of"):
        spec_with(options=[0.5])
    with pytest.raises(SpecError, match=r"fedpeat: .*k=3"):
        spec_with(k=3)
    prefix = SPEC.read_text().replace('name = "lora"', 'name = "prefix"').replace(
        'config = { r = 8, alpha = 16.0, target_modules = ["query", "key", "value", "dense"] }', "config = {}")
    with pytest.raises(SpecError, match=r"fedpeat: .*'prefix' cannot be trained on an emulator"):
        JobSpec.from_text(prefix)


# the other process uses another thread count: the float work in building must not depend on it
HASHES = """
import sys, torch
torch.set_num_threads(2)
from node.job import JobSpec
from node.emulator import emulator_for_spec
spec = JobSpec.from_text(sys.stdin.read())
print(emulator_for_spec(spec, float(sys.argv[1])).hash())
"""


@pytest.mark.slow
@pytest.mark.parametrize("fedpeat,retention", [({}, 0.25), ({"rule": "importance", "distill_steps": 2}, 0.5)])
def test_same_spec_and_retention_give_the_same_hash_in_another_process(base, fedpeat, retention):
    spec = spec_with(**fedpeat)
    here = emulator_for_spec(spec, retention, base=base)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", HASHES, str(retention)], input=spec.toml_text, capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == here.hash()
    assert here.manifest.rule == spec.fedpeat.rule and here.manifest.distill_steps == spec.fedpeat.distill_steps
    # a different retention is a different emulator
    assert emulator_for_spec(spec, 1.0, base=base).hash() != here.hash()


def test_blob_round_trip_without_base_weights(base, monkeypatch):
    from eth_utils import keccak

    spec = JobSpec.from_toml(SPEC)
    emu = emulator_for_spec(spec, 0.5, base=base)
    blob = emulator_blob(emu)
    assert "0x" + keccak(blob).hex() == emu.hash()

    import safetensors
    import node.model.loading as loading

    def no_weights(*a, **k):
        raise AssertionError("the receiving side read the base model's weights")

    monkeypatch.setattr(loading, "_weight_files", no_weights)
    monkeypatch.setattr(loading, "load_shard", no_weights)
    monkeypatch.setattr(safetensors, "safe_open", no_weights)
    got = emulator_from_blob(blob, spec, emu.hash())
    assert got.hash() == emu.hash() and got.manifest == emu.manifest
    assert sorted(got.model.layers.keys(), key=int) == ["0", "2", "4", "5"]
    batch = {"input_ids": torch.tensor([[101, 2023, 3185, 2001, 2307, 102]]), "attention_mask": torch.ones(1, 6, dtype=torch.long)}
    with torch.no_grad():
        assert torch.equal(got.model(**batch), emu.model(**batch))
    # the same adapters start on both, and on the full model
    from node.tuners import adapter_state_dict

    a = adapter_state_dict(adapt(spec, got.model))
    b = adapter_state_dict(adapt(spec, copy.deepcopy(base)))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_wrong_or_corrupted_blob_is_refused(base):
    from eth_utils import keccak

    spec = JobSpec.from_toml(SPEC)
    emu = emulator_for_spec(spec, 0.25, base=base)
    blob = bytearray(emulator_blob(emu))
    other = emulator_for_spec(spec, 0.75, base=base).hash()
    with pytest.raises(EmulatorError, match="expected " + other):
        emulator_from_blob(bytes(blob), spec, other)
    corrupted = bytearray(blob)
    corrupted[len(blob) // 2] ^= 0xFF
    with pytest.raises(EmulatorError, match="hashes to"):
        emulator_from_blob(bytes(corrupted), spec, emu.hash())
    # self-consistent bytes that are not an emulator of this model: refused for what they are
    garbage = b"\x00" * 64
    with pytest.raises(EmulatorError, match="not an emulator blob"):
        emulator_from_blob(garbage, spec, "0x" + keccak(garbage).hex())
    cut = len(blob) - len(emu.manifest.to_json())
    renamed = bytes(blob[:cut]) + emu.manifest.to_json().replace('"base_model":"minilm"', '"base_model":"gpt2"').encode()
    with pytest.raises(EmulatorError, match="not an emulator of model 'minilm'"):
        emulator_from_blob(renamed, spec, "0x" + keccak(renamed).hex())
