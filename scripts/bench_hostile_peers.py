"""Which attack slows a member's transfer, and by how much: each hostile peer of
tests/p2p/test_hostile_peers.py alone against the victim, each beside clean runs of the same transfer.

Run from the repository root: ``PYTHONPATH=. .venv/bin/python scripts/bench_hostile_peers.py`` (about a
minute; prints seconds per transfer of 16 x 4 x 4 MiB, two runs per case).
"""
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.p2p.hostile import hold_sockets
from tests.p2p.peers import Peer, address
from tests.p2p.test_hostile_peers import _both, STEPS, MICROS, NBYTES, BOUND
V, M, N, S = 0, 1, 2, 3
if __name__ == "__main__":
    ma, na = address(M), address(N)
    peers = {V: Peer(V, allowed=[ma, na], open=False, open_adapter=True), M: Peer(M), N: Peer(N), S: Peer(S)}
    for p in peers.values(): p.wait_ready()
    v = peers[V]
    for i in (M, N, S): peers[i].call("connect", v.peer_id, v.addrs)
    for s in range(5, 40): v.call("expect", s, 0, {"fwd": ma}, BOUND, MICROS)
    blob = v.call("serve", bytes(16 << 20)); bp = v.call("bulk_port"); pp = int(v.addrs[0].split("/")[4])
    for i in (N, S): peers[i].call("nice")
    sess = iter(range(5, 40))
    def run(): return _both(v, ("take_many", (s := next(sess)), STEPS, MICROS, ma), peers[M], ("send_many", v.peer_id, s, STEPS, MICROS, NBYTES))
    run()
    print("clean", run(), run(), flush=True)
    ctx = mp.get_context("spawn"); out = ctx.Queue()
    h = ctx.Process(target=hold_sockets, args=([bp, pp], 64, 15.0, out), daemon=True); h.start(); time.sleep(2)
    print("holder", run(), run(), flush=True); h.kill(); time.sleep(1)
    print("clean", run(), flush=True)
    peers[S].call("hammer", v.peer_id, blob, 40); time.sleep(2)
    print("hammer", run(), run(), flush=True); peers[S].call("stop"); time.sleep(1)
    print("clean", run(), flush=True)
    peers[N].call("flood", v.peer_id, list(range(20, 40)), 99); time.sleep(2)
    print("flood", run(), run(), flush=True); peers[N].call("stop")
    for p in peers.values(): p.stop()
