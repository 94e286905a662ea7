"""The host's gate (``node.p2p.gate``) under attack: a peer that keeps sending refused messages is sent
away (disconnected, then refused connections and streams) while a session's member is never locked out,
and one IP cannot hold more than its share of connections. Units on the bookkeeping, then real nodes on
127.0.0.1 in this process."""

from __future__ import annotations

import time

import pytest
import torch

from node.p2p import P2PNode, Tags
from node.p2p.errors import P2PError
from node.p2p.gate import PeerGate, RefusalBudget
from node.p2p.identity import peer_id_from_private_key
from node.p2p.limits import REFUSAL_BUDGET
from tests.p2p.peers import DEV_KEYS, address

pytestmark = pytest.mark.timeout(120)

A, B = "0x" + "aa" * 20, "0x" + "bb" * 20


def test_a_refusal_budget_is_a_bucket_per_peer():
    budget = RefusalBudget(budget=4, refill=1000.0)
    assert [budget.spend(A) for _ in range(4)] == [False] * 4
    time.sleep(0.01)                              # refilled: an occasional refusal never sends a peer away
    slow = RefusalBudget(budget=4, refill=0.0)
    assert [slow.spend(A) for _ in range(5)] == [False] * 4 + [True]
    assert slow.spend(B) is False                 # per peer
    assert [slow.spend(A) for _ in range(5)] == [False] * 4 + [True]   # full again after it overran


def test_the_gate_refuses_a_peer_sent_away_and_caps_connections_per_ip():
    gate = PeerGate(per_ip=2)
    away, other = peer_id_from_private_key(DEV_KEYS[2]), peer_id_from_private_key(DEV_KEYS[3])
    gate.send_away(address(2), seconds=0.3)
    assert gate.acquire_connection(away, "10.0.0.1") is False     # right after the handshake names it
    assert gate.acquire_stream(away, None) is False
    assert gate.acquire_connection(other, "10.0.0.1") is True
    assert gate.turned_away == 2
    time.sleep(0.35)
    assert gate.acquire_connection(away, "10.0.0.1") is True      # the cool-down is over
    assert gate.acquire_connection(other, "10.0.0.1") is False    # a third connection from one IP
    assert gate.over_ip_limit == 1 and gate.acquire_connection(other, "10.0.0.2") is True
    assert gate.acquire_connection("", "10.0.0.1") is True        # before the upgrade only the IP is known
    gate.release_connection(away, "10.0.0.1")
    assert gate.connections_from("10.0.0.1") == 1 and gate.acquire_connection(other, "10.0.0.1") is True


@pytest.fixture
def trio_of_nodes():
    allow = lambda addr, proto: True  # noqa: E731   (registered: authorised, but not all members)
    victim, member, outsider = (P2PNode(DEV_KEYS[i], allow, timeout=10).start() for i in (0, 1, 2))
    for n in (member, outsider):
        n.connect(victim.peer_id, victim.addrs)
    victim.expect_session(5, 0, {"fwd": member.eth_address}, 1 << 20, 4)
    yield victim, member, outsider
    for n in (victim, member, outsider):
        n.close()


def test_a_peer_past_its_refusal_budget_is_sent_away_and_a_member_is_not(trio_of_nodes):
    victim, member, outsider = trio_of_nodes
    small = torch.zeros(256)
    refused = 0
    for i in range(REFUSAL_BUDGET + 8):
        try:
            outsider.send_tensor(victim.peer_id, Tags(5, 0, 0, i % 4), small, timeout=2)
        except P2PError:
            refused += 1
    assert refused == REFUSAL_BUDGET + 8
    assert victim.pipeline.sent_away == 1
    # sent away: disconnected, and a new connection is refused as soon as the handshake names it
    time.sleep(0.5)
    assert outsider.eth_address not in victim.connected_peers()
    turned = victim.host.gate.turned_away
    with pytest.raises(P2PError):
        outsider.send_tensor(victim.peer_id, Tags(5, 0, 0, 0), small, timeout=2)
    assert victim.host.gate.turned_away > turned
    assert victim.pipeline.refused <= REFUSAL_BUDGET + 2   # past the budget, nothing reaches the handler
    # the member's refused messages (a direction it does not send) never send it away ...
    for _ in range(REFUSAL_BUDGET + 8):
        with pytest.raises(P2PError):
            member.send_tensor(victim.peer_id, Tags(5, 0, 0, 0, "bwd"), small, timeout=2)
    # ... and its transfer goes on
    assert member.send_tensor(victim.peer_id, Tags(5, 0, 0, 0), small, timeout=5)
    assert torch.equal(victim.recv(Tags(5, 0, 0, 0), timeout=5), small)
    assert victim.pipeline.sent_away == 1


def test_identities_from_one_ip_share_its_connection_limit():
    """Sybil strangers: peer ids are free, so each new identity from one machine is one more connection; the
    per-IP limit (here lowered to 2) bounds them all together."""
    allow = lambda addr, proto: True  # noqa: E731
    victim = P2PNode(DEV_KEYS[0], allow, timeout=5).start()
    victim.host.gate.per_ip = 2
    sybils = [P2PNode(DEV_KEYS[i], allow, timeout=5).start() for i in (3, 4, 5)]
    try:
        for s in sybils:
            try:
                s.connect(victim.peer_id, victim.addrs)
            except P2PError:
                pass
        time.sleep(0.5)
        held = [s.eth_address for s in sybils if s.eth_address in victim.connected_peers()]
        assert len(held) == 2 and victim.host.gate.over_ip_limit >= 1
        assert victim.host.gate.connections_from("127.0.0.1") == 2
        sybils[0].close()                           # a slot freed is a slot another identity may take
        time.sleep(0.5)
        assert victim.host.gate.connections_from("127.0.0.1") == 1
    finally:
        for s in sybils:
            s.close()
        victim.close()
