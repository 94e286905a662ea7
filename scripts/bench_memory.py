"""Idle memory of node daemons over consecutive sessions: does a finished session give its memory back?

Runs one cluster (anvil, the contracts, daemons as processes) through N small sessions one after another (the demo's
job at a small size, a different seed each) and reads every daemon's resident size once it is idle after each
session. The baseline is the same daemons' idle size after their first session, from the same run; the figure is
the growth from there to the last session.

    python scripts/bench_memory.py --sessions 5 --nodes 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def main() -> None:
    from coordinator.cluster import Cluster
    from coordinator.demo import demo_spec_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=5)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--settle", type=float, default=5.0, help="seconds idle before reading the sizes")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bsns-mem-") as wd, \
            Cluster(Path(wd), nodes=a.nodes, train_limit=400, pipeline_timeout_s=30, sync_timeout_s=45) as cl:
        cl.wait_registered(240)
        time.sleep(a.settle)
        rows.append(("start", [rss_mb(p.proc.pid) for p in cl.procs]))
        for i in range(a.sessions):
            text = demo_spec_text(rounds=3, sync_interval=5, batch_size=8, max_seq_len=32, validation_size=64,
                                  bottleneck=16, layers=[[0, 6]], seed=i)
            _spec, pid = cl.propose(text)
            sid = cl.wait_for(f"session {i + 1} to open", lambda: cl.session_of(pid), 300)
            cl.wait_for(f"session {i + 1} to publish", lambda: cl.adapters.adapter_of_session(sid), 600, poll=1)
            cl.wait_for(f"session {i + 1} done on every node", lambda: all(
                (r := cl.node_rows(p, "SELECT status FROM sessions WHERE session_id=?", (sid,)))
                and r[0]["status"] in ("done", "left") for p in cl.procs), 120)
            time.sleep(a.settle)
            rows.append((f"after session {i + 1}", [rss_mb(p.proc.pid) for p in cl.procs]))
            print(f"{rows[-1][0]}: " + ", ".join(f"{m:.0f} MB" for m in rows[-1][1]), flush=True)
    first, last = rows[1][1], rows[-1][1]
    print("\nidle resident memory per daemon (MB)")
    print("| when | " + " | ".join(f"node {i}" for i in range(len(first))) + " |")
    print("|---|" + "---|" * len(first))
    for name, sizes in rows:
        print(f"| {name} | " + " | ".join(f"{m:.0f}" for m in sizes) + " |")
    print(f"\ngrowth from session 1 to session {a.sessions} (baseline: the idle size after session 1, same run): "
          + ", ".join(f"node {i}: {l - f:+.0f} MB ({l / f:.2f}x)" for i, (f, l) in enumerate(zip(first, last))))


if __name__ == "__main__":
    main()
