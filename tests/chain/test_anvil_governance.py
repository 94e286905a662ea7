"""End to end on a real anvil through the real CLI entry point: deploy, register, propose, vote, list,
execute; the error cases users meet; an outside web3 client voting with only the committed ABI, seen
by the project's watcher; a watcher restarted after missing events."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

from tests.support.cli import bsns

from node.chain.artifacts import artifacts_dir
from node.chain.keys import dev_key

pytestmark = pytest.mark.anvil
SPEC = Path(__file__).parent / "fixtures" / "job.toml"


@pytest.fixture(scope="module")
def net(anvil, tmp_path_factory):
    """anvil + `bsns deploy` + three nodes registered with `bsns node register` (anvil dev accounts 1-3)."""
    from node.chain.clients import Clients
    from node.chain.deployment import Deployment
    from node.chain.rpc import connect

    home = tmp_path_factory.mktemp("bsns-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BSNS_HOME", str(home))
        mp.setenv("BSNS_RPC", anvil.url)
        mp.setenv("BSNS_DEPLOYMENT", str(home / "deployment.json"))
        mp.delenv("BSNS_DEV_ACCOUNT", raising=False)
        code, out = bsns("deploy", "--dev-account", "0", "--voting-delay", "0", "--voting-period", "6",
                         "--join-window", "3")
        assert code == 0, out
        for i in (1, 2, 3):
            code, out = bsns("node", "register", "--dev-account", str(i), "--memory-mb", "2000",
                             "--announce", f"/ip4/127.0.0.1/tcp/{4100 + i}")
            assert code == 0, out
        w3 = connect(anvil.url)
        dep = Deployment.load(home / "deployment.json", chain_id=w3.eth.chain_id)
        yield w3, dep, Clients(w3, dep), anvil


def mine(w3, n: int) -> None:
    w3.provider.make_request("anvil_mine", [hex(n)])


def test_registered_nodes_carry_their_peer_ids(net):
    from node.p2p.identity import peer_id_from_private_key

    w3, dep, c, _ = net
    assert c.registry.active_count() == 3
    k = dev_key(2, w3.eth.chain_id)
    node = c.registry.get_node(k.address)
    assert node.peer_id == peer_id_from_private_key(k.private_key)
    assert node.announce_addr == "/ip4/127.0.0.1/tcp/4102" and node.memory_mb == 2000


def test_propose_vote_list_execute_through_the_cli(net):
    w3, dep, c, _ = net
    code, out = bsns("propose", str(SPEC), "--dev-account", "1")
    assert code == 0, out
    pid = int(re.search(r"proposal (\d+) created", out).group(1))
    deposit = c.governance.proposal_deposit()
    assert deposit == 10**17 and f"paid a deposit of 0.1 ETH ({deposit} wei)" in out  # bsns deploy's default
    assert c.governance.deposit_of(pid) == deposit
    code, out = bsns("settle-deposit", str(pid), "--dev-account", "3")
    assert code == 1 and "DepositNotSettleable" in out and "when its vote ends" in out  # not while voting
    params = c.governance.get_params(pid)
    assert params.method == "houlsby" and params.layer_bounds == (0, 3, 6)
    assert params.dataset_hash != "0x" + "00" * 32  # filled in from data/sst2/train.tsv

    assert bsns("vote", str(pid), "for", "--dev-account", "1")[0] == 0
    code, out = bsns("vote", str(pid), "for", "--dev-account", "2")
    assert code == 0 and "(for 2, against 0)" in out
    code, out = bsns("vote", str(pid), "against", "--dev-account", "2")
    assert code == 1
    assert out.strip() == f"error: FineTuneGovernance reverted: AlreadyVoted({dev_key(2, 31337).address}, {pid})"

    code, out = bsns("proposals")
    assert code == 0
    row = next(line for line in out.splitlines() if re.match(rf"[│|]\s+{pid}\s+[│|]", line))
    assert "Active" in row and re.search(r"[│|]\s+2\s+[│|]\s+0\s+[│|]", row) and "houlsby" in row

    code, out = bsns("execute", str(pid), "--dev-account", "3")
    assert code == 1 and "FineTuneGovernance reverted: NotSucceeded" in out  # still voting
    mine(w3, 6)
    code, out = bsns("execute", str(pid), "--dev-account", "3")
    assert code == 0, out
    sid = int(re.search(r"session (\d+) opened", out).group(1))
    assert c.sessions.session_of_proposal(pid) == sid
    code, out = bsns("execute", str(pid), "--dev-account", "3")
    assert code == 1 and out.strip().startswith("error: FineTuneGovernance reverted: NotSucceeded(")
    code, out = bsns("proposals")
    assert re.search(rf"[│|]\s+{pid}\s+[│|]\s+Executed", out)
    proposer = dev_key(1, w3.eth.chain_id).address
    before = w3.eth.get_balance(proposer)
    code, out = bsns("settle-deposit", str(pid), "--dev-account", "3")  # anyone settles; the proposer is paid
    assert code == 0 and f"deposit of proposal {pid} returned" in out and proposer in out, out
    assert w3.eth.get_balance(proposer) == before + deposit
    code, out = bsns("settle-deposit", str(pid), "--dev-account", "3")
    assert code == 1 and f"NoDeposit({pid})" in out and len(out.strip().splitlines()) == 1


def test_bad_spec_is_refused_by_field_and_sends_nothing(net, tmp_path):
    w3, dep, c, _ = net
    bad = tmp_path / "bad.toml"
    bad.write_text(SPEC.read_text().replace("rounds = 2", "rounds = 0"))
    account = dev_key(1, w3.eth.chain_id).address
    nonce, count = w3.eth.get_transaction_count(account), c.governance.proposal_count()
    code, out = bsns("propose", str(bad), "--dev-account", "1")
    assert code == 1
    assert out.strip().startswith(f"error: {bad}: training.rounds:")
    assert len(out.strip().splitlines()) == 1
    assert (w3.eth.get_transaction_count(account), c.governance.proposal_count()) == (nonce, count)


def test_outside_client_votes_with_only_the_abi_and_the_watcher_sees_it(net, tmp_path):
    from web3 import Web3

    from node.chain.sender import TxSender
    from node.chain.watcher import EventWatcher
    from node.job import JobSpec

    w3, dep, c, chain = net
    proposer = c.__class__(w3, dep, TxSender(w3, dev_key(1, w3.eth.chain_id).private_key))
    spec = JobSpec.from_toml(SPEC).with_hashes(weights_hash="0x" + "01" * 32, data_hash="0x" + "02" * 32)
    _, pid = proposer.governance.propose(spec.to_chain_params(), spec.toml_text)

    watcher = EventWatcher(w3, c.watched(), db_path=tmp_path / "w.sqlite", start_block=w3.eth.block_number + 1)
    seen = []
    arrived = threading.Event()

    def on_vote(ev):
        seen.append(ev)
        arrived.set()

    watcher.on("FineTuneGovernance", "VoteCast", on_vote)
    stop = threading.Event()
    t = threading.Thread(target=watcher.run, args=(stop,), kwargs={"poll_interval": 0.5, "ws_url": chain.ws_url})
    t.start()
    try:
        # the outside client: plain web3, the committed ABI JSON, its own signing
        abi = json.loads((artifacts_dir() / "FineTuneGovernance.json").read_text())["abi"]
        mine(w3, 1)  # plain web3 estimates on the latest block: let the voting window open first
        outside = Web3(Web3.HTTPProvider(chain.url))
        gov = outside.eth.contract(address=dep.addresses["FineTuneGovernance"], abi=abi)
        voter = outside.eth.account.from_key(dev_key(3, 31337).private_key)  # anvil dev key, local chain
        tx = gov.functions.castVote(pid, False).build_transaction(
            {"from": voter.address, "nonce": outside.eth.get_transaction_count(voter.address, "pending")})
        h = outside.eth.send_raw_transaction(voter.sign_transaction(tx).raw_transaction)
        assert outside.eth.wait_for_transaction_receipt(h)["status"] == 1
        assert arrived.wait(20)
    finally:
        stop.set()
        t.join(timeout=5)
    (ev,) = seen
    assert ev.args == {"voter": voter.address, "proposalId": pid, "support": False, "weight": 1}
    assert ev.tx_hash == "0x" + bytes(h).hex()


def test_watcher_stopped_during_events_sees_each_once_after_restart(net, tmp_path):
    from node.chain.sender import TxSender
    from node.chain.watcher import EventWatcher
    from node.job import JobSpec

    w3, dep, c, _ = net
    db = tmp_path / "w.sqlite"
    start = w3.eth.block_number + 1
    seen: list[tuple] = []

    def make():
        w = EventWatcher(w3, c.watched(), db_path=db, start_block=start, max_range=2)
        w.on("FineTuneGovernance", "ProposalCreated", lambda e: seen.append(("created", e.args["proposalId"])))
        w.on("FineTuneGovernance", "VoteCast", lambda e: seen.append(("vote", e.args["proposalId"], e.args["voter"])))
        return w

    senders = {i: c.__class__(w3, dep, TxSender(w3, dev_key(i, 31337).private_key)) for i in (1, 2, 3)}
    spec = JobSpec.from_toml(SPEC).with_hashes(weights_hash="0x" + "03" * 32, data_hash="0x" + "04" * 32)
    _, p1 = senders[1].governance.propose(spec.to_chain_params(), spec.toml_text)
    w = make()
    w.poll_once()
    w.close()  # stopped; events keep happening
    senders[1].governance.cast_vote(p1, True)
    _, p2 = senders[2].governance.propose(spec.to_chain_params(), spec.toml_text)
    senders[2].governance.cast_vote(p1, True)
    w = make()  # restarted from its checkpoint
    w.poll_once()
    senders[3].governance.cast_vote(p1, False)
    w.poll_once()
    w.poll_once()
    a = {i: dev_key(i, 31337).address for i in (1, 2, 3)}
    assert seen == [("created", p1), ("vote", p1, a[1]), ("created", p2), ("vote", p1, a[2]), ("vote", p1, a[3])]


def test_keygen_then_register_with_the_keystore(net, tmp_path, monkeypatch):
    w3, dep, c, _ = net
    ks = tmp_path / "node-key.json"
    monkeypatch.setenv("BSNS_KEYSTORE_PASSWORD", "correct horse")
    code, out = bsns("node", "keygen", "--out", str(ks))
    assert code == 0, out
    address = re.search(r"address\s+(0x[0-9a-fA-F]{40})", out).group(1)
    assert "peer id  16Uiu2" in out
    assert bsns("node", "keygen", "--out", str(ks))[0] == 1  # never overwrites a key by accident

    code, out = bsns("node", "register", "--keystore", str(ks))
    assert code == 1  # an unfunded account cannot stake: the node's refusal, one line
    assert out.strip() == "error: the chain node refused the request: Insufficient funds for gas * price + value"
    w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": address, "value": 3 * 10**18})
    code, out = bsns("node", "register", "--keystore", str(ks), "--memory-mb", "1500")
    assert code == 0, out
    assert c.registry.is_active(address) and c.registry.get_node(address).memory_mb == 1500

    monkeypatch.setenv("BSNS_KEYSTORE_PASSWORD", "wrong")
    code, out = bsns("node", "info", "--keystore", str(ks))
    assert code == 1 and out.strip() == f"error: cannot unlock keystore {ks}: wrong password or corrupt file"


def test_proposals_errors_are_one_line(net, tmp_path):
    from coordinator.localchain import free_port

    code, out = bsns("proposals", "--deployment", str(tmp_path / "missing.json"))
    assert (code, out.strip()) == (1, f"error: no deployment at {tmp_path / 'missing.json'}: run `bsns deploy` first")
    port = free_port()
    code, out = bsns("proposals", "--rpc", f"http://127.0.0.1:{port}")
    assert (code, out.strip()) == (1, f"error: cannot reach the chain at http://127.0.0.1:{port}: connection refused")
