"""FedPEAT cases 2 and 3 run by the node daemons, end to end through the real parts: one anvil, one deployment,
two daemons as processes (started once), libp2p, MiniLM on SST-2, and ``bsns fedpeat control`` as its own
process for each of two jobs proposed, voted and executed one after the other.

- **case 2** (one shared emulator, retention 0.5; options 0.25 and 0.5): node 0 registers less memory than
  that emulator needs but more than the 0.25 one needs, so it sits out every round rather than getting the
  smaller emulator; node 1 trains on the shared one.
- **case 3** (no emulator but the whole model, retention 1.0): node 0's owner first declares more memory in
  the NodeRegistry (``update``: the controller reads the registered memory when its session starts), so both
  devices train on the full model; node 0 has ``[fedpeat] fetch_emulators = true`` and receives it from node 1
  over libp2p by its on-chain hash.

For both: every round is final and equal to each daemon's checkpoint, ``bsns fedpeat verify-plans`` accepts
the controller's record, and the publishing daemon put a positive accuracy on chain (AdapterRegistry).
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from node.hashing import keccak_hex
from tests.daemon.specs import LORA, sst2_spec

pytestmark = [pytest.mark.slow, pytest.mark.anvil]

ROUNDS = 2
SMALL, BIG = 0, 1                      # node indices; node 0 fetches its emulators
TRAIN_LIMIT = 160
TRAINING = {"rounds": ROUNDS, "sync_interval": 2, "batch_size": 8, "learning_rate": 0.001, "seed": 1}
CONTROL = ["--dev-account", "0", "--eval-size", "32", "--poll", "0.5", "--round-timeout", "240"]


def case_spec(case: int, fedpeat: dict, memory_mb: int) -> str:
    return sst2_spec(f"e2e-fedpeat-case{case}", method="lora", config=LORA, layers=[[0, 6]], memory_mb=[memory_mb],
                     task={"num_labels": 2}, shards={"min_replicas": 2}, fedpeat={"case": case, **fedpeat},
                     training=TRAINING)


CASE2 = {"options": [0.25, 0.5], "shared_retention": 0.5}
CASE3 = {"options": [1.0]}


def _run_case(cl, wd, spec_text: str, name: str, env: dict) -> dict:
    """Propose, let the daemons vote/join/train under ``bsns fedpeat control``, and collect what the chain and
    the daemons recorded."""
    from node.chain.clients import FedPeatLedgerClient
    from tests.e2e.fedpeat_cluster import daemon_events, start_control, stop_process, verify_plans

    t0 = time.monotonic()
    spec, pid = cl.propose(spec_text)
    sid = cl.wait_for(f"{name}: the session to open", lambda: cl.session_of(pid), 180)
    record, summary, log = wd / f"{name}-rounds.jsonl", wd / f"{name}-summary.json", wd / f"{name}-control.log"
    # case 2 and 3 fix the strategy (the shared emulator / the full model for everyone): no strategy flag
    ctl = start_control(cl, sid, [*CONTROL, "--record", str(record), "--out", str(summary)], env, log)
    try:
        cl.wait_for(f"{name}: the controller to finish", lambda: ctl.poll() is not None, 400, poll=1)
    finally:
        stop_process(ctl)
    assert ctl.returncode == 0, log.read_text(errors="replace")[-3000:]
    cl.wait_for(f"{name}: the session to complete", lambda: int(cl.sessions.get_session(sid).state) == 3, 60, poll=1)
    verify = verify_plans(sid, record, env)
    aid = cl.wait_for(f"{name}: the adapter to be published", lambda: cl.adapters.adapter_of_session(sid), 120)

    def done():  # both daemons left the session (the next proposal needs their votes)
        return all(daemon_events(p, "session_done", sid) for p in cl.procs)
    cl.wait_for(f"{name}: both daemons to finish the session", done, 120)
    ledger = FedPeatLedgerClient(cl.w3, cl.deployment.address("FedPeatLedger"), cl.sender)
    opened = cl.sessions.get_session(sid).opened_block
    replica = {p.index: cl.sessions.assignment_of(sid, p.address).replica for p in cl.procs}
    replica_of_address = {p.address.lower(): replica[p.index] for p in cl.procs}
    commits = [dict(lg["args"]) for lg in
               cl.sessions.contract.events.Committed().get_logs(from_block=opened, to_block="latest")
               if lg["args"]["sessionId"] == sid]
    return {
        "spec": spec, "sid": sid, "aid": aid, "verify": verify, "replica": replica, "commits": commits,
        "replica_of_address": replica_of_address,
        "records": [json.loads(line) for line in record.read_text().splitlines()],
        "summary": json.loads(summary.read_text()),
        "plans": {t: list(ledger.round_plan(sid, t, from_block=opened).retention_bps) for t in range(1, ROUNDS + 1)},
        "attached": [(a.retention_bps, a.emulator_hash) for a in ledger.attached_emulators(sid, from_block=opened)],
        "finals": [cl.sessions.final_hash(sid, r, 0) for r in range(ROUNDS)],
        "checkpoints": {p.index: {r["round"]: r["adapter_hash"] for r in cl.node_rows(
            p, "SELECT round, adapter_hash FROM checkpoints WHERE session_id=?", (sid,))} for p in cl.procs},
        "events": {p.index: daemon_events(p, session=sid) for p in cl.procs},
        "adapter": cl.adapters.get_adapter(aid),
        "seconds": time.monotonic() - t0,
    }


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    import torch

    from coordinator.proposals import prepare_spec
    from coordinator.fedpeat.control import RealSpecModels
    from node.chain.clients import NodeRegistryClient
    from node.chain.keys import dev_key
    from node.chain.sender import TxSender
    from node.emulator import emulator_for_spec
    from node.train.build import load_full_model
    from tests.e2e.fedpeat_cluster import FedPeatCluster, cli_env

    torch.set_num_threads(1)
    if shutil.which("node") is None:
        pytest.skip("node.js is not installed")
    wd = tmp_path_factory.mktemp("fedpeat-cases")
    t0 = time.monotonic()
    # the small node's memory sits between what the 0.25 and the shared 0.5 emulator need to train (measured here
    # as the controller measures them: ~77 and ~87 MB at batch 8 x 16 tokens on this CPU)
    probe = wd / "probe.toml"
    probe.write_text(case_spec(2, CASE2, 1))
    need = RealSpecModels.build(prepare_spec(probe)).memory_need
    small_mb = int((need[0.25] + need[0.5]) / 2 / 1_000_000)
    assert need[0.25] < small_mb * 1_000_000 < need[0.5], need
    with FedPeatCluster(wd, nodes=2, train_limit=TRAIN_LIMIT, pipeline_timeout_s=30, sync_timeout_s=45,
                        memory_mb=(small_mb, 1000), fetchers=(SMALL,)) as cl:
        cl.wait_registered(240)
        env = cli_env(cl, wd / "home")
        out = {"need": need, "small_mb": small_mb}
        out[2] = _run_case(cl, wd, case_spec(2, CASE2, small_mb), "case2", env)
        # node 0's owner declares more memory (anvil's published dev key of node 0, local chain only)
        small = cl.procs[SMALL]
        key = dev_key(small.dev_account, cl.w3.eth.chain_id)
        sender = TxSender(cl.w3, key.private_key, db_path=wd / "node0-owner-txs.sqlite")
        try:
            reg = NodeRegistryClient(cl.w3, cl.deployment.address("NodeRegistry"), sender)
            info = reg.get_node(small.address)
            reg.update(info.peer_id, info.announce_addr, 1000, info.device_kind, info.throughput)
        finally:
            sender.close()
        out[3] = _run_case(cl, wd, case_spec(3, CASE3, small_mb), "case3", env)
        base = load_full_model(out[2]["spec"])
        out["emulators"] = {2: emulator_for_spec(out[2]["spec"], 0.5, base=base),
                            3: emulator_for_spec(out[3]["spec"], 1.0, base=base)}
        out["cl"] = cl
        out["seconds"] = time.monotonic() - t0
        yield out


def _trained(events: list[dict], rnd: int) -> list[dict]:
    return [e for e in events if e.get("event") == "round_trained" and e.get("round") == rnd]


def _started(events: list[dict], rnd: int) -> list[dict]:
    return [e for e in events if e.get("event") == "round_start" and e.get("round") == rnd]


@pytest.mark.parametrize("case", [2, 3])
def test_every_round_final_checkpointed_verified_and_published_with_accuracy(cases, case):
    s = cases[case]
    assert all(h is not None for h in s["finals"]), s["finals"]
    for idx, ck in s["checkpoints"].items():
        assert [ck.get(r) for r in range(ROUNDS)] == s["finals"], idx
    for c in s["commits"]:  # every commit on chain is the round's final aggregate
        assert "0x" + bytes(c["aggregateHash"]).hex() == s["finals"][c["round"]]
    assert s["verify"].returncode == 0, s["verify"].stdout + s["verify"].stderr
    assert s["verify"].stdout.strip() == f"{ROUNDS} round plans match session {s['sid']} on chain"
    assert s["summary"]["final_adapter"] == s["finals"][-1]
    rec = s["adapter"].record
    assert rec.session_id == s["sid"] and list(rec.shard_hashes) == [s["finals"][-1]]
    assert rec.accuracy_bps > 0                       # the publishing daemon evaluated the final adapter
    metrics = json.loads(rec.metrics_uri.split(",", 1)[1])
    assert round(10_000 * metrics["accuracy"]) == rec.accuracy_bps
    # the controller scored the same final adapter in its own process: the same figures
    final = s["summary"]["final"]
    assert metrics["accuracy"] == final["accuracy"] and abs(metrics["loss"] - final["loss"]) < 1e-4, (metrics, final)
    print(f"case {case}: {s['seconds']:.0f} s, published accuracy {rec.accuracy_bps / 100:.2f}%")


def test_case2_one_shared_emulator_and_a_device_it_does_not_fit_sits_out(cases):
    from node.daemon.ports import ZERO_HASH

    s, shared = cases[2], cases["emulators"][2]
    small_rep, big_rep = s["replica"][SMALL], s["replica"][BIG]
    # the one emulator attached to the session is the shared one, as emulator_for_spec builds it
    assert s["attached"] == [(5000, shared.hash())]
    assert shared.manifest.retention == 0.5 and len(shared.manifest.kept_layers) < 6
    for t, plan in s["plans"].items():
        assert set(plan) <= {0, 5000}, (t, plan)
        assert plan[small_rep] == 0 and plan[big_rep] == 5000, (t, plan)
        rec = s["records"][t - 1]
        # the small device would hold the 0.25 emulator, but case 2 has only the shared one: it sits out
        needs = {float(r): v for r, v in rec["needs"].items()}
        assert needs[0.25] <= rec["capacities"][small_rep] < needs[0.5]
        assert rec["wanted"][small_rep] == 0.5
    zero_commits = 0
    for rnd in range(ROUNDS):
        big = s["events"][BIG]
        assert [(e["retention"], e["emulator"]) for e in _trained(big, rnd)] == [(0.5, shared.hash())]
        assert _started(big, rnd)[-1]["layers"] == list(shared.manifest.kept_layers)
        small = s["events"][SMALL]
        assert not _trained(small, rnd) and not _started(small, rnd)
        assert [e for e in small if e.get("event") == "sat_out" and e.get("round") == rnd]
        for c in (c for c in s["commits"] if c["round"] == rnd):
            local = "0x" + bytes(c["localUpdateHash"]).hex()
            rep = s["replica_of_address"][c["node"].lower()]
            assert (local == ZERO_HASH) == (rep == small_rep)
            zero_commits += local == ZERO_HASH
    assert zero_commits >= 1                          # the sit-out's agreement is on chain too
    for idx in (SMALL, BIG):                          # no other emulator was built, fetched or trained on
        hashes = {e["hash"] for e in s["events"][idx] if e.get("event") in ("emulator_built", "emulator_fetched")}
        assert hashes <= {shared.hash()}, idx


def test_case3_every_device_trains_on_the_full_model_the_fetcher_gets_it_by_hash(cases):
    s, full = cases[3], cases["emulators"][3]
    # the only emulator is the whole model: retention 1.0, every layer kept
    assert s["attached"] == [(10_000, full.hash())]
    assert list(full.manifest.kept_layers) == list(range(6))
    for t, plan in s["plans"].items():
        assert plan == [10_000, 10_000], (t, plan)
        # the controller read node 0's memory as updated in the NodeRegistry, which holds the full model
        rec = s["records"][t - 1]
        assert rec["capacities"][s["replica"][SMALL]] == 1000 * 1_000_000 >= rec["needs"]["1.0"]
    for rnd in range(ROUNDS):
        for idx in (SMALL, BIG):
            ev = s["events"][idx]
            assert [(e["retention"], e["emulator"]) for e in _trained(ev, rnd)] == [(1.0, full.hash())], (idx, rnd)
            assert _started(ev, rnd)[-1]["layers"] == list(range(6))
    # node 0 never built it: it received the blob from node 1 over libp2p and checked it against the chain's hash
    small, big = s["events"][SMALL], s["events"][BIG]
    assert not [e for e in small if e.get("event") == "emulator_built"]
    got = [e for e in small if e.get("event") == "emulator_fetched"]
    assert [e["hash"] for e in got] == [full.hash()]
    assert got[0]["bytes"] > 50_000_000                                   # the weights travelled
    assert not [e for e in small if e.get("event") == "emulator_refused"]
    assert [e["hash"] for e in big if e.get("event") == "emulator_built"] == [full.hash()]
    cached = (cases["cl"].procs[SMALL].data_dir / "emulators" / f"{full.hash()[2:]}.bin").read_bytes()
    assert len(cached) == got[0]["bytes"] and keccak_hex(cached) == full.hash()  # re-hashed here, not taken on trust

