"""TxSender on eth-tester: nonces, reverts surfaced before sending, the journal, restarts."""

from __future__ import annotations

import pytest

from node.chain.errors import ChainError, ContractRevert
from node.chain.sender import TxSender

from tests.support.evm import deploy_probe

TAG = b"\x01" * 32


@pytest.fixture
def probe(tester_w3, tester_keys, probe_artifact):
    return deploy_probe(tester_w3, TxSender(tester_w3, tester_keys[1]), probe_artifact)


def test_sends_with_consecutive_nonces_and_headroom(tester_w3, tester_keys, probe):
    s = TxSender(tester_w3, tester_keys[0])
    results = [s.send(probe.functions.ping(i, TAG), contract="Probe") for i in (1, 2, 3)]
    assert [r.nonce for r in results] == [0, 1, 2]
    assert probe.functions.last().call() == 3
    tx = tester_w3.eth.get_transaction(results[0].hash)
    assert tx["gas"] > results[0].gas_used  # estimate × headroom, not the bare estimate
    assert [j["status"] for j in s.journal()] == ["mined"] * 3


def test_revert_is_decoded_before_anything_is_sent(tester_w3, tester_keys, probe, use_probe_decoder):
    s = TxSender(tester_w3, tester_keys[0])
    with pytest.raises(ContractRevert) as info:
        s.send(probe.functions.ping(0, TAG), contract="Probe")
    assert info.value.name == "TooSmall" and info.value.args[1:] == (0, 1)
    assert s.journal() == []
    assert tester_w3.eth.get_transaction_count(s.address) == 0
    assert s.send(probe.functions.ping(1, TAG)).nonce == 0  # the refused call used no nonce


def test_mined_failure_is_decoded_from_a_replay(tester_w3, tester_keys, probe, use_probe_decoder):
    s = TxSender(tester_w3, tester_keys[0])
    # a fixed gas skips the estimate, so the revert happens on chain
    with pytest.raises(ContractRevert, match=r"Probe reverted: TooSmall\("):
        s.send(probe.functions.ping(0, TAG), contract="Probe", gas=80_000)
    assert [j["status"] for j in s.journal()] == ["failed"]
    assert s.send(probe.functions.ping(1, TAG)).nonce == 1


def test_restart_rebroadcasts_journalled_tx_and_never_reuses_its_nonce(tmp_path, tester_w3, tester_keys, probe,
                                                                      monkeypatch):
    db = tmp_path / "txs.sqlite"
    s1 = TxSender(tester_w3, tester_keys[0], db_path=db)
    s1.send(probe.functions.ping(1, TAG))

    # crash between journalling and broadcasting: the node never sees nonce 1
    def crash(raw):
        raise SystemExit("killed")

    monkeypatch.setattr(tester_w3.eth, "send_raw_transaction", crash)
    with pytest.raises(SystemExit):
        s1.send(probe.functions.ping(2, TAG), purpose="ping 2")
    monkeypatch.undo()
    assert tester_w3.eth.get_transaction_count(s1.address, "pending") == 1
    s1.close()

    s2 = TxSender(tester_w3, tester_keys[0], db_path=db)  # restart: reconcile sends the journalled tx
    assert probe.functions.last().call() == 2
    r = s2.send(probe.functions.ping(3, TAG))
    assert r.nonce == 2
    assert probe.functions.last().call() == 3
    nonces = [j["nonce"] for j in s2.journal()]
    assert nonces == [0, 1, 2] and len(set(nonces)) == 3
    assert [j["status"] for j in s2.journal()] == ["mined"] * 3


def test_fresh_chain_with_the_same_id_never_gets_the_old_chains_transactions(tmp_path, tester_w3, tester_keys, probe,
                                                                             probe_artifact, monkeypatch):
    """A local chain restarted from genesis has the same chain id: the journal of the old one (mined and
    never-sent transactions alike) must not be replayed onto it, and nonces start again from the chain's."""
    from web3 import EthereumTesterProvider, Web3

    db = tmp_path / "txs.sqlite"
    s1 = TxSender(tester_w3, tester_keys[0], db_path=db)
    s1.send(probe.functions.ping(1, TAG))
    monkeypatch.setattr(tester_w3.eth, "send_raw_transaction", lambda raw: (_ for _ in ()).throw(SystemExit("killed")))
    with pytest.raises(SystemExit):
        s1.send(probe.functions.ping(2, TAG))
    monkeypatch.undo()
    s1.close()

    import time

    fresh = Web3(EthereumTesterProvider())
    while fresh.eth.get_block(0)["hash"] == tester_w3.eth.get_block(0)["hash"]:  # genesis carries the second
        time.sleep(0.2)
        fresh = Web3(EthereumTesterProvider())
    assert fresh.eth.chain_id == tester_w3.eth.chain_id
    s2 = TxSender(fresh, tester_keys[0], db_path=db)
    assert fresh.eth.get_transaction_count(s2.address, "pending") == 0  # nothing replayed
    assert [j["status"] for j in s2.journal()] == ["other-chain", "other-chain"]
    fresh_probe = deploy_probe(fresh, s2, probe_artifact)
    assert fresh.eth.get_transaction(fresh.eth.get_block(1)["transactions"][0])["nonce"] == 0
    r = s2.send(fresh_probe.functions.ping(7, TAG))
    assert r.nonce == 1 and fresh_probe.functions.last().call() == 7


def test_notices_other_senders_of_the_same_account(tester_w3, tester_keys, probe):
    s = TxSender(tester_w3, tester_keys[0])
    s.send(probe.functions.ping(1, TAG))
    other = TxSender(tester_w3, tester_keys[0])  # e.g. a second process with the same key
    other.send(probe.functions.ping(2, TAG))
    assert s.send(probe.functions.ping(3, TAG)).nonce == 2


def test_dead_rpc_is_one_line(tester_keys):
    from web3 import Web3

    from node.chain.errors import RpcUnavailable

    w3 = Web3(Web3.HTTPProvider("http://127.0.0.1:9", request_kwargs={"timeout": 2}))
    with pytest.raises(RpcUnavailable, match="cannot reach the chain at http://127.0.0.1:9: connection refused"):
        TxSender(w3, tester_keys[0])
    assert issubclass(RpcUnavailable, ChainError)
