"""The blob store keeps what is still needed: the publisher pins the published adapter (the manifest and this
node's shard), so it is served from memory and never evicted while the node runs; a session that ended here is
forgotten by the p2p node (its pipeline messages are refused). Through the real ``RealNet`` over a real
``P2PNode`` with a small memory bound, and the publisher against the fakes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from node.daemon.publish import Publisher, manifest_bytes
from node.daemon.real_ports import RealNet
from node.hashing import keccak256
from node.p2p import P2PNode, Tags
from node.p2p.errors import P2PError
from node.p2p.store import parse_hash
from tests.daemon.fakes import FakeNet
from tests.p2p.peers import DEV_KEYS

pytestmark = pytest.mark.timeout(120)


def test_a_pinned_adapter_stays_in_memory_and_an_ended_session_is_refused():
    allow = lambda addr, proto: True  # noqa: E731
    node = P2PNode(DEV_KEYS[0], allow, timeout=5, blob_memory=4 << 20).start()
    member = P2PNode(DEV_KEYS[1], allow, timeout=5).start()
    try:
        member.connect(node.peer_id, node.addrs)
        net = RealNet(node, lambda sid: [])
        adapter = bytes(range(256)) * 4096                     # 1 MiB
        h = net.pin(adapter)
        rounds = [net.serve(bytes([i]) * (1 << 20)) for i in range(12)]   # 12 MiB of later rounds over a 4 MiB bound
        assert node.store.cached(parse_hash(h)) == adapter      # pinned: still in memory, served without a disk read
        assert node.store.cached(parse_hash(rounds[0])) is None and node.store.evicted >= 8
        assert member.fetch_blob(node.peer_id, h, timeout=5) == adapter

        node.expect_session(9, 0, {"fwd": member.eth_address}, 1 << 20, 2)
        assert member.send_tensor(node.peer_id, Tags(9, 0, 0, 0), torch.ones(4), timeout=5)
        net.end_session(9)
        assert node.inbox.pending() == []
        with pytest.raises(P2PError, match="not expecting session 9"):
            member.send_tensor(node.peer_id, Tags(9, 0, 0, 1), torch.ones(4), timeout=0.5)
    finally:
        member.close()
        node.close()


def test_the_publisher_pins_the_manifest_and_this_nodes_shard(tmp_path):
    from node.chain.clients import SessionState
    from node.daemon.state import StateStore
    from tests.daemon.specs import sst2_spec
    from node.job import JobSpec

    spec = JobSpec.from_text(sst2_spec("pins", method="houlsby", config={"bottleneck_size": 8},
                                       layers=[[0, 3], [3, 6]], memory_mb=[1024, 1024],
                                       training={"rounds": 1, "sync_interval": 1, "batch_size": 2,
                                                 "learning_rate": 0.001}))
    shards = [b"shard zero final", b"shard one final"]
    hashes = ["0x" + keccak256(b).hex() for b in shards]
    store = StateStore(tmp_path)
    try:
        for b in shards:
            store.put_blob(b)
        net = FakeNet()
        view = net.port("me")
        chain = SimpleNamespace(final_hash=lambda sid, rnd, shard: hashes[shard])
        sessions = SimpleNamespace(get_session=lambda sid: SimpleNamespace(state=SessionState.COMPLETED))
        import threading

        pub = Publisher(sessions, SimpleNamespace(), chain, view, store, threading.Event(), "cpu")
        pub.publish(3, spec, 1, 0, None)          # shard 1: serves and pins, publishing is shard 0's
        manifest = manifest_bytes(spec, 3, hashes)
        assert net.pinned["me"] == {"0x" + keccak256(manifest).hex(), hashes[1]}
    finally:
        store.close()
