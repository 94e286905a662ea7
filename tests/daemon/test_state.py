"""The daemon's durable state: survives a reopen, blobs are content-addressed and verified, config errors name the field."""

import pytest
import torch

from node.daemon.config import ConfigError, NodeConfig
from node.daemon.state import StateError, StateStore


def test_sessions_rounds_votes_survive_reopen(tmp_path):
    s = StateStore(tmp_path)
    s.record_vote(3, True, "fits", "0xabc")
    s.upsert_session(1, proposal_id=3, spec_toml="name='x'")
    s.upsert_session(1, shard=1, replica=0, replicas=2, status="training")
    s.upsert_round(1, 1, 0, status="committed", local_hash="0x01", aggregate_hash="0x02", samples=64)
    s.record_loss(1, 0, 5, 0.69, 0.1)
    s.close()

    s = StateStore(tmp_path)
    assert s.vote_of(3)["support"] == 1 and s.vote_of(4) is None
    sess = s.session(1)
    assert (sess["shard"], sess["replica"], sess["replicas"], sess["status"]) == (1, 0, 2, "training")
    r = s.round(1, 1, 0)
    assert (r["status"], r["aggregate_hash"], r["samples"]) == ("committed", "0x02", 64)
    assert s.losses(1)[0]["loss"] == pytest.approx(0.69)
    with pytest.raises(StateError, match="proposal id and spec"):
        s.upsert_session(9, status="joined")


def test_blobs_are_verified_and_checkpoints_point_at_complete_files(tmp_path):
    s = StateStore(tmp_path)
    h = s.put_blob(b"adapter bytes")
    assert s.get_blob(h) == b"adapter bytes" and h in s.blob_hashes()
    s.blob_path(h).write_bytes(b"torn")           # a corrupted file is dropped, never returned
    assert s.get_blob(h) is None and not s.blob_path(h).exists()

    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p])
    p.grad = torch.ones(3)
    opt.step()
    s.save_checkpoint(1, 0, b"round0", opt.state_dict(), step=10)
    s.save_checkpoint(1, 1, b"round1", opt.state_dict(), step=20)
    ck = s.latest_checkpoint(1)
    assert (ck.round, ck.step) == (1, 20) and s.get_blob(ck.adapter_hash) == b"round1"
    st = s.load_optimizer_state(ck)
    assert torch.equal(st["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert s.latest_checkpoint(2) is None


def test_config_errors_name_the_field(tmp_path):
    p = tmp_path / "node.toml"
    p.write_text('[chain]\ndeployment = "d.json"\n[identity]\ndev_account = 1\n[storage]\ndata_dir = "st"\n')
    cfg = NodeConfig.from_toml(p)
    assert cfg.data_dir == tmp_path / "st" and cfg.policy.vote == "auto"
    p.write_text('[chain]\ndeployment = "d.json"\n[identity]\ndev_account = 1\nkeystore = "k"\n')
    with pytest.raises(ConfigError, match="identity: Value error, give exactly one"):
        NodeConfig.from_toml(p)
    p.write_text('[chain]\ndeployment = "d.json"\n[identity]\ndev_account = 1\n[resources]\ndevice = "tpu"\n')
    with pytest.raises(ConfigError, match="resources.device"):
        NodeConfig.from_toml(p)
    with pytest.raises(ConfigError, match="cannot read"):
        NodeConfig.from_toml(tmp_path / "missing.toml")
