"""Fuzzing (hypothesis) of the gossip announcement decoder, the daemon's ``RealNet._on_gossip``: any bytes
a peer publishes on a session topic are dropped or taken, never an exception or an unbounded
allocation, and only the member at (shard, replica) can place an announcement."""

from __future__ import annotations

import json

import pytest
from hypothesis import strategies as st

from tests.support.fuzz import EXAMPLES, fuzz, mutated

pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("examples", EXAMPLES)
def test_gossip_announcement_decoder(examples):
    """The daemon's announcement handler drops anything malformed or from the wrong member, silently."""
    from node.daemon.ports import Member
    from node.daemon.real_ports import RealNet

    member = Member("0x" + "aa" * 20, 0, 0, "16Uiu2HAmPeer", "/ip4/127.0.0.1/tcp/1")
    net = RealNet(node=None, members_of=lambda session: [member])
    good = {"session": 1, "round": 0, "shard": 0, "replica": 0, "hash": "0x" + "11" * 32, "samples": 10,
            "peer": "16Uiu2HAmPeer", "extra": {}}
    values = st.one_of(st.integers(-2**70, 2**70), st.floats(), st.text(max_size=8), st.none(),
                       st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
    edited = st.builds(lambda k, v: json.dumps({**good, k: v}, default=str).encode(),
                       st.sampled_from(sorted(good)), values)
    inputs = st.one_of(st.binary(max_size=300), mutated([json.dumps(good).encode()]), edited)

    def check(data: bytes) -> None:
        net._on_gossip(1, member.address, data)
        net._on_gossip(1, "0x" + "bb" * 20, data)
    fuzz(examples, inputs, check, warmup=json.dumps(good).encode())
    assert len(net.announcements(1, 0, 0)) <= 1
