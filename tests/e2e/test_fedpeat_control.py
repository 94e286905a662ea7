"""FedPEAT run by the daemons and driven by `bsns fedpeat control`, end to end through the real parts.

anvil, the contracts, two node daemons as separate processes (one registered with little memory and set to
fetch its emulators over libp2p rather than build them), a FedPEAT job proposed, voted and executed like any
job; the session's proposer names another account its controller; `bsns fedpeat control` runs as a process
with that account: it refuses the wrong account first, then attaches the spec's emulators, records one plan
per round (the small device gets the largest emulator its registered memory holds, the other the full-depth
one), observes the final aggregates by hash, and prints the final accuracy. `bsns fedpeat verify-plans` checks
its record against the chain; the final adapter it scored is the session's last final hash.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.anvil]

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 2
MEMORY_MB = (95, 400)  # the spec's emulators need ~82, 91, 101, 110 MB at batch 8 x 16 tokens: node 0 holds up to 0.5


def spec_text() -> str:
    text = (ROOT / "specs" / "minilm-sst2-fedpeat.toml").read_text()
    for old, new in (("rounds = 10", f"rounds = {ROUNDS}"), ("sync_interval = 10", "sync_interval = 2"),
                     ("batch_size = 16", "batch_size = 8"), ("max_seq_len = 48", "max_seq_len = 16"),
                     ("validation_size = 872", "validation_size = 32"), ("memory_mb = [1024]", "memory_mb = [80]"),
                     ("min_replicas = 1", "min_replicas = 2")):
        assert old in text, old
        text = text.replace(old, new)
    return text


def bsns_proc(args: list[str], env: dict, **kw):
    return subprocess.Popen([sys.executable, "-m", "coordinator.cli", *args], cwd=str(ROOT), env=env,
                            stdin=subprocess.DEVNULL, **kw)


@pytest.fixture(scope="module")
def controlled(tmp_path_factory):
    from node.chain.clients import FedPeatLedgerClient
    from node.chain.keys import dev_key
    from tests.e2e.fedpeat_cluster import FedPeatCluster, cli_env, daemon_events

    if shutil.which("node") is None:
        pytest.skip("node.js is not installed")

    wd = tmp_path_factory.mktemp("fedpeat-control")
    t0 = time.monotonic()
    with FedPeatCluster(wd, nodes=2, train_limit=160, pipeline_timeout_s=30, sync_timeout_s=45, memory_mb=MEMORY_MB,
                        fetchers=(0,)) as cl:
        cl.wait_registered(240)
        spec, pid = cl.propose(spec_text())
        sid = cl.wait_for("the session to open", lambda: cl.session_of(pid), 180)
        # the proposer (dev account 0) names dev account 9 the session's controller (anvil's published keys)
        ledger = FedPeatLedgerClient(cl.w3, cl.deployment.address("FedPeatLedger"), cl.sender)
        controller = dev_key(9, cl.w3.eth.chain_id).address
        ledger.set_controller(sid, controller)
        env = cli_env(cl, wd / "home")

        # the wrong account is refused with one line, before any model is loaded
        wrong = subprocess.run([sys.executable, "-m", "coordinator.cli", "fedpeat", "control", "--session", str(sid),
                                "--dev-account", "3"], cwd=str(ROOT), env=env, capture_output=True, text=True,
                               timeout=120)
        record, summary, log = wd / "rounds.jsonl", wd / "summary.json", wd / "control.log"
        with open(log, "wb") as fh:
            proc = bsns_proc(["fedpeat", "control", "--session", str(sid), "--dev-account", "9", "--strategy", "fixed",
                              "--retention", "1.0", "--record", str(record), "--out", str(summary), "--poll", "0.5",
                              "--round-timeout", "300"], env, stdout=fh, stderr=subprocess.STDOUT)
        try:
            cl.wait_for("the controller to finish", lambda: proc.poll() is not None, 420, poll=1)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        out = log.read_text(errors="replace")
        assert proc.returncode == 0, out[-3000:]
        cl.wait_for("the session to complete", lambda: int(cl.sessions.get_session(sid).state) == 3, 120, poll=1)
        finals = [cl.sessions.final_hash(sid, r, 0) for r in range(ROUNDS)]
        verify = subprocess.run([sys.executable, "-m", "coordinator.cli", "fedpeat", "verify-plans", "--record",
                                 str(record), "--session", str(sid)], cwd=str(ROOT), env=env, capture_output=True,
                                text=True, timeout=120)
        events = {}
        for p in cl.procs:  # each daemon's own record of what it did (daemon.jsonl), by replica
            addr = dev_key(p.dev_account, cl.w3.eth.chain_id).address
            rep = cl.sessions.assignment_of(sid, addr).replica
            events[rep] = daemon_events(p, session=sid)
        yield {"cl": cl, "sid": sid, "events": events, "spec": spec, "ledger": ledger, "controller": controller, "wrong": wrong,
               "out": out, "record": record, "summary": json.loads(summary.read_text()), "finals": finals,
               "verify": verify, "seconds": time.monotonic() - t0}


def test_the_wrong_account_is_refused_with_one_line(controlled):
    s = controlled
    from node.chain.keys import dev_key

    me = dev_key(3, s["cl"].w3.eth.chain_id).address
    assert s["wrong"].returncode == 1
    assert s["wrong"].stderr.strip().splitlines() == [
        f"error: account {me} is not the controller of session {s['sid']} ({s['controller']}): use the proposer's "
        f"account or have it set this one"]


def test_one_plan_per_round_within_each_devices_memory_and_verified(controlled):
    s = controlled
    cl, sid, ledger = s["cl"], s["sid"], s["ledger"]
    recs = [json.loads(line) for line in s["record"].read_text().splitlines()]
    assert [r["round"] for r in recs] == list(range(1, ROUNDS + 1))
    members = [cl.sessions.member_at(sid, 0, rep) for rep in range(2)]
    mem = {m: cl.registry.get_node(m).memory_mb for m in members}
    for rec in recs:
        assert ledger.plan_hash_of(sid, rec["round"]) == rec["plan_hash"]
        assert rec["devices"] == members
        needs = {float(r): v for r, v in rec["needs"].items()}
        for c, addr in zip(rec["choices"], members):
            assert c["retention"] is not None and needs[c["retention"]] <= mem[addr] * 1_000_000
            assert ledger.is_attached(sid, c["emulator"])
        # the fixed strategy asked for 1.0 everywhere; the small node got the largest emulator that fits it
        # (replicas follow the order the nodes joined in, so the small node is found by its registered memory)
        fits = max(r for r, v in needs.items() if v <= min(MEMORY_MB) * 1_000_000)
        assert fits < 1.0
        assert [c["retention"] for c in rec["choices"]] == [fits if mem[a] == min(MEMORY_MB) else 1.0 for a in members]
    # the retentions travel in the events, in replica order
    logs = ledger.contract.events.RoundPlanRecorded().get_logs(from_block=cl.deployment.deploy_block)
    by_round = {ev["args"]["round"]: list(ev["args"]["retentionBps"]) for ev in logs if ev["args"]["sessionId"] == sid}
    assert by_round == {rec["round"]: [round(c["retention"] * 10_000) for c in rec["choices"]] for rec in recs}
    assert s["verify"].returncode == 0, s["verify"].stderr
    assert s["verify"].stdout.strip() == f"{ROUNDS} round plans match session {sid} on chain"


def test_the_daemons_obeyed_the_plans(controlled):
    s = controlled
    recs = [json.loads(line) for line in s["record"].read_text().splitlines()]
    for rec in recs:
        rnd = rec["round"] - 1  # session round r obeys ledger plan r + 1
        for c in rec["choices"]:
            trained = [e for e in s["events"][c["device"]] if e["event"] == "round_trained" and e["round"] == rnd]
            assert len(trained) == 1, s["events"][c["device"]][-20:]
            assert (trained[0]["retention"], trained[0]["emulator"]) == (c["retention"], c["emulator"])
    # node 0 (replica of the small node) never built an emulator from local weights: it fetched each by hash
    small = [p for p in s["cl"].procs if p.index == 0][0]
    from node.chain.keys import dev_key

    rep = s["cl"].sessions.assignment_of(s["sid"], dev_key(small.dev_account, s["cl"].w3.eth.chain_id).address).replica
    kinds = {e["event"] for e in s["events"][rep]}
    assert "emulator_built" not in kinds
    used = {c["emulator"] for rec in recs for c in rec["choices"] if c["device"] == rep}
    assert used and used <= {e["hash"] for e in s["events"][rep] if e["event"] == "emulator_fetched"}


def test_the_controller_observed_the_chains_final_adapters_and_scored_the_last(controlled):
    s = controlled
    recs = [json.loads(line) for line in s["record"].read_text().splitlines()]
    assert recs[0]["observed_adapter"] is None
    for t in range(2, ROUNDS + 1):  # ledger round t observed the final aggregate of session round t - 2
        assert recs[t - 1]["observed_adapter"] == s["finals"][t - 2]
    summ = s["summary"]
    assert summ["final_adapter"] == s["finals"][-1]
    assert summ["final"]["loss"] != summ["initial"]["loss"]  # the daemons trained
    assert f"final accuracy {summ['final']['accuracy']:.4f}" in s["out"]
    print(f"fedpeat control e2e: {s['seconds']:.0f} s")
