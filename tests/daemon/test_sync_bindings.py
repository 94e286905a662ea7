"""The round sync honours bound updates (issue 11 item 4), attacked through the sync's real collection step on the
in-memory chain and network: an equivocating replica's signed update other than its binding is proven on chain
and left out; unsigned, forged and unbound updates are refused; a node whose update cannot be bound announces
nothing and commits a zero local hash; nothing is revealed before every expected replica bound."""

from node.daemon.ports import ZERO_HASH, Announcement, Member
from node.daemon.sync import PIPELINE_SYNC, RoundSync
from node.hashing import keccak_hex

from .fakes import FakeChain, FakeNet

MEMBERS = [Member(f"0x{i:040x}", 0, i, peer_id=f"p{i}") for i in range(3)]


def _world(deadline_s=30.0):
    chain, net = FakeChain(MEMBERS, rounds=1, replicas=3, deadline_s=deadline_s), FakeNet()
    return chain, net


def _sync(chain, net, me=0):
    events = []
    sync = RoundSync(1, MEMBERS[me], chain=chain.view(MEMBERS[me]), net=net.port(f"p{me}"), store=None,
                     rule=None, policy=PIPELINE_SYNC, sync_timeout=0.3, poll=0.01, sleep=lambda s: None,
                     emit=lambda kind, **i: events.append((kind, i)), fetch_blob=None, global_before=None,
                     sample_count=None)
    return sync, events


def _announce(net, rep, h, sig):
    net.port(f"p{rep}").announce(Announcement(1, 0, 0, rep, h, 10, f"p{rep}", {} if sig is None else {"sig": sig}))


def test_an_equivocating_replica_is_proven_and_left_out():
    chain, net = _world()
    hashes = {r: keccak_hex(f"update {r}".encode()) for r in range(3)}
    sigs = {r: chain.view(MEMBERS[r]).bind(1, 0, 0, hashes[r]) for r in range(3)}
    assert all(sigs.values())
    _announce(net, 1, hashes[1], sigs[1])
    other = keccak_hex(b"shown to replica 0 only")
    _announce(net, 2, other, f"sig:{MEMBERS[2].address}:{other}")  # signed by 2, not the update it bound
    sync, events = _sync(chain, net)
    updates = {}
    sync._collect_updates(0, frozenset({1, 2}), updates, _Pulse())
    assert set(updates) == {1}
    assert chain.proven == {(0, 0, 2)} and (MEMBERS[0].address, "proveUnbound", (0, 0, 2)) in chain.txs
    assert [i["replica"] for k, i in events if k == "equivocation"] == [2]
    # seeing it again proves nothing twice
    sync._collect_updates(0, frozenset({1, 2}), updates, _Pulse())
    assert [t for t in chain.txs if t[1] == "proveUnbound"] == [(MEMBERS[0].address, "proveUnbound", (0, 0, 2))]


def test_unsigned_forged_and_unbound_updates_are_refused_without_a_proof():
    chain, net = _world()
    h1, h2 = keccak_hex(b"u1"), keccak_hex(b"u2")
    chain.view(MEMBERS[1]).bind(1, 0, 0, h1)
    _announce(net, 1, h1, None)                                       # unsigned
    _announce(net, 2, h2, f"sig:{MEMBERS[2].address}:{h2}")          # signed, but replica 2 bound nothing
    sync, events = _sync(chain, net)
    updates = {}
    sync._collect_updates(0, frozenset({1, 2}), updates, _Pulse())
    assert updates == {} and chain.proven == set()
    _announce(net, 1, h1, f"sig:{MEMBERS[2].address}:{h1}")          # replica 1's update signed by replica 2
    sync._collect_updates(0, frozenset({1, 2}), updates, _Pulse())
    assert updates == {} and chain.proven == set()
    assert sorted({i["replica"] for k, i in events if k == "update_refused"}) == [1, 2]


def test_a_node_that_missed_the_bind_window_reveals_nothing_and_commits_a_zero_local_hash():
    import time

    import pytest

    from node.daemon.sync import RoundWork, SessionAborted

    chain, net = _world(deadline_s=0.05)
    time.sleep(0.03)  # past the bind window (the first half of the deadline)
    sync, events = _sync(chain, net)
    sync.store, sync.global_before = _Store(), lambda rnd: b"round start"
    with pytest.raises(SessionAborted):  # alone, it never reaches a quorum: retried, then the session fails
        sync.run(0, RoundWork(local=b"late", expected=frozenset({0, 1, 2}), samples=10, recorded_samples=10))
    assert [k for k, _ in events][:2] == ["bind_missed", "committed"]
    assert dict(events)["committed"]["local"] == ZERO_HASH
    assert net.board and all(a.kind == "set" for a in net.board)  # no update announced
    assert not any(t[1] == "bind" for t in chain.txs)


def test_nothing_is_revealed_before_every_expected_replica_bound():
    chain, net = _world()
    sync, _ = _sync(chain, net)
    chain.view(MEMBERS[0]).bind(1, 0, 0, keccak_hex(b"u0"))
    polls = []

    def sleep(_):
        polls.append(1)
        if len(polls) == 3:  # the last replica binds while we wait
            chain.view(MEMBERS[2]).bind(1, 0, 0, keccak_hex(b"u2"))
        if len(polls) == 5:
            chain.view(MEMBERS[1]).bind(1, 0, 0, keccak_hex(b"u1"))

    sync.sleep = sleep
    sync._await_bindings(0, frozenset({0, 1, 2}), _Pulse())
    assert len(polls) == 5 and net.board == []


class _Pulse:
    def tick(self):
        pass

    def every(self, ann):
        pass


class _Store:
    def put_blob(self, data):
        pass

    def upsert_round(self, *args, **kw):
        pass
