"""FedPEAT on a real anvil through the real CLI: deploy, register, propose / vote / execute a session, then
`bsns fedpeat run --session` at tiny size (real MiniLM, real SST-2, real LoRA rounds) registers and attaches
the run's emulators and records each round's plan; the plan hashes on chain equal the local records', and
the retentions in the events are the devices' choices. Refusals come before any training and send nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.cli import bsns

pytestmark = [pytest.mark.anvil, pytest.mark.slow]
SPEC = Path(__file__).resolve().parents[1] / "chain" / "fixtures" / "job.toml"  # MiniLM, 2 rounds
TINY = ["--devices", "2", "--rounds", "2", "--local-steps", "1", "--options", "0.25,0.5", "--strategy", "list",
        "--device-retentions", "0.25,0.5", "--train-limit", "64", "--eval-size", "16", "--max-length", "32"]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """anvil, `bsns deploy`, one node, a job proposed by dev account 2, voted and executed: (clients, session id)."""
    from coordinator.localchain import throwaway_anvil
    from node.chain.clients import Clients
    from node.chain.deployment import Deployment
    from node.chain.rpc import connect

    home = tmp_path_factory.mktemp("bsns-home")
    with throwaway_anvil() as chain, pytest.MonkeyPatch.context() as mp:
        mp.setenv("BSNS_HOME", str(home))
        mp.setenv("BSNS_RPC", chain.url)
        mp.setenv("BSNS_DEPLOYMENT", str(home / "deployment.json"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv("BSNS_DEV_ACCOUNT", raising=False)
        code, out = bsns("deploy", "--dev-account", "0", "--voting-delay", "0", "--voting-period", "3")
        assert code == 0, out
        code, out = bsns("node", "register", "--dev-account", "1", "--memory-mb", "2000", "--announce",
                         "/ip4/127.0.0.1/tcp/4101")
        assert code == 0, out
        code, out = bsns("propose", str(SPEC), "--dev-account", "2")
        assert code == 0, out
        pid = re.search(r"proposal (\d+) created", out).group(1)
        assert bsns("vote", pid, "for", "--dev-account", "1")[0] == 0
        w3 = connect(chain.url)
        w3.provider.make_request("anvil_mine", [hex(4)])
        code, out = bsns("execute", pid, "--dev-account", "3")
        assert code == 0, out
        sid = int(re.search(r"session (\d+) opened", out).group(1))
        dep = Deployment.load(home / "deployment.json", chain_id=w3.eth.chain_id)
        yield Clients(w3, dep), sid


def test_refusals_come_before_training_and_send_nothing(session, tmp_path):
    clients, sid = session
    block = clients.w3.eth.block_number
    code, out = bsns("fedpeat", "run", "--session", str(sid), "--dev-account", "3", *TINY)
    assert code == 1 and out.strip().splitlines()[-1].startswith(f"error: account {clients.w3.eth.accounts[3]} is not "
                                                                 f"the controller of session {sid}")
    code, out = bsns("fedpeat", "run", "--session", str(sid), "--dev-account", "2", *TINY[:2], "--rounds", "3")
    assert code == 1 and out.strip().splitlines()[-1] == f"error: the run has 3 rounds but session {sid} only 2"
    code, out = bsns("fedpeat", "run", "--session", "99", "--dev-account", "2", *TINY)
    assert code == 1 and out.strip().splitlines()[-1] == "error: session 99 does not exist"
    assert clients.w3.eth.block_number == block  # nothing was sent
    assert "round 1" not in out


def test_run_records_emulators_and_plans_that_match_the_local_record(session, tmp_path):
    from coordinator.fedpeat.onchain import verify_plans

    clients, sid = session
    ledger = clients.fedpeat
    record = tmp_path / "rounds.jsonl"
    code, out = bsns("fedpeat", "run", "--session", str(sid), "--dev-account", "2", "--record", str(record), *TINY)
    assert code == 0, out
    assert f"session {sid}: 2 emulator(s) attached, 2 round plan(s) recorded on chain" in out
    records = [json.loads(line) for line in record.read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2]

    assert verify_plans(ledger, sid, records) == []
    for rec in records:
        assert ledger.plan_hash_of(sid, rec["round"]) == rec["plan_hash"]
    # the retentions in the events are the devices' choices, in device order
    logs = ledger.contract.events.RoundPlanRecorded().get_logs(from_block=clients.deployment.deploy_block)
    by_round = {ev["args"]["round"]: ev["args"] for ev in logs}
    for rec in records:
        ev = by_round[rec["round"]]
        assert "0x" + bytes(ev["planHash"]).hex() == rec["plan_hash"] and ev["sessionId"] == sid
        assert list(ev["retentionBps"]) == [round(c["retention"] * 10_000) for c in rec["choices"]] == [2500, 5000]
    # every emulator a device trained against is registered for the session's base model and attached
    base = clients.governance.get_params(clients.sessions.get_session(sid).proposal_id).base_model_hash
    used = {c["emulator"]: c["retention"] for rec in records for c in rec["choices"]}
    assert len(used) == 2
    for emu_hash, retention in used.items():
        assert ledger.is_attached(sid, emu_hash)
        rec = ledger.get_emulator(emu_hash)
        assert (rec.base_model_hash, rec.retention_bps, rec.kept_each_end, rec.distill_steps) == (
            base, round(retention * 10_000), 1, 0)
    assert ledger.attached_count(sid) == 2

    # anyone with the record and the chain checks it through the CLI; an altered record is caught
    code, out = bsns("fedpeat", "verify-plans", "--record", str(record), "--session", str(sid))
    assert code == 0 and out.strip() == f"2 round plans match session {sid} on chain"
    forged = tmp_path / "forged.jsonl"
    forged.write_text(record.read_text().replace(records[1]["plan_hash"], "0x" + "ab" * 32))
    code, out = bsns("fedpeat", "verify-plans", "--record", str(forged), "--session", str(sid))
    assert code == 1 and out.strip().startswith(f"error: 1 of 2 round plans differ from session {sid}: round 2:")

    # a second run into the same session is refused before training: its rounds already have plans
    block = clients.w3.eth.block_number
    code, out = bsns("fedpeat", "run", "--session", str(sid), "--dev-account", "2", *TINY)
    assert code == 1 and out.strip().splitlines()[-1] == f"error: session {sid} already has plans for rounds [1, 2]"
    assert "round 1" not in out and clients.w3.eth.block_number == block
    assert verify_plans(ledger, sid, records) == []  # the first run's record stands
