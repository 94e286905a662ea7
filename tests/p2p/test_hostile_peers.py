"""Hostile peers in separate processes against one victim node, while a legitimate member's transfer runs.

The victim (the daemon's setup: ``SessionAdmission``, ``/bsns/adapter/1`` open to anyone) expects
session traffic from one member. Attackers, each its own OS process: a member sending a frame larger
than the job's bound; a stranger holding idle sockets on the bulk and libp2p ports; a stranger
hammering the open protocol with concurrent requests for a 16 MB blob; a registered non-member
injecting tensors into the session and flooding tags of a session that never runs (sent away once it
overruns its budget of refused messages). Each must be refused, the victim's memory must stay bounded, and the member's transfer under attack is timed
against its clean time measured in the same run: it must keep going (within 5x: before, it stopped); the pace
itself (goal 2x) is measured by scripts/bench_hostile_peers.py.

The attackers run at the lowest CPU priority (``nice 19``): on this one 2-core machine their own CPU
would otherwise compete with the victim's and the member's, which a remote attacker's does not; what
the ratio measures is the victim's cost of refusing and serving them.
"""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from tests.p2p.hostile import hold_sockets
from tests.p2p.peers import Peer, RemoteError, address

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

VICTIM, MEMBER, NON_MEMBER, STRANGER = 0, 1, 2, 3
STEPS, MICROS, NBYTES = 16, 4, 4 << 20         # 256 MB per run, 4 MiB messages
BOUND = NBYTES + (1 << 20)                      # the job's frame bound at the victim


def _both(taker: Peer, take: tuple, sender: Peer, send: tuple) -> float:
    """Start ``take`` on the victim, run ``send`` on the member; the victim's time to take everything."""
    taker.cmds.put(take)
    sender.call(*send, timeout=180)
    res = taker.results.get(timeout=180)
    if res[0] == "err":
        raise RemoteError(res[1], res[2])
    return res[1]


def test_hostile_peers_are_refused_and_a_legitimate_transfer_keeps_its_pace():
    member_addr, non_member_addr = address(MEMBER), address(NON_MEMBER)
    peers = {VICTIM: Peer(VICTIM, allowed=[member_addr, non_member_addr], open=False, open_adapter=True),
             MEMBER: Peer(MEMBER), NON_MEMBER: Peer(NON_MEMBER), STRANGER: Peer(STRANGER)}
    holder = None
    try:
        for p in peers.values():
            p.wait_ready()
        v = peers[VICTIM]
        for i in (MEMBER, NON_MEMBER, STRANGER):
            peers[i].call("connect", v.peer_id, v.addrs)
        for session in (5, 6, 7, 8, 9):
            v.call("expect", session, 0, {"fwd": member_addr}, BOUND, MICROS)
        blob = v.call("serve", bytes(16 << 20))
        bulk_port = v.call("bulk_port")
        p2p_port = int(v.addrs[0].split("/")[4])

        # a member's frame above the job's bound is refused at its header
        import torch

        with pytest.raises(RemoteError, match="exceeds session 5's"):
            peers[MEMBER].call("send", v.peer_id, (5, 0, 0, 0), torch.zeros(BOUND // 4 + 1))

        def run(session: int) -> float:
            return _both(peers[VICTIM], ("take_many", session, STEPS, MICROS, member_addr),
                         peers[MEMBER], ("send_many", v.peer_id, session, STEPS, MICROS, NBYTES))

        run(6)   # warm-up: links, pools, allocator

        clean = (run(5) + run(8)) / 2   # the mean of two runs each side: the machine is shared and noisy
        rss_clean = v.call("rss")

        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        holder = ctx.Process(target=hold_sockets, args=([bulk_port, p2p_port], 64, 60.0, out), daemon=True)
        holder.start()
        for i in (STRANGER, NON_MEMBER):
            peers[i].call("nice")
        peers[STRANGER].call("hammer", v.peer_id, blob, 40)
        peers[NON_MEMBER].call("flood", v.peer_id, [7, 9], 99)
        time.sleep(3)
        attacked = (run(7) + run(9)) / 2
        rss_attacked = v.call("rss")
        for i in (STRANGER, NON_MEMBER):
            peers[i].call("stop")
        time.sleep(0.5)
        flood, hammer, victim = peers[NON_MEMBER].call("report"), peers[STRANGER].call("report"), v.call("counters")
        print(f"clean {clean:.2f} s, attacked {attacked:.2f} s ({attacked / clean:.2f}x); rss +{(rss_attacked - rss_clean) >> 20} MB;"
              f" non-member {flood}; stranger {hammer}; victim {victim}")

        # The transfer must go on at a working pace while the node is under attack. Before these defences it did
        # not: 256 idle sockets made every bulk transfer fail, and a stranger's blob requests held a registered
        # peer's first message for 26 s instead of 0.01 s. The pace itself is a benchmark figure, not a test
        # assertion (the whole suite runs two workers side by side): scripts/bench_hostile_peers.py measures it
        # (goal 2x; 2.14x and 2.60x with all four attacks at once before the refusal budget; docs/security.md). The bound here
        # only tells "slower" from "stopped".
        # With the refusal budget this test measured 1.79x alone, the benchmark at most 1.88x in 16 runs; the largest
        # ratio seen in a full-suite run (beside another worker's clusters) was 3.05x, before the budget: 5x keeps
        # a margin over that and still fails a transfer that stalls.
        assert attacked <= 5 * clean, f"the member's transfer took {attacked:.2f} s under attack, {clean:.2f} s clean"
        assert rss_attacked - rss_clean < 200 << 20
        # the non-member's tensors were refused at the header, its ghost tags held nothing
        assert flood.get("injected", 0) == 0 and flood.get("Unauthorized", 0) > 0
        assert flood.get("ghost taken", 0) == 0 and sum(v for k, v in flood.items() if k.startswith("ghost")) > 0
        assert 99 not in victim["pending"] and victim["refused"] > 0
        # past its budget of refused messages the non-member was sent away: its redials and streams were refused
        # before any protocol negotiation (node.p2p.gate), while the member, which is declared, never was
        assert victim["sent_away"] >= 1 and victim["turned_away"] > 0
        # the stranger was served at the per-peer rate at most, and told so
        assert hammer.get("blob rate limited", 0) + hammer.get("blob busy", 0) > 0 and victim["blob_limited"] > 0
        # idle sockets were evicted rather than left to block the bulk port
        assert victim["evicted"] > 0
    finally:
        if holder is not None:
            holder.kill()
        for p in peers.values():
            p.stop()
