"""The three FedPEAT cases, Fed-FT and the server's participation, end to end on the real model and SST-2.

Real all-MiniLM-L6-v2, real SST-2 sentences, real LoRA training and FedAvg; tiny sizes (2 devices, 2 rounds,
2 local steps, 32-token sentences) so the whole file stays within seconds per run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

from coordinator.fedpeat.harness import RunConfig, plan_hash, record_hash, run_fedpeat
from coordinator.fedpeat.workload import Workload, WorkloadConfig

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def work():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return Workload.load(WorkloadConfig(train_limit=160, eval_size=32, max_length=32, batch_size=8))


def run(work, tmp_path, rounds=2, **kw):
    cfg = RunConfig(devices=2, rounds=rounds, local_steps=2, **kw)
    return cfg, run_fedpeat(work, cfg, record_path=tmp_path / "rounds.jsonl")


def check_records(res, tmp_path):
    lines = [json.loads(x) for x in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert len(lines) == len(res["records"])
    for rec in lines:
        h = rec.pop("record_hash")
        assert h == record_hash(rec)
        assert rec["plan_hash"] == plan_hash(rec)
    # the plan hash covers the choices only: same choices, same plan hash, whatever the outcome
    if len(lines) > 1 and [c.get("retention") for c in lines[0]["choices"]] == [c.get("retention") for c in lines[1]["choices"]]:
        assert lines[0]["plan_hash"] != lines[1]["plan_hash"]  # ...but the round number is part of the plan
        assert plan_hash({**lines[1], "round": 1, "eval_accuracy": -1}) == lines[0]["plan_hash"]
    return lines


def test_case1_each_device_its_own_emulator(work, tmp_path):
    cfg, res = run(work, tmp_path, case=1, strategy="list", device_retentions=[0.25, 0.75], device_max_retention=[1.0])
    recs = check_records(res, tmp_path)
    e1 = work.emulator(0.25)
    e2 = work.emulator(0.75)
    r1 = recs[0]["choices"]
    assert [c["retention"] for c in r1] == [0.25, 0.75]
    assert [c["emulator"] for c in r1] == [e1.hash(), e2.hash()]
    adapter = res["records"][0]["choices"][0]["bytes"] - e1.num_bytes()
    assert adapter > 0 and adapter == res["records"][1]["choices"][0]["bytes"]  # the emulator travels once
    assert res["total_bytes"] == e1.num_bytes() + e2.num_bytes() + 2 * 2 * adapter
    assert res["exchanges"] == [1, 1]
    # the memory actually measured for each device fits its capacity
    for rec in recs:
        for c in rec["choices"]:
            assert c["memory"] <= c["capacity"]
    assert res["peak_device_memory"] == max(c["memory"] for c in r1)
    # the global adapter changed and plugs into the full model
    assert recs[0]["global_adapter"] != recs[1]["global_adapter"]
    full = work.adapted_full_model()
    work.load_adapter_state(full, res["global_state"])
    assert work.evaluate(full) == pytest.approx({"loss": res["final_loss"], "accuracy": res["final_accuracy"]})


def test_case1_with_houlsby_adapters(work, tmp_path):
    work.cfg.method = "houlsby"
    try:
        _, res = run(work, tmp_path, rounds=1, case=1, strategy="list", device_retentions=[0.25, 0.5],
                     device_max_retention=[1.0])
        full = work.adapted_full_model()
        work.load_adapter_state(full, res["global_state"])  # strict: the bottleneck adapters plug in too
    finally:
        work.cfg.method = "lora"
    keys = set(res["global_state"])
    assert any(".adapter_attn.down." in k for k in keys) and not any("lora_" in k for k in keys)
    assert {k.split(".")[1] for k in keys if k.startswith("layers.")} == {"0", "5"}
    assert work.evaluate(full)["loss"] == pytest.approx(res["final_loss"])


def test_case1_fixed_retention_respects_small_devices(work, tmp_path):
    # device 0 can hold only the 0.25 emulator: asked for 1.0 it gets the largest that fits
    cfg, res = run(work, tmp_path, case=1, strategy="fixed", retention=1.0, device_max_retention=[0.25, 1.0])
    got = [c["retention"] for c in res["records"][0]["choices"]]
    assert got == [0.25, 1.0]


def test_case2_one_shared_emulator_and_the_server_trains_too(work, tmp_path):
    cfg, res = run(work, tmp_path, case=2, shared_retention=0.5, server_participates=True, device_max_retention=[1.0])
    recs = check_records(res, tmp_path)
    devs = [c for c in recs[0]["choices"] if c["device"] != "server"]
    assert {c["emulator"] for c in devs} == {work.emulator(0.5).hash()}
    assert any(c["device"] == "server" for c in recs[0]["choices"])  # the owner's server joined the average
    # a shared emulator that a device cannot hold leaves that device out instead of giving it another one
    _, res2 = run(work, tmp_path, case=2, shared_retention=1.0, device_max_retention=[0.25, 1.0])
    assert [c["retention"] for c in res2["records"][0]["choices"]] == [None, 1.0]


def test_case3_no_emulator_plain_federated_peft(work, tmp_path):
    cfg, res = run(work, tmp_path, case=3)
    recs = check_records(res, tmp_path)
    full_bytes = sum(4 * t.numel() for t in work.base.state_dict().values())
    assert all(c["emulator"] == "full" for c in recs[0]["choices"])
    adapter = recs[1]["choices"][0]["bytes"] // 2
    assert res["total_bytes"] == 2 * full_bytes + 2 * 2 * 2 * adapter


def test_fedft_moves_the_whole_model_every_round(work, tmp_path):
    _, res = run(work, tmp_path, rounds=1, strategy="fedft")
    full_bytes = res["records"][0]["choices"][0]["bytes"] // 2
    assert full_bytes > 80e6  # all weights of the 22M-parameter model in fp32, each way
    assert res["total_bytes"] == 2 * 2 * full_bytes
    assert res["history"][1]["loss"] != res["history"][0]["loss"]  # every weight trained: the model moved
    _, peft = run(work, tmp_path, rounds=1, case=3)
    assert res["peak_device_memory"] > peft["peak_device_memory"]


def test_cli_run_and_bad_input(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    bsns = [sys.executable, "-m", "coordinator.cli", "fedpeat", "run"]
    ok = subprocess.run(bsns + ["--case", "1", "--strategy", "fixed", "--retention", "0.25", "--devices", "1", "--rounds", "1",
                                "--local-steps", "1", "--options", "0.25", "--record", str(tmp_path / "r.jsonl"),
                                "--train-limit", "64", "--eval-size", "16"], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "final accuracy" in ok.stdout
    rec = json.loads((tmp_path / "r.jsonl").read_text())
    assert rec["choices"][0]["retention"] == 0.25 and rec["record_hash"].startswith("0x")
    bad = subprocess.run(bsns + ["--strategy", "ppo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("error: strategy ppo needs --controller")
    bad = subprocess.run(bsns + ["--case", "2", "--shared-retention", "0.3"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 1 and "shared retention 0.3" in bad.stderr
