"""The daemon's voting policy, and its one-line errors for a bad node config."""

import subprocess
import sys
from types import SimpleNamespace

import pytest

from node.daemon.config import NodeConfig
from node.daemon.proposals import VotePolicy
from node.model import weights_hash as _weights_hash

_HASHES: dict = {}


def weights_hash(model):  # hashing reads ~90 MB: once per test session
    if model not in _HASHES:
        _HASHES[model] = _weights_hash(model)
    return _HASHES[model]


def _spec(*, model="minilm", weights=None, data=None, training=None, layers=((0, 3), (3, 6))):
    from node.job import JobSpec

    from .specs import sst2_spec

    text = sst2_spec("policy", method="houlsby", config={"bottleneck_size": 8}, layers=[list(x) for x in layers],
                     memory_mb=[1024, 2048][:len(layers)], data=data,
                     training={"rounds": 4, "sync_interval": 2, "batch_size": 4, "learning_rate": 0.001,
                               **(training or {})})
    raw = JobSpec.from_text(text)
    raw = raw.model_copy(update={"model": raw.model.model_copy(update={"id": model})})
    return raw.with_hashes(weights_hash=weights or weights_hash("minilm"))


def _daemon(tmp_path, **policy):
    lines = "".join(f"{k} = {v!r}\n".replace("'", '"').replace("False", "false").replace("True", "true")
                    for k, v in policy.items())
    p = tmp_path / "node.toml"
    p.write_text(f'[chain]\ndeployment = "d.json"\n[identity]\ndev_account = 1\n[resources]\nmemory_mb = 1024\n'
                 f'[policy]\n{lines}')
    params = SimpleNamespace(method="houlsby", task="sequence-classification", base_model="minilm", rounds=4,
                             shard_memory_mb=(1024, 2048), base_model_hash=weights_hash("minilm"))
    # a verified spec text is on chain
    box = {"spec": _spec()}
    specs = SimpleNamespace(gov=SimpleNamespace(get_params=lambda pid: params), spec_for=lambda pid: box["spec"])
    policy = VotePolicy(NodeConfig.from_toml(p), specs)
    policy.box = box
    return policy, params


def test_votes_for_a_job_it_can_do(tmp_path):
    d, _ = _daemon(tmp_path)
    assert d.decide(1) == (True, "a shard fits; method, task, model, data and limits within policy")


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


@pytest.mark.parametrize("spec, policy, reason", [
    ({"training": {"batch_size": 10**12}}, {}, "batch_size 1000000000000 exceeds the policy's max_batch_size 1024"),
    ({"training": {"sync_interval": 500}}, {"max_sync_interval": 100}, "sync_interval 500 exceeds"),
    ({"training": {"rounds": 20}}, {"max_rounds": 10}, "rounds 20 exceeds"),
    ({"data": {"max_seq_len": 4096}}, {}, "max_seq_len 4096 exceeds the policy's max_seq_len 2048"),
    ({"layers": ((0, 3), (3, 6))}, {"max_layers": 4}, "layers 6 exceeds the policy's max_layers 4"),
    ({"data": {"path": "/etc/passwd"}}, {}, "data.path: /etc/passwd is outside the data folders"),
    ({}, {"datasets": ["imdb"]}, "data set sst2 not allowed"),
    ({}, {"models": ["gpt2"]}, "model minilm not allowed"),
    ({"model": "/opt/models/x"}, {}, "model /opt/models/x is a local path not listed"),
    ({}, {"model_hashes": ["0x" + "cd" * 32]}, "weights 0x"),
    ({"model": "no-such-org/no-such-model"}, {}, "model no-such-org/no-such-model not available here"),
])
def test_refuses_a_spec_outside_its_policy(tmp_path, spec, policy, reason):
    """Each limit on its own: the vote is against, and the daemon's join check (``accepts``) says the same."""
    d, _ = _daemon(tmp_path, **policy)
    d.box["spec"] = _spec(**spec)
    support, why = d.decide(1)
    assert not support and why.startswith(reason), why
    assert d.accepts(d.box["spec"]) == (False, why)


def test_never_downloads_a_model_it_was_not_told_to(tmp_path, monkeypatch):
    """A hub id the node does not hold: checked against the local cache only, unless listed with download_models."""
    from node.daemon import proposals

    calls = []
    monkeypatch.setattr(proposals, "local_weights_hash", lambda m, download=False: calls.append((m, download)) or
                        weights_hash("minilm"))
    d, _ = _daemon(tmp_path)
    d.box["spec"] = _spec(model="someorg/big-model")
    d.decide(1)
    assert calls == [("someorg/big-model", False)]
    d, _ = _daemon(tmp_path, models=["someorg/big-model"], download_models=True)
    d.box["spec"] = _spec(model="someorg/big-model")
    assert d.decide(1)[0] and calls[-1] == ("someorg/big-model", True)


def test_weights_that_differ_from_the_proposal_are_a_no(tmp_path):
    d, _ = _daemon(tmp_path)
    d.box["spec"] = _spec(weights="0x" + "ab" * 32)
    support, why = d.decide(1)
    assert not support and why.startswith("my weights of minilm hash to")


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
