"""FedPEAT run by the node daemons, end to end through the real parts: anvil, the contracts, three daemons as
separate processes, libp2p, MiniLM on SST-2.

Node 0 builds its emulators from its local weights and serves them; nodes 1 and 2 have
``[fedpeat] fetch_emulators = true``: they fetch every emulator by its on-chain hash from session peers over
libp2p and rebuild it from the blob alone. The controller is ``bsns fedpeat control`` as its own process with
the proposer's account (anvil's dev account 0): it builds the spec's emulators, registers and attaches them in
FedPeatLedger and records one plan per ledger round. Its random strategy is seeded so that the plans hold
different retentions per device, a sit-out (0) and the whole model (1.0) in each round.
"""

import json
import shutil

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.anvil]

import os
import subprocess
import sys

from node.hashing import keccak_hex  # noqa: E402
from tests.daemon.specs import LORA, sst2_spec  # noqa: E402
from tests.e2e.fedpeat_cluster import daemon_events as _events  # noqa: E402

TRAIN_LIMIT = 200
FETCHERS = (1, 2)                                  # node indices with fetch_emulators = true
# coordinator.fedpeat.ppo.RandomPolicy with p = 0.67 and seed 0 plans, for 3 devices and options
# [0.5, 1.0]: round 1 [0.5, -, 1.0], round 2 [-, 0.5, 1.0] (the test checks what is on chain, not this list)
CONTROL = ["--strategy", "random", "--random-p", "0.67", "--seed", "0", "--eval-size", "32", "--poll", "0.5",
           "--round-timeout", "300"]

SPEC = sst2_spec("e2e-fedpeat", method="lora", config=LORA, layers=[[0, 6]], memory_mb=[1024], task={"num_labels": 2},
                 shards={"min_replicas": 3}, fedpeat={"options": [0.5, 1.0]},
                 training={"rounds": 2, "sync_interval": 3, "batch_size": 8, "learning_rate": 0.001, "seed": 1})


@pytest.fixture(scope="module")
def fedpeat_session(tmp_path_factory):
    import torch
    from node.chain.clients import FedPeatLedgerClient
    from node.emulator import emulator_for_spec
    from node.train.build import load_full_model
    from tests.e2e.fedpeat_cluster import FedPeatCluster

    torch.set_num_threads(1)
    if shutil.which("node") is None:
        pytest.skip("node.js is not installed")

    wd = tmp_path_factory.mktemp("fedpeat-e2e")
    with FedPeatCluster(wd, nodes=3, train_limit=TRAIN_LIMIT, sync_timeout_s=45, commit_timeout_blocks=120,
                        fetchers=FETCHERS) as cl:
        ledger = FedPeatLedgerClient(cl.w3, cl.deployment.address("FedPeatLedger"), cl.sender)
        cl.wait_registered(240)
        spec, pid = cl.propose(SPEC)
        sid = cl.wait_for("the session to open", lambda: cl.session_of(pid), 180)
        record = wd / "rounds.jsonl"
        chain_args = ["--rpc", cl.chain.url, "--deployment", str(cl.deployment_path)]
        # its own BSNS_HOME: the CLI's transaction journal is per chain id and account, and a journal left by an
        # earlier anvil (same id 31337) would be replayed onto this fresh one
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "BSNS_HOME": str(wd / "home")}
        with open(wd / "control.log", "wb") as log:
            ctl = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "fedpeat", "control", "--session", str(sid),
                                    *CONTROL, "--record", str(record), "--out", str(wd / "control.json"),
                                    "--dev-account", "0", *chain_args],
                                   stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            cl.wait_for("the session to complete", lambda: int(cl.sessions.get_session(sid).state) == 3, 400, poll=1)
            rc = ctl.wait(timeout=180)
        finally:
            if ctl.poll() is None:
                ctl.kill()
                ctl.wait()
        assert rc == 0, (wd / "control.log").read_text()[-3000:]
        verify = subprocess.run([sys.executable, "-m", "coordinator.cli", "fedpeat", "verify-plans", "--record",
                                 str(record), "--session", str(sid), *chain_args], capture_output=True, text=True,
                                env=env, timeout=120)
        plans = {t: list(ledger.round_plan(sid, t, from_block=cl.sessions.get_session(sid).opened_block).retention_bps)
                 for t in range(1, spec.training.rounds + 1)}
        base = load_full_model(spec)
        emus = {bps: emulator_for_spec(spec, bps / 10_000, base=base) for bps in (5000, 10000)}
        aid = cl.wait_for("the adapter to be published", lambda: cl.adapters.adapter_of_session(sid), 120)
        replica_of = {p.index: cl.sessions.assignment_of(sid, p.address).replica for p in cl.procs}
        finals = [cl.sessions.final_hash(sid, r, 0) for r in range(spec.training.rounds)]
        opened = cl.sessions.get_session(sid).opened_block
        commits = [dict(lg["args"]) for lg in
                   cl.sessions.contract.events.Committed().get_logs(from_block=opened, to_block="latest")
                   if lg["args"]["sessionId"] == sid]
        def all_checkpointed():
            return all(len(cl.node_rows(p, "SELECT round FROM checkpoints WHERE session_id=?", (sid,)))
                       == spec.training.rounds for p in cl.procs)
        cl.wait_for("every daemon to checkpoint the last round", all_checkpointed, 60)
        checkpoints = {p.index: {r["round"]: r["adapter_hash"] for r in
                                 cl.node_rows(p, "SELECT round, adapter_hash FROM checkpoints WHERE session_id=?", (sid,))}
                       for p in cl.procs}
        losses = {p.index: cl.node_rows(p, "SELECT round, step FROM losses WHERE session_id=?", (sid,)) for p in cl.procs}
        blob = (cl.procs[0].data_dir / "blobs" / f"{finals[-1][2:]}.bin").read_bytes()
        yield {"cl": cl, "spec": spec, "sid": sid, "aid": aid, "ledger": ledger, "emus": emus, "base": base,
               "plans": plans, "verify": verify, "control": json.loads((wd / "control.json").read_text()),
               "replica_of": replica_of, "finals": finals, "commits": commits, "checkpoints": checkpoints,
               "losses": losses, "final_blob": blob, "opened": opened}


def test_every_round_final_and_checkpointed_by_every_daemon(fedpeat_session):
    s = fedpeat_session
    assert all(h is not None for h in s["finals"])
    for idx, ck in s["checkpoints"].items():
        assert [ck.get(r) for r in range(len(s["finals"]))] == s["finals"], idx
    rec = s["cl"].adapters.get_adapter(s["aid"])
    assert list(rec.record.shard_hashes) == [s["finals"][-1]]


def test_controller_plans_on_chain_hold_sit_outs_and_the_whole_model(fedpeat_session):
    s = fedpeat_session
    assert s["verify"].returncode == 0, s["verify"].stdout + s["verify"].stderr   # the record matches the chain
    for t, plan in s["plans"].items():
        assert len(plan) == 3 and 0 in plan and any(b > 0 for b in plan), (t, plan)
        rec = s["control"]["records"][t - 1]
        assert [0 if c["retention"] is None else round(c["retention"] * 10_000) for c in rec["choices"]] == plan
    flat = [b for plan in s["plans"].values() for b in plan]
    assert 10_000 in flat and 5_000 in flat
    # the emulators the controller attached are the ones emulator_for_spec builds in this process
    att = s["ledger"].attached_emulators(s["sid"], from_block=s["opened"])
    assert sorted((a.retention_bps, a.emulator_hash) for a in att) == sorted((b, e.hash()) for b, e in s["emus"].items())
    assert s["control"]["final_adapter"] == s["finals"][-1]


def test_plan_obeyed_sit_outs_train_nothing_and_commit_the_aggregate(fedpeat_session):
    from node.daemon.ports import ZERO_HASH

    s = fedpeat_session
    cl = s["cl"]
    node_of = {rep: idx for idx, rep in s["replica_of"].items()}
    replica_of_addr = {_address(p).lower(): s["replica_of"][p.index] for p in cl.procs}
    sat_out_commits = 0
    for t, plan in s["plans"].items():
        rnd = t - 1
        for rep, bps in enumerate(plan):
            p = cl.procs[node_of[rep]]
            steps = [x for x in s["losses"][p.index] if x["round"] == rnd]
            starts = [e for e in _events(p, "round_start") if e["round"] == rnd]
            if bps == 0:
                assert steps == [] and starts == [], (rnd, rep)
                assert [e for e in _events(p, "sat_out") if e["round"] == rnd]
            else:
                assert len(steps) == s["spec"].training.sync_interval, (rnd, rep)
                assert starts[-1]["retention"] == bps / 10_000
                assert starts[-1]["emulator"] == s["emus"][bps].hash()
        for c in (c for c in s["commits"] if c["round"] == rnd):
            rep = replica_of_addr[c["node"].lower()]
            local = "0x" + bytes(c["localUpdateHash"]).hex()
            assert "0x" + bytes(c["aggregateHash"]).hex() == s["finals"][rnd]   # every commit is the final
            assert (local == ZERO_HASH) == (plan[rep] == 0), (rnd, rep)       # zero local update: sat out
            sat_out_commits += local == ZERO_HASH
    assert sat_out_commits >= 1                   # a sit-out's agreement is on chain, not only the trainers'


def _address(p):

    return p.address


def test_fetching_daemons_receive_and_verify_emulators_over_libp2p(fedpeat_session):
    s = fedpeat_session
    cl = s["cl"]
    hashes = {e.hash(): len(e.manifest.to_json()) for e in s["emus"].values()}
    built = {e["hash"] for e in _events(cl.procs[0], "emulator_built")}
    assert built == set(hashes)                                   # the building node serves every emulator
    for idx in FETCHERS:
        p = cl.procs[idx]
        assert not _events(p, "emulator_built")
        got = _events(p, "emulator_fetched")
        assert got, f"node{idx} fetched no emulator"
        for e in got:
            assert e["hash"] in hashes and e["bytes"] > 50_000_000  # the weights travelled, not a reference
        assert not _events(p, "emulator_refused")
        # what the node keeps is what the chain names: re-hashed here, not taken from the daemon's own log
        cached = {keccak_hex(f.read_bytes()): f for f in (p.data_dir / "emulators").glob("*.bin")}
        assert set(cached) == {e["hash"] for e in got}
        assert all(f.stem == h[2:] for h, f in cached.items())


def test_final_adapter_plugs_into_the_full_model(fedpeat_session):
    import copy

    import torch

    from node.train.build import adapt
    from node.hashing import keccak_hex
    from node.train.build import build_data
    from node.train.evaluate import evaluate
    from node.train.step import forward
    from node.train.adapter_state import state_from_bytes
    from node.tuners import load_adapter_state_dict

    s = fedpeat_session
    spec = s["spec"]
    assert keccak_hex(s["final_blob"]) == s["finals"][-1]
    fresh = adapt(spec, copy.deepcopy(s["base"]))
    full = adapt(spec, copy.deepcopy(s["base"]))
    load_adapter_state_dict(full, state_from_bytes(s["final_blob"]))  # strict: every key and shape of the full model
    data = build_data(spec, train_limit=TRAIN_LIMIT)
    batch = data.val.collate(list(range(8)))
    with torch.no_grad():
        before, after = forward(fresh, batch, "cpu"), forward(full, batch, "cpu")
        metrics = evaluate(full, data.val, spec.task.kind, "cpu")
    assert not torch.allclose(before, after)                      # the trained adapters act in the full model
    assert metrics["loss"] > 0 and len(data.val) == spec.data.validation_size
