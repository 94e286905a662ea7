"""Which attack slows a member's transfer, and by how much: each hostile peer of
tests/p2p/test_hostile_peers.py alone against the victim, then all of them at once, each case beside clean
runs of the same transfer in the same run.

Run from the repository root: ``PYTHONPATH=. .venv/bin/python scripts/bench_hostile_peers.py [REPS]`` (about
a minute per repetition; REPS defaults to 2). Prints seconds per transfer of 16 x 4 x 4 MiB for every run, and
per case the mean and its ratio to the mean of the clean runs (the issue's goal: at most 2x with all attacks
at once). Each attack runs in processes of its own, started for its case and stopped after it.
"""
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.p2p.hostile import hold_sockets
from tests.p2p.peers import Peer, address
from tests.p2p.test_hostile_peers import BOUND, MICROS, NBYTES, STEPS, _both

V, M = 0, 1
FLOODERS, HAMMERERS = (2, 4), (3, 5)    # one process per attack case that needs one (``stop`` is final)

if __name__ == "__main__":
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    ma = address(M)
    peers = {V: Peer(V, allowed=[ma] + [address(i) for i in FLOODERS], open=False, open_adapter=True)}
    for i in (M, *FLOODERS, *HAMMERERS):
        peers[i] = Peer(i)
    for p in peers.values():
        p.wait_ready()
    v = peers[V]
    for i in peers:
        if i != V:
            peers[i].call("connect", v.peer_id, v.addrs)
    sessions = iter(range(5, 60))
    for s in range(5, 60):   # declared up front, as in the test: the non-member injects into declared sessions
        v.call("expect", s, 0, {"fwd": ma}, BOUND, MICROS)
    blob = v.call("serve", bytes(16 << 20))
    bp, pp = v.call("bulk_port"), int(v.addrs[0].split("/")[4])
    for i in (*FLOODERS, *HAMMERERS):
        peers[i].call("nice")
    ctx = mp.get_context("spawn")
    opened = ctx.Queue()   # kept referenced: a queue collected before the holder starts breaks its start

    def run():
        s = next(sessions)
        took = _both(v, ("take_many", s, STEPS, MICROS, ma), peers[M], ("send_many", v.peer_id, s, STEPS, MICROS, NBYTES))
        v.call("forget", s)   # as the daemon ends a session: the last step's tags are held until then
        return took

    def holder():
        h = ctx.Process(target=hold_sockets, args=([bp, pp], 64, 3600.0, opened), daemon=True)
        h.start()
        return h.kill

    def hammer(i):
        peers[i].call("hammer", v.peer_id, blob, 40)
        return lambda: peers[i].call("stop")

    def flood(i):
        peers[i].call("flood", v.peer_id, list(range(5, 60)), 99)
        return lambda: peers[i].call("stop")

    cases = [("holder", [holder]), ("hammer", [lambda: hammer(HAMMERERS[0])]),
             ("flood", [lambda: flood(FLOODERS[0])]),
             ("all", [holder, lambda: hammer(HAMMERERS[1]), lambda: flood(FLOODERS[1])])]
    run()   # warm-up: links, pools, allocator
    times = {"clean": [run() for _ in range(reps)]}
    print("clean", *(f"{t:.2f}" for t in times["clean"]), flush=True)
    for name, starters in cases:
        stops = [start() for start in starters]
        time.sleep(2)
        times[name] = [run() for _ in range(reps)]
        for stop in stops:
            stop()
        time.sleep(1)
        times["clean"] += [run()]
        print(name, *(f"{t:.2f}" for t in times[name]), "| clean", f"{times['clean'][-1]:.2f}", flush=True)
    print("victim", v.call("counters"), flush=True)
    clean = statistics.mean(times["clean"])
    print(f"clean mean {clean:.3f} s over {len(times['clean'])} runs")
    for name, _ in cases:
        print(f"{name:7s} mean {statistics.mean(times[name]):.3f} s  {statistics.mean(times[name]) / clean:.2f}x "
              f"(runs {', '.join(f'{t / clean:.2f}x' for t in times[name])})")
    for p in peers.values():
        p.stop()
