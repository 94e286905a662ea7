"""A node's data folder: one daemon at a time, bound to its deployment, set aside on request (nothing deleted)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from node.chain.deployment import Deployment
from node.daemon.datadir import DataDir, DataDirError


def _dep(block_hash: str, tmp_path) -> Deployment:
    d = Deployment(chain_id=31337, addresses={"NodeRegistry": "0x" + "11" * 20}, deploy_block=3, deployer="0x0",
                   block_hash=block_hash)
    d.save(tmp_path / f"dep-{block_hash[-2:]}.json")
    return d


def test_bound_to_the_first_deployment_and_refuses_another(tmp_path):
    dd = DataDir(tmp_path / "n0", "`bsns node reset --config n0.toml`")
    first, other = _dep("0x" + "aa" * 32, tmp_path), _dep("0x" + "bb" * 32, tmp_path)
    dd.bind(first)
    dd.bind(first)  # a restart against the same deployment
    with pytest.raises(DataDirError) as err:
        dd.bind(other)
    msg = str(err.value)
    assert "\n" not in msg and "holds the records of another deployment" in msg
    assert msg.endswith("`bsns node reset --config n0.toml` sets them aside")


def test_set_aside_moves_the_chain_records_and_keeps_the_log(tmp_path):
    d = tmp_path / "n0"
    (d / "blobs").mkdir(parents=True)
    for name in ("state.sqlite", "state.sqlite-wal", "txs.sqlite", "watcher.sqlite", "deployment.json",
                 "daemon.jsonl", "blobs/0xab.bin"):
        (d / name).write_text(name)
    dest = DataDir(d, "").set_aside()
    assert dest.parent == d / "retired"
    assert sorted(p.name for p in dest.iterdir()) == ["blobs", "deployment.json", "state.sqlite",
                                                      "state.sqlite-wal", "txs.sqlite", "watcher.sqlite"]
    assert (dest / "blobs" / "0xab.bin").read_text() == "blobs/0xab.bin"
    assert (d / "daemon.jsonl").exists()
    assert DataDir(d, "").set_aside() is None  # nothing left to move


def test_one_daemon_per_folder(tmp_path):
    dd = DataDir(tmp_path / "n0", "")
    dd.lock()
    code = ("import sys; from node.daemon.datadir import DataDir\n"
            "try:\n    DataDir(sys.argv[1], '').lock()\nexcept Exception as e:\n    print(e); sys.exit(3)\n")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "n0")], capture_output=True, text=True)
    assert p.returncode == 3 and "is running with the data folder" in p.stdout
    with pytest.raises(DataDirError, match="another daemon"):
        DataDir(tmp_path / "n0", "").set_aside()  # `bsns node reset` while the daemon runs
    dd.unlock()
    assert DataDir(tmp_path / "n0", "").set_aside() is None
