"""A peer killed with SIGKILL is seen gone at once, and a pipeline wait on it ends then, not at its timeout.

The killed peer is a real node in its own OS process (tests/p2p/peers.py), killed as ``kill -9`` kills a
daemon: the kernel closes its sockets and the libp2p connection here closes with them (issue 16, item 5).
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from node.p2p import P2PNode, PipelineTransport, RecvTimeout, peer_id_from_private_key
from node.p2p.errors import PeerLeft
from tests.p2p.peers import DEV_KEYS, Peer


class _Node:
    """What a transport asks of its node, with the presence count set by the test."""

    max_frame, timeout = 1 << 20, 10.0
    peer_id = peer_id_from_private_key(DEV_KEYS[0])

    def __init__(self):
        self.generation = 0

    def expect_session(self, *args):
        pass

    def peer_generation(self, peer_id):
        return self.generation

    def recv_with_sender(self, tags, timeout):
        time.sleep(timeout)
        raise RecvTimeout("nothing")


def test_a_transport_gives_up_on_a_neighbour_that_left_not_on_one_that_is_slow():
    node = _Node()
    stages = {0: peer_id_from_private_key(DEV_KEYS[1]), 1: node.peer_id}
    t = PipelineTransport(node, 1, 0, stages)
    with pytest.raises(RecvTimeout):
        t.recv(0, (0, 0, "fwd"), timeout=0.6)
    threading.Timer(0.3, lambda: setattr(node, "generation", 1)).start()
    t0 = time.monotonic()
    with pytest.raises(PeerLeft):
        t.recv(0, (0, 0, "fwd"), timeout=30.0)
    assert time.monotonic() - t0 < 2.0
    PipelineTransport(node, 1, 1, stages)._check_present(0)   # a new round starts afresh


@pytest.mark.slow
@pytest.mark.timeout(120)


def test_a_killed_neighbour_ends_the_pipeline_wait_at_once():
    victim = Peer(4)
    me = P2PNode(DEV_KEYS[0], lambda addr, proto: True, timeout=10).start()
    try:
        victim.wait_ready()
        me.connect(victim.peer_id, victim.addrs)
        assert me.peer_generation(victim.peer_id) == 0 and me.peer_gone_for(victim.peer_id) is None
        transport = PipelineTransport(me, 9, 0, {0: victim.peer_id, 1: me.peer_id})
        # while the neighbour lives, a wait for a message it does not send is a timeout, not "left"
        with pytest.raises(RecvTimeout):
            transport.recv(0, (0, 0, "fwd"), timeout=1.0)
        threading.Timer(1.0, victim.proc.kill).start()   # SIGKILL
        t0 = time.monotonic()
        with pytest.raises(PeerLeft):
            transport.recv(0, (0, 0, "fwd"), timeout=30.0)
        assert time.monotonic() - t0 < 5.0
        assert me.peer_generation(victim.peer_id) == 1 and me.peer_gone_for(victim.peer_id) >= 0
        with pytest.raises(PeerLeft):   # nothing more is sent to it this round either
            transport.send(0, (0, 0, "bwd"), {"g": torch.zeros(2)})
        # the next round's transport starts from what is known now: the peer may come back, restarted
        PipelineTransport(me, 9, 1, {0: victim.peer_id, 1: me.peer_id})._check_present(0)
    finally:
        me.close()
        victim.stop()
