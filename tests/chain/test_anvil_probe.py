"""The chain layer against a real anvil: custom errors over JSON-RPC, pool-aware restarts, reorgs, WebSocket."""

from __future__ import annotations

import threading

import pytest

from node.chain.errors import ContractRevert
from node.chain.keys import dev_key
from node.chain.sender import TxSender
from node.chain.watcher import EventWatcher

from tests.support.evm import deploy_probe

pytestmark = pytest.mark.anvil


@pytest.fixture(scope="module")
def w3(anvil):
    from node.chain.rpc import connect

    return connect(anvil.url)


@pytest.fixture
def key(w3, request):
    # anvil's published dev keys (local chain only); a different account per test keeps nonces apart
    return dev_key(hash(request.node.name) % 9 + 1, w3.eth.chain_id)


@pytest.fixture
def probe(w3, probe_artifact):
    return deploy_probe(w3, TxSender(w3, dev_key(0, w3.eth.chain_id).private_key), probe_artifact)


def test_custom_error_over_json_rpc(w3, key, probe, use_probe_decoder):
    s = TxSender(w3, key.private_key)
    with pytest.raises(ContractRevert) as info:
        s.send(probe.functions.ping(0, b"\0" * 32), contract="Probe")
    assert (info.value.name, info.value.args) == ("TooSmall", (key.address, 0, 1))
    with pytest.raises(ContractRevert, match=r"Probe reverted: Panic\(0x32\)"):
        s.send(probe.functions.boom(3), contract="Probe")
    assert s.journal() == []


def test_restart_with_tx_still_in_the_pool(tmp_path, w3, key, probe):
    w3.provider.make_request("evm_setAutomine", [False])
    try:
        db = tmp_path / "txs.sqlite"
        s1 = TxSender(w3, key.private_key, db_path=db)
        first = s1.send(probe.functions.ping(1, b"\0" * 32), wait=False)
        s1.close()  # the process dies with its transaction unmined
        s2 = TxSender(w3, key.private_key, db_path=db)
        second = s2.send(probe.functions.ping(2, b"\0" * 32), wait=False)
        assert second.nonce == first.nonce + 1
        w3.provider.make_request("evm_mine", [])
        assert s2.wait(first).receipt["status"] == 1 and s2.wait(second).receipt["status"] == 1
    finally:
        w3.provider.make_request("evm_setAutomine", [True])


def test_reorg_on_anvil(w3, key, probe):
    s = TxSender(w3, key.private_key)
    contracts = {"Probe": (probe.address, probe.abi)}
    watcher = EventWatcher(w3, contracts, start_block=w3.eth.block_number)
    undone = []
    watcher.on("Probe", "Pinged", lambda e: None)
    watcher.on_reorg(lambda fork, removed: undone.extend(e.args["n"] for e in removed))
    snap = w3.provider.make_request("evm_snapshot", [])["result"]
    s.send(probe.functions.ping(5, b"\0" * 32))
    s.send(probe.functions.ping(6, b"\0" * 32))
    assert [e.args["n"] for e in watcher.poll_once()] == [5, 6]
    assert w3.provider.make_request("evm_revert", [snap])["result"] is True
    other = TxSender(w3, dev_key(0, w3.eth.chain_id).private_key)
    for n in (7, 8, 9):
        other.send(probe.functions.ping(n, b"\0" * 32))
    assert [e.args["n"] for e in watcher.poll_once()] == [7, 8, 9]
    assert undone == [5, 6]
    assert [e.args["n"] for e in watcher.delivered()] == [7, 8, 9]


def test_websocket_wakes_the_watcher(anvil, w3, key, probe):
    s = TxSender(w3, key.private_key)
    watcher = EventWatcher(w3, {"Probe": (probe.address, probe.abi)}, start_block=w3.eth.block_number)
    arrived = threading.Event()
    watcher.on("Probe", "Pinged", lambda e: arrived.set())
    stop = threading.Event()
    # a poll interval far longer than the wait below: only the newHeads subscription can wake it in time
    t = threading.Thread(target=watcher.run, args=(stop,), kwargs={"poll_interval": 60, "ws_url": anvil.ws_url})
    t.start()
    try:
        assert watcher.subscribed.wait(15), "the newHeads subscription was not confirmed"
        s.send(probe.functions.ping(3, b"\0" * 32))
        assert arrived.wait(15), "event not delivered: the WebSocket subscription did not wake the watcher"
    finally:
        stop.set()
        t.join(timeout=5)
    assert not t.is_alive()


def test_concurrent_sends_from_threads_get_distinct_nonces(w3, probe):
    from concurrent.futures import ThreadPoolExecutor

    s = TxSender(w3, dev_key(9, w3.eth.chain_id).private_key)
    start = w3.eth.get_transaction_count(s.address)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: s.send(probe.functions.ping(n, b"\0" * 32)), range(1, 13)))
    assert sorted(r.nonce for r in results) == list(range(start, start + 12))
    assert all(r.receipt["status"] == 1 for r in results)
