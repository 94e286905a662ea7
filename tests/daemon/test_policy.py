"""The daemon's voting policy, and its one-line errors for a bad node config."""

import subprocess
import sys
from types import SimpleNamespace

import pytest

from node.daemon.config import NodeConfig
from node.daemon.proposals import VotePolicy
from node.model import weights_hash


def _daemon(tmp_path, **policy):
    lines = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in policy.items())
    p = tmp_path / "node.toml"
    p.write_text(f'[chain]\ndeployment = "d.json"\n[identity]\ndev_account = 1\n[resources]\nmemory_mb = 1024\n'
                 f'[policy]\n{lines}')
    params = SimpleNamespace(method="houlsby", task="sequence-classification", base_model="minilm", rounds=4,
                             shard_memory_mb=(1024, 2048), base_model_hash=weights_hash("minilm"))
    # a verified spec text is on chain
    specs = SimpleNamespace(gov=SimpleNamespace(get_params=lambda pid: params), spec_for=lambda pid: object())
    return VotePolicy(NodeConfig.from_toml(p), specs), params


def test_votes_for_a_job_it_can_do(tmp_path):
    d, _ = _daemon(tmp_path)
    assert d.decide(1) == (True, "a shard fits; method, task and model supported")


@pytest.mark.parametrize("change,reason", [
    ({"method": "qlora"}, "method qlora not supported"),
    ({"task": "causal-lm"}, "task causal-lm not supported"),
    ({"rounds": 50}, "50 rounds exceed max_rounds 10"),
    ({"shard_memory_mb": (4096, 8192)}, "no shard fits 1024 MB"),
])
def test_votes_against_what_it_cannot_or_will_not_do(tmp_path, change, reason):
    d, params = _daemon(tmp_path, max_rounds=10, tasks=["sequence-classification"])
    for k, v in change.items():
        setattr(params, k, v)
    support, why = d.decide(1)
    assert not support and why.startswith(reason)


def test_weights_that_differ_from_the_proposal_are_a_no(tmp_path):
    d, params = _daemon(tmp_path)
    params.base_model_hash = "0x" + "ab" * 32
    support, why = d.decide(1)
    assert not support and why.startswith("my weights of minilm hash to")
    params.base_model = "no-such/model-anywhere"
    support, why = d.decide(1)
    assert not support and why.startswith("model no-such/model-anywhere not available here")


def test_spec_missing_from_chain_is_a_no(tmp_path):
    d, _ = _daemon(tmp_path)
    d.specs.spec_for = lambda pid: None
    assert d.decide(1) == (False, "spec text not on chain")


def test_node_run_with_a_bad_config_is_one_line(tmp_path):
    bad = tmp_path / "node.toml"
    bad.write_text('[chain]\ndeployment = "d.json"\n[identity]\n')
    for cfg, msg in ((tmp_path / "missing.toml", "cannot read node config"),
                     (bad, "identity: Value error, give exactly one of keystore or dev_account")):
        r = subprocess.run([sys.executable, "-m", "coordinator.cli", "node", "run", "--config", str(cfg)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1
        assert r.stderr.strip().splitlines() == [f"error: {r.stderr.strip()[7:]}"] and msg in r.stderr
