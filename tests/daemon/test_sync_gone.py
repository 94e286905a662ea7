"""The round sync stops waiting for a replica its peers saw go away (issue 16, item 5), and only for one.

A replica whose member's connection closed ``GONE_GRACE`` seconds ago and has not reopened is not waited for
the whole sync timeout; one that left a moment ago (a daemon restarting after a crash) and one this node
never talked to are. In-memory chain and network (tests/daemon/fakes.py), no model.
"""

import time

from node.daemon.ports import Announcement, Member
from node.daemon.state import StateStore
from node.daemon.sync import GONE_GRACE, PIPELINE_SYNC, RoundSync, _Pulse

from .fakes import FakeChain, FakeNet

MEMBERS = [Member(f"0x{s}{r}", s, r, peer_id=f"peer{s}{r}") for s in range(2) for r in range(3)]


def _sync(tmp_path, net, timeout):
    chain = FakeChain(MEMBERS, 2, 3)
    me = MEMBERS[0]   # shard 0, replica 0
    events = []
    sync = RoundSync(1, me, chain.view(me), net.port(me.peer_id), StateStore(tmp_path / "s"), None, PIPELINE_SYNC,
                     timeout, 0.05, time.sleep, lambda kind, **info: events.append((kind, info)),
                     None, None, lambda r: 1)
    sync.test_chain = chain
    return sync, events


def _collect(sync, net):
    # replica 1 bound and announced its update, signed; replica 2 did neither
    h1 = "0x" + "11" * 32
    sig = sync.test_chain.view(MEMBERS[1]).bind(1, 0, 0, h1)
    net.port("peer01").announce(Announcement(1, 0, 0, 1, h1, 1, "peer01", {"sig": sig}))
    updates = {0: Announcement(1, 0, 0, 0, "0x" + "00" * 31 + "01", 1, "peer00")}   # this node's own
    t0 = time.monotonic()
    sync._collect_updates(0, frozenset({0, 1, 2}), updates, _Pulse(net.port("peer00"), 3.0))
    return time.monotonic() - t0, updates


def test_a_replica_seen_gone_is_not_waited_for(tmp_path):
    net = FakeNet()
    net.left["peer12"] = time.monotonic() - GONE_GRACE - 1   # replica 2's shard-1 node died a while ago
    sync, events = _sync(tmp_path, net, timeout=20.0)
    waited, updates = _collect(sync, net)
    assert waited < 2.0 and set(updates) == {0, 1}
    assert [e for e in events if e[0] == "replicas_gone"] == [("replicas_gone", {"round": 0, "replicas": [2],
                                                                                  "grace": GONE_GRACE})]


def test_a_replica_that_just_left_or_was_never_seen_is_waited_for(tmp_path):
    for left in ({"peer02": time.monotonic() - 1.0}, {}):     # restarting right now / never connected here
        net = FakeNet()
        net.left.update(left)
        sync, events = _sync(tmp_path, net, timeout=1.5)
        waited, updates = _collect(sync, net)
        assert waited >= 1.5 and set(updates) == {0, 1}
        assert not [e for e in events if e[0] == "replicas_gone"]


def test_the_reveal_waits_for_a_missing_binding_only_while_its_replica_is_not_gone(tmp_path):
    """Bindings first (issue 11, item 4): a replica that has not bound holds the reveal back until the bind window
    closes, unless it is known gone; then this node reveals at once and takes only the replicas bound by then, so a
    gone (or feigning) replica binding later, after seeing the reveal, is left out."""
    net = FakeNet()
    sync, events = _sync(tmp_path, net, timeout=20.0)
    sync.test_chain.view(MEMBERS[0]).bind(1, 0, 0, "0x" + "00" * 31 + "01")
    sync.test_chain.view(MEMBERS[1]).bind(1, 0, 0, "0x" + "11" * 32)
    net.left["peer12"] = time.monotonic() - 0.5          # replica 2's node left a moment ago: still waited for
    pulse = _Pulse(net.port("peer00"), 3.0)
    t0 = time.monotonic()
    sync.sleep = lambda s: (time.sleep(s), time.monotonic() - t0 > 0.5 and
                            net.left.__setitem__("peer12", time.monotonic() - GONE_GRACE - 1))
    takeable = sync._await_bindings(0, frozenset({0, 1, 2}), pulse)
    waited = time.monotonic() - t0
    assert takeable == frozenset({0, 1}) and 0.5 <= waited < 5.0
