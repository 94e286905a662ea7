"""EventWatcher on eth-tester: bounded ranges, exactly-once across restarts, atomic handler state, reorgs."""

from __future__ import annotations

import pytest

from node.chain.sender import TxSender
from node.chain.watcher import EventWatcher

from tests.support.evm import deploy_probe


@pytest.fixture
def env(tester_w3, tester_keys, probe_artifact):
    sender = TxSender(tester_w3, tester_keys[0])
    probe = deploy_probe(tester_w3, sender, probe_artifact)
    return tester_w3, sender, probe, {"Probe": (probe.address, probe_artifact["abi"])}


def ping(sender, probe, n):
    return sender.send(probe.functions.ping(n, n.to_bytes(32, "big")))


def test_delivers_decoded_events_as_plain_objects(env):
    w3, sender, probe, contracts = env
    watcher = EventWatcher(w3, contracts)
    got = []
    watcher.on("Probe", "Pinged", got.append)
    r = ping(sender, probe, 7)
    sender.send(probe.functions.double(10))  # Twice has no handler: not delivered
    assert watcher.poll_once() == got
    (ev,) = got
    assert (ev.contract, ev.name, ev.args) == ("Probe", "Pinged", {"who": sender.address, "n": 7,
                                                                 "tag": (7).to_bytes(32, "big")})
    assert (ev.tx_hash, ev.block_number) == (r.hash, r.block_number)
    assert watcher.poll_once() == []


def test_unknown_event_registration_is_refused(env):
    w3, _, _, contracts = env
    with pytest.raises(ValueError, match="no event Nope"):
        EventWatcher(w3, contracts).on("Probe", "Nope", print)


def test_polls_in_bounded_ranges(env, monkeypatch):
    w3, sender, probe, contracts = env
    for n in range(1, 8):
        ping(sender, probe, n)
    ranges = []
    real = w3.eth.get_logs

    def spy(params):
        ranges.append((params["fromBlock"], params["toBlock"]))
        return real(params)

    monkeypatch.setattr(w3.eth, "get_logs", spy)
    watcher = EventWatcher(w3, contracts, max_range=3)
    got = []
    watcher.on("Probe", "Pinged", got.append)
    watcher.poll_once()
    assert [e.args["n"] for e in got] == list(range(1, 8))
    assert all(b - a + 1 <= 3 for a, b in ranges)
    assert ranges[0][0] == 0 and ranges[-1][1] == w3.eth.block_number


def test_confirmations_hold_back_recent_blocks(env):
    w3, sender, probe, contracts = env
    watcher = EventWatcher(w3, contracts, confirmations=2)
    got = []
    watcher.on("Probe", "Pinged", got.append)
    ping(sender, probe, 1)
    watcher.poll_once()
    assert got == []
    sender.send(probe.functions.double(1))
    sender.send(probe.functions.double(2))
    watcher.poll_once()
    assert [e.args["n"] for e in got] == [1]


def test_stopped_watcher_sees_each_event_once_after_restart(env, tmp_path):
    w3, sender, probe, contracts = env
    db = tmp_path / "w.sqlite"
    seen = []

    def start():
        w = EventWatcher(w3, contracts, db_path=db, max_range=2)
        w.on("Probe", "Pinged", lambda e: seen.append(e.args["n"]))
        w.on("Probe", "Twice", lambda e: seen.append(("twice", e.args["n"])))
        return w

    w = start()
    ping(sender, probe, 1)
    w.poll_once()
    w.close()
    for n in (2, 3):  # happen while the watcher is down
        ping(sender, probe, n)
    sender.send(probe.functions.double(5))
    w = start()
    w.poll_once()
    w.poll_once()
    w.close()
    w = start()
    w.poll_once()
    assert seen == [1, 2, 3, ("twice", 5), ("twice", 6)]
    assert len(w.delivered()) == 5


def test_failing_handler_rolls_back_its_block(env):
    w3, sender, probe, contracts = env
    watcher = EventWatcher(w3, contracts)
    watcher.db.execute("CREATE TABLE totals (n INTEGER)")
    calls = []

    def handler(ev):
        calls.append(ev.args["n"])
        watcher.db.execute("INSERT INTO totals VALUES (?)", (ev.args["n"],))
        if ev.args["n"] == 2 and calls.count(2) == 1:
            raise RuntimeError("transient")

    watcher.on("Probe", "Pinged", handler)
    for n in (1, 2, 3):
        ping(sender, probe, n)
    with pytest.raises(RuntimeError):
        watcher.poll_once()
    assert [r[0] for r in watcher.db.execute("SELECT n FROM totals")] == [1]  # block 2's write undone
    watcher.poll_once()
    assert [r[0] for r in watcher.db.execute("SELECT n FROM totals ORDER BY n")] == [1, 2, 3]
    assert calls == [1, 2, 2, 3]


def test_reorg_rewinds_and_replays(env):
    w3, sender, probe, contracts = env
    tester = w3.provider.ethereum_tester
    watcher = EventWatcher(w3, contracts)
    got, undone = [], []
    watcher.on("Probe", "Pinged", lambda e: got.append(e.args["n"]))
    watcher.on_reorg(lambda fork, removed: undone.append((fork, [e.args["n"] for e in removed])))
    ping(sender, probe, 1)
    snap = tester.take_snapshot()
    fork_block = w3.eth.block_number
    ping(sender, probe, 2)
    ping(sender, probe, 3)
    watcher.poll_once()
    assert got == [1, 2, 3]

    tester.revert_to_snapshot(snap)  # another branch: the blocks after the fork are orphaned
    sender.reconcile()  # the sender puts its orphaned transactions (2, 3) back, as a node's pool would
    ping(sender, probe, 20)
    watcher.poll_once()
    assert undone == [(fork_block, [2, 3])]
    assert got == [1, 2, 3, 2, 3, 20]
    assert [e.args["n"] for e in watcher.delivered()] == [1, 2, 3, 20]
    assert all(e.block_hash == w3.eth.get_block(e.block_number)["hash"].to_0x_hex() for e in watcher.delivered())


def _tamper(w3, monkeypatch, change):
    """Make eth_getLogs answer with ``change`` applied to its logs once (as a lagging or mixed RPC backend would)."""
    from web3.datastructures import AttributeDict

    real = w3.eth.get_logs
    calls = {"n": 0}

    def once(params):
        logs = real(params)
        calls["n"] += 1
        return [AttributeDict(change(dict(lg))) for lg in logs] if calls["n"] == 1 else logs

    monkeypatch.setattr(w3.eth, "get_logs", once)


@pytest.mark.parametrize("change", [
    pytest.param(lambda lg: {**lg, "blockHash": b"\x11" * 32}, id="log-from-another-branch"),
    pytest.param(lambda lg: {**lg, "blockNumber": lg["blockNumber"] + 100}, id="log-outside-the-range"),
    pytest.param(lambda lg: {**lg, "removed": True}, id="removed-log"),
])
def test_an_inconsistent_range_delivers_nothing_and_is_read_again(env, monkeypatch, change):
    """Not only the last block of a range is checked: a log in its middle from another branch, or outside the
    range, makes the whole answer be dropped; the next poll reads it again and delivers each event once."""
    w3, sender, probe, contracts = env
    for n in (1, 2, 3):
        ping(sender, probe, n)
    ping(sender, probe, 99)  # the range's last block holds a good log: the old last-block check passed
    watcher = EventWatcher(w3, contracts, max_range=100)
    got = []
    watcher.on("Probe", "Pinged", lambda e: got.append(e.args["n"]))
    _tamper(w3, monkeypatch, lambda lg: change(lg) if lg["blockNumber"] < w3.eth.block_number else lg)
    assert watcher.poll_once() == [] and got == []
    watcher.poll_once()
    assert got == [1, 2, 3, 99]


def test_a_range_that_does_not_continue_the_checkpoint_is_not_delivered(env, monkeypatch):
    w3, sender, probe, contracts = env
    ping(sender, probe, 1)
    watcher = EventWatcher(w3, contracts)
    got = []
    watcher.on("Probe", "Pinged", lambda e: got.append(e.args["n"]))
    watcher.poll_once()
    ping(sender, probe, 2)
    real = w3.eth.get_block
    first = w3.eth.block_number
    monkeypatch.setattr(w3.eth, "get_block", lambda n, *a: {**real(n, *a), "parentHash": b"\x22" * 32}
                        if n == first else real(n, *a))
    watcher.poll_once()
    assert got == [1]
    monkeypatch.setattr(w3.eth, "get_block", real)
    watcher.poll_once()
    assert got == [1, 2]
