"""Every PEFT method and aggregation rule the README offers, through real daemons: anvil, the contracts, three
daemons as separate processes, libp2p.

One cluster runs four small sessions one after another (a daemon trains one session at a time):

- IA3 with the median rule and prefix tuning with the trimmed mean, each on one shard of all six layers held by
  three replicas: every round's final hash is recomputed here from the three replicas' own local updates (read
  from their state and blob files) with torch's median, independently of ``node.train.aggregate``;
- prompt tuning on two shards (the soft prompt lengthens the sequence across the pipeline), then fetched with
  `bsns adapter fetch` from the peers that serve it, every hash checked against the chain;
- Pfeiffer adapters on one shard with FedAvg.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.anvil]

ROOT = Path(__file__).resolve().parents[2]
TRAIN_LIMIT = 96
ROUNDS = 2
SMALL = dict(rounds=ROUNDS, sync_interval=3, batch_size=8, micro_batches=1, max_seq_len=16, validation_size=32)
ONE_SHARD = [[0, 6]]
SESSIONS = {
    "ia3-median": dict(method="ia3", method_config="{}", layers=ONE_SHARD, min_replicas=3, aggregation="median"),
    "prefix-trimmed": dict(method="prefix", method_config="{ num_virtual_tokens = 4 }", layers=ONE_SHARD,
                           min_replicas=3, aggregation="trimmed-mean", trim_fraction=0.34),
    "prompt-2-shards": dict(method="prompt", method_config="{ num_virtual_tokens = 4 }", layers=[[0, 3], [3, 6]]),
    "pfeiffer": dict(method="pfeiffer", method_config="{ bottleneck_size = 8 }", layers=ONE_SHARD, min_replicas=3),
}


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    from coordinator.cluster import Cluster
    from coordinator.demo import demo_spec_text

    if shutil.which("node") is None:
        pytest.skip("node.js is not installed")
    wd = tmp_path_factory.mktemp("methods")
    done = {}
    with Cluster(wd, nodes=3, train_limit=TRAIN_LIMIT, pipeline_timeout_s=30, sync_timeout_s=45) as cl:
        cl.wait_registered(240)
        for name, over in SESSIONS.items():
            spec, pid = cl.propose(demo_spec_text(**SMALL, **over))
            sid = cl.wait_for(f"session {name} to open", lambda: cl.session_of(pid), 180)
            cl.wait_for(f"session {name} to complete", lambda: int(cl.sessions.get_session(sid).state) == 3, 400,
                        poll=1)
            aid = cl.wait_for(f"session {name}'s adapter to be published", lambda: cl.adapters.adapter_of_session(sid),
                              120)
            finals = {(r, s): cl.sessions.final_hash(sid, r, s) for r in range(ROUNDS) for s in range(spec.num_shards)}
            done[name] = {"spec": spec, "sid": sid, "aid": aid, "finals": finals}
        # the blob fetch's success path, as a user runs it, while the serving daemons are up
        out = wd / "fetched"
        res = subprocess.run([sys.executable, "-m", "coordinator.cli", "adapter", "fetch",
                              str(done["prompt-2-shards"]["aid"]), "--out", str(out), "--rpc", cl.chain.url,
                              "--deployment", str(cl.deployment_path)],
                             capture_output=True, text=True, timeout=300, cwd=ROOT,
                             env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"))
        yield {"cl": cl, "done": done, "fetch": res, "fetched": out}


def _local_updates(cl, sid: int, rnd: int) -> list[bytes]:
    """Each replica's own local update of the round, read from its node's state and blob files."""
    out = []
    for p in cl.procs:
        rows = cl.node_rows(p, "SELECT local_hash FROM rounds WHERE session_id=? AND shard=0 AND round=?", (sid, rnd))
        if rows and rows[0]["local_hash"]:
            out.append((p.data_dir / "blobs" / f"{rows[0]['local_hash'][2:]}.bin").read_bytes())
    return out


@pytest.mark.parametrize("name", ["ia3-median", "prefix-trimmed"])
def test_robust_rules_give_the_coordinate_wise_median_of_the_replicas(sessions, name):
    """With three replicas the median and a trimmed mean that drops one value at each end both keep the middle
    value of every coordinate: recomputed here from the replicas' updates, it is the round's final hash."""
    import torch
    from safetensors.torch import load

    from node.hashing import keccak_hex
    from node.train.adapter_state import canonical_bytes

    s, cl = sessions["done"][name], sessions["cl"]
    for rnd in range(ROUNDS):
        updates = [load(b) for b in _local_updates(cl, s["sid"], rnd)]
        assert len(updates) == 3, f"round {rnd}: {len(updates)} local updates on disk"
        middle = {k: torch.stack([u[k] for u in updates]).median(dim=0).values for k in updates[0]}
        assert keccak_hex(canonical_bytes(middle)) == s["finals"][(rnd, 0)]
        assert len({keccak_hex(canonical_bytes(u)) for u in updates}) == 3  # the replicas did differ


def test_every_method_session_completes_and_publishes_its_final_hashes(sessions):
    for name, s in sessions["done"].items():
        rec = sessions["cl"].adapters.get_adapter(s["aid"]).record
        last = {sh: h for (r, sh), h in s["finals"].items() if r == ROUNDS - 1}
        assert list(rec.shard_hashes) == [last[sh] for sh in sorted(last)], name
        assert rec.method == s["spec"].method.name and rec.accuracy_bps > 0, name


def test_adapter_fetch_cli_gets_the_prompt_adapter_from_the_peers(sessions):
    from node.train.adapter_state import file_adapter_hash

    res, out = sessions["fetch"], sessions["fetched"]
    s = sessions["done"]["prompt-2-shards"]
    assert res.returncode == 0, res.stderr[-2000:]
    shard_files = [out / f"shard{k}.safetensors" for k in range(2)]
    assert [file_adapter_hash(f) for f in shard_files] == [s["finals"][(ROUNDS - 1, k)] for k in range(2)]
    assert (out / "manifest.json").exists() and (out / "export" / "adapter_config.json").exists()
