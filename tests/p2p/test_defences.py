"""The p2p layer's defences against hostile peers, one attack per test (in process; the cross-process
attacks are in test_hostile_peers.py): the admission rule, the inbox quotas, the bounded blob store,
the open protocol's per-peer limits, the bulk port's handshake deadline and eviction, and a blob
fetch that commits no memory for a size a peer merely announces."""

from __future__ import annotations

import os
import socket
import time

import psutil
import pytest

from node.hashing import keccak256
from node.p2p import wire
from node.p2p.admission import Expectation, OpenAdmission, SessionAdmission
from node.p2p.bulk import MAX_FRESH_PER_ADDR, BulkListener, dial, new_secret
from node.p2p.inbox import Inbox
from node.p2p.ratelimit import PeerLimiter
from node.p2p.store import BlobStore
from node.p2p.wire import Header, Tags

pytestmark = pytest.mark.timeout(120)

A, B, C = "0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "cc" * 20


def _header(tags: Tags, nbytes: int = 64) -> Header:
    return Header(kind=wire.KIND_TENSOR, payload_len=nbytes, tags=tags, shape=(nbytes,))


def test_only_the_declared_sender_of_a_declared_session_within_the_window():
    rule = SessionAdmission(window=2)
    rule.expect(Expectation(7, 1, {"fwd": A, "bwd": B}, max_frame=1000, micro_batches=2))
    ok = Tags(7, 1, 10, 1, "fwd")
    assert rule.check(A.upper().replace("0X", "0x"), _header(ok), None) is None   # addresses compare case-free
    assert rule.check(B, _header(Tags(7, 1, 10, 0, "bwd")), None) is None
    verdicts = {
        "non-member": rule.check(C, _header(ok), None),
        "member, wrong direction": rule.check(B, _header(ok), None),
        "unknown session": rule.check(A, _header(Tags(8, 1, 10, 0)), None),
        "oversize frame": rule.check(A, _header(ok, 1001), None),
        "micro-batch the job lacks": rule.check(A, _header(Tags(7, 1, 10, 2)), None),
        "finished round": rule.check(A, _header(Tags(7, 0, 10, 0)), None),
        "round not reached": rule.check(A, _header(Tags(7, 3, 10, 0)), None),
        "too far ahead": rule.check(A, _header(Tags(7, 1, 13, 0)), (1, 10)),
        "direction none": rule.check(A, _header(Tags(7, 1, 10, 0, "none")), None),
    }
    assert {k: v.status for k, v in verdicts.items()} == {
        "non-member": wire.ST_REFUSED, "member, wrong direction": wire.ST_REFUSED,
        "unknown session": wire.ST_RETRY, "oversize frame": wire.ST_ERROR,
        "micro-batch the job lacks": wire.ST_ERROR, "finished round": wire.ST_DROPPED,
        "round not reached": wire.ST_RETRY, "too far ahead": wire.ST_RETRY, "direction none": wire.ST_REFUSED}
    assert rule.check(A, _header(Tags(7, 2, 12, 0)), (1, 10)) is None    # the next round, within the window
    rule.forget(7)
    assert rule.check(A, _header(ok), None).status == wire.ST_RETRY
    assert OpenAdmission().check(C, _header(Tags(99, 0, 0, 0)), None) is None


def test_a_flood_of_tags_for_a_session_that_never_runs_cannot_refuse_real_messages():
    inbox = Inbox(max_buffered=8, per_session=4, per_sender=3)
    flood = [inbox.admit(Tags(99, 0, 0, m), C) for m in range(50)]
    assert flood[:3] == [None] * 3 and all(r.status == wire.ST_RETRY for r in flood[3:])   # sender's share
    flood2 = [inbox.admit(Tags(99, 0, 1, m), B) for m in range(50)]
    assert flood2[:1] == [None] and all(r.status == wire.ST_RETRY and "session" in r.reason for r in flood2[1:])
    # the real session still has room, and a refused message held nothing
    assert inbox.admit(Tags(1, 0, 0, 0), A) is None and inbox.admit(Tags(1, 0, 0, 1), A) is None
    inbox.deliver(Tags(1, 0, 0, 0), "m", A)
    assert inbox.take(Tags(1, 0, 0, 0), 1) == ("m", A)
    inbox.reset(99)                                   # the session is forgotten: its share is free again
    assert inbox.admit(Tags(99, 0, 5, 0), C) is None
    assert inbox.busy >= 96


def test_blob_store_keeps_a_memory_bound_pins_what_matters_and_reads_evicted_blobs_back():
    durable: dict[bytes, bytes] = {}

    def source(digest: bytes) -> bytes | None:
        return durable.get(digest)

    store = BlobStore(max_bytes=3000, source=source)
    published = store.add(b"p" * 1000, pin=True)
    rounds = []
    for r in range(10):                               # ten rounds of 1000-byte updates
        data = bytes([r]) * 1000
        durable[keccak256(data)] = data
        rounds.append(store.add(data))
        assert store.nbytes <= 3000
    assert store.cached(published) == b"p" * 1000 and store.cached(rounds[-1]) is not None
    assert store.cached(rounds[0]) is None and store.evicted >= 8
    assert store.get(rounds[0]) == bytes([0]) * 1000  # read back from the durable store, not re-cached
    assert store.cached(rounds[0]) is None
    durable[keccak256(b"x")] = b"not x"               # a source that lies is not served
    assert store.get(keccak256(b"x")) is None


def test_open_protocol_limits_rate_and_concurrency_per_peer():
    lim = PeerLimiter(rate=5.0, burst=3, concurrent=2)
    assert lim.acquire(C) is None and lim.acquire(C) is None
    assert "in progress" in lim.acquire(C)           # a third concurrent request
    lim.release(C), lim.release(C)
    assert lim.acquire(C) is None
    lim.release(C)
    assert "rate" in lim.acquire(C)                   # burst of 3 spent
    assert lim.acquire(A) is None                     # another peer is not affected
    time.sleep(0.25)
    assert lim.acquire(C) is None                     # refilled at 5 per second
    lim.release(C)
    lim.release(A)
    assert lim.acquire(A) is None                     # a large answer: served, then paid for
    lim.charge(A, 100.0)
    lim.release(A)
    assert "rate" in lim.acquire(A)


def test_bulk_port_evicts_idle_strangers_so_a_dialler_with_a_token_gets_in():
    listener = BulkListener(handshake_timeout=1.0)
    strangers = []
    try:
        for _ in range(3 * MAX_FRESH_PER_ADDR):       # idle sockets from the same address as the dialler
            strangers.append(socket.create_connection(("127.0.0.1", listener.port)))
        time.sleep(0.3)
        assert listener.parked <= MAX_FRESH_PER_ADDR   # older strangers were evicted, not newcomers refused
        token, _ = new_secret()
        pending = listener.expect(token, 5)
        t0 = time.monotonic()
        sock = dial("127.0.0.1", listener.port, token, 5)
        got = listener.take(token, pending, 5)
        assert time.monotonic() - t0 < 1.0
        got.close(), sock.close()
        time.sleep(1.6)                               # past the handshake deadline: every stranger is gone
        assert listener.parked == 0 and listener.evicted >= 2 * MAX_FRESH_PER_ADDR
    finally:
        for s in strangers:
            s.close()
        listener.close()


def test_a_blob_fetch_commits_no_memory_for_an_announced_size():
    """A peer announces a 1 GiB blob and sends nothing: the fetch fails without the GiB, and a size over
    the caller's bound is refused at the header."""
    from node.p2p import P2PError, P2PNode
    from tests.p2p.peers import DEV_KEYS

    a = P2PNode(DEV_KEYS[0], lambda addr, proto: True, timeout=5).start()
    b = P2PNode(DEV_KEYS[1], lambda addr, proto: True, timeout=5).start()
    digest = keccak256(b"announced")

    async def announce_and_stall(stream, header, timeout, requester):   # the hostile server: a size, then nothing
        import trio

        blob = Header(kind=wire.KIND_BLOB, payload_len=1 << 30, hash=header.hash)
        await b.host.write(stream, wire.encode_reply(wire.ST_BLOB, blob.encode()), timeout)
        await trio.sleep(4)
        return False

    b.blobs._answer = announce_and_stall
    try:
        a.connect(b.peer_id, b.addrs)
        rss = psutil.Process(os.getpid()).memory_info().rss
        with pytest.raises(P2PError):   # the stream ends (the library does not always honour the read deadline)
            a.fetch_blob(b.peer_id, digest, timeout=2)
        assert psutil.Process(os.getpid()).memory_info().rss - rss < 200 << 20
        with pytest.raises(wire.WireError, match="exceeds the 1048576-byte limit"):
            a.fetch_blob(b.peer_id, digest, timeout=2, max_size=1 << 20)
    finally:
        a.close()
        b.close()


def test_a_stranger_on_the_open_protocol_is_held_to_its_rate_a_registered_node_is_not():
    from node.p2p import ADAPTER_PROTOCOL, P2PError, P2PNode
    from tests.p2p.peers import DEV_KEYS, address

    registered = address(1)
    allow = lambda addr, proto: proto == ADAPTER_PROTOCOL or addr == registered  # noqa: E731 - the daemon's rule
    server = P2PNode(DEV_KEYS[0], allow, timeout=10).start()
    stranger = P2PNode(DEV_KEYS[2], lambda a, p: True, timeout=10).start()
    member = P2PNode(DEV_KEYS[1], lambda a, p: True, timeout=10).start()
    try:
        server.blobs.limiter = PeerLimiter(rate=1.0, burst=64, concurrent=2)   # slow refill: timing-proof
        h = server.serve_blob(bytes(40 << 20))      # 41 units of a 64-unit burst per request
        for node in (stranger, member):
            node.connect(server.peer_id, server.addrs)
        assert len(stranger.fetch_blob(server.peer_id, h)) == 40 << 20
        assert len(stranger.fetch_blob(server.peer_id, h)) == 40 << 20   # into debt: served, then paid for
        t0 = time.monotonic()
        with pytest.raises(P2PError, match="rate limited"):
            stranger.fetch_blob(server.peer_id, h)
        assert time.monotonic() - t0 >= 0.9                              # the refusal itself waited
        for _ in range(3):
            assert len(member.fetch_blob(server.peer_id, h)) == 40 << 20
    finally:
        for node in (stranger, member, server):
            node.close()
