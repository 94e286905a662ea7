"""What a kill -9 costs a session: rounds lost and seconds lost per kill, against a run without a kill.

One cluster on anvil (real daemons, real libp2p sockets), two sessions of the same spec, one after the other:
the first runs undisturbed (the baseline), in each of the next ones one daemon is killed with SIGKILL in the
middle of a round and started again at once (by default once a first-stage and once a last-stage daemon: the
neighbour of a killed first stage waits on a receive, that of a killed last stage fails on its next send). For each session it prints the wall time from the start of training to
completion, and for each round how many replicas' updates the final aggregate of every shard used (read
from the surviving daemons' own records). A round is lost for the killed daemon's replica when the
aggregate of some shard left that replica out. Figures of both sessions come from the same run:

    flock /tmp/bsns-heavy.lock .venv/bin/python scripts/bench_kill_restart.py

Defaults are the daemon's own timeouts (pipeline 60 s, sync 45 s) and the issue's layout (2 shards x 3
replicas, so that the other replicas can finalize a round without the killed one).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TRAINING, COMPLETED = 2, 3


def run_session(cl, spec_text: str, replicas: int, shards: int, rounds: int, interval: int,
                kill: tuple[int, int] | None) -> dict:
    """Propose, run one session to completion; with ``kill`` = (shard, replica), SIGKILL that member in the
    middle of round 1 and start it again at once."""
    _spec, pid = cl.propose(spec_text)
    sid = cl.wait_for("the session to open", lambda: cl.session_of(pid), 240)
    cl.wait_for("the session to start", lambda: int(cl.sessions.get_session(sid).state) >= TRAINING, 240, poll=0.2)
    t0 = time.monotonic()
    victim = cl.member(sid, *kill) if kill else None
    killed_at = back_at = None
    if victim is not None:
        def mid_round_1():
            rows = cl.node_rows(victim, "SELECT round, step FROM losses WHERE session_id=? ORDER BY step DESC "
                                        "LIMIT 1", (sid,))
            return rows and rows[0]["round"] == 1 and rows[0]["step"] % interval < interval - 2
        cl.wait_for("the victim to be in the middle of round 1", mid_round_1, 300, poll=0.05)
        cl.kill_node(victim, signal.SIGKILL)
        killed_at, killed_wall = time.monotonic() - t0, time.time()
        cl.start_node(victim)

        def trains_again():  # the first step the restarted daemon records after the kill
            rows = cl.node_rows(victim, "SELECT MAX(rowid) AS n FROM losses WHERE session_id=?", (sid,))
            return rows and rows[0]["n"] is not None and rows[0]["n"] > last_rowid
        rows = cl.node_rows(victim, "SELECT MAX(rowid) AS n FROM losses WHERE session_id=?", (sid,))
        last_rowid = (rows[0]["n"] or 0) if rows else 0
    done = False
    while not done:
        if victim is not None and back_at is None and trains_again():
            back_at = time.monotonic() - t0
        done = int(cl.sessions.get_session(sid).state) == COMPLETED
        if not done:
            cl.check_alive()
            time.sleep(0.2)
    seconds = time.monotonic() - t0
    started_after = None
    if victim is not None:  # the restarted daemon's "started" event: it reconnects to the members right after
        for line in (victim.data_dir / "daemon.jsonl").read_text(errors="replace").splitlines():
            ev = json.loads(line) if line.startswith("{") else {}
            if ev.get("event") == "started" and ev.get("t", 0) > killed_wall:
                started_after = round(ev["t"] - killed_wall, 1)
                break
    # the final aggregate's set, as every surviving member recorded it (peers_used: updates aggregated)
    used: dict[int, int] = {}
    for p in cl.procs:
        if p is victim:
            continue
        a = cl.sessions.assignment_of(sid, p.address)
        if kill is not None and a.replica == kill[1]:
            continue  # the victim's own pipeline partner: it records the same rounds from the other side
        for r in cl.node_rows(p, "SELECT round, peers_used FROM rounds WHERE session_id=?", (sid,)):
            if r["peers_used"] is not None:
                used[r["round"]] = min(used.get(r["round"], replicas), int(r["peers_used"]))
    lost = [r for r in range(rounds) if used.get(r, replicas) < replicas]
    first_back = None
    if kill is not None:
        part = cl.node_rows(cl.member(sid, kill[0], 0), "SELECT round, peers_used FROM rounds WHERE session_id=? "
                                                        "ORDER BY round", (sid,))
        first_back = next((r["round"] for r in part if r["round"] >= 1 and r["peers_used"] == replicas), None)
    return {"session": sid, "seconds": round(seconds, 1), "rounds_lost": lost, "used": used,
            "killed_at": None if killed_at is None else round(killed_at, 1),
            "trains_again_after": None if back_at is None else round(back_at - killed_at, 1),
            "started_after": started_after,
            "first_round_with_victim": first_back}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--interval", type=int, default=8, help="steps per round (sync interval)")
    ap.add_argument("--pipeline-timeout", type=float, default=60.0)
    ap.add_argument("--sync-timeout", type=float, default=45.0)
    ap.add_argument("--train-limit", type=int, default=160)
    ap.add_argument("--victims", default="0,1;1,1", help="shard,replica of the daemon to kill, one session each")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    from coordinator.cluster import Cluster
    from coordinator.demo import demo_spec_text

    layers = [[i * 6 // args.shards, (i + 1) * 6 // args.shards] for i in range(args.shards)]
    spec_text = demo_spec_text(rounds=args.rounds, sync_interval=args.interval, batch_size=8, max_seq_len=16,
                               micro_batches=2, validation_size=32, bottleneck=8, layers=layers,
                               min_replicas=args.replicas)
    kills = [tuple(int(x) for x in v.split(",")) for v in args.victims.split(";")]
    with tempfile.TemporaryDirectory(prefix="bsns-killbench-") as tmp:
        with Cluster(Path(tmp), nodes=args.shards * args.replicas, train_limit=args.train_limit,
                     pipeline_timeout_s=args.pipeline_timeout, sync_timeout_s=args.sync_timeout,
                     commit_timeout_blocks=240) as cl:
            cl.wait_registered(300)
            base = run_session(cl, spec_text, args.replicas, args.shards, args.rounds, args.interval, None)
            print(f"baseline (no kill): session {base['session']}, {base['seconds']} s, rounds lost "
                  f"{len(base['rounds_lost'])}", flush=True)
            hits = []
            for kill in kills:
                hit = run_session(cl, spec_text, args.replicas, args.shards, args.rounds, args.interval, kill)
                hit["victim"], hit["seconds_lost"] = list(kill), round(hit["seconds"] - base["seconds"], 1)
                hits.append(hit)
                print(f"kill -9 of shard {kill[0]} replica {kill[1]} at {hit['killed_at']} s into training: "
                      f"session {hit['session']}, {hit['seconds']} s; the daemon was up again {hit['started_after']} s and "
                      f"trained again "
                      f"{hit['trains_again_after']} s after the kill; first round with its replica in the "
                      f"aggregate: {hit['first_round_with_victim']}; updates aggregated per round (fewest over the "
                      f"shards) {hit['used']}", flush=True)
    print(f"\n| kill -9 of | rounds lost | seconds lost | session | baseline session |\n|---|---|---|---|---|")
    for hit in hits:
        print(f"| shard {hit['victim'][0]} replica {hit['victim'][1]} | {len(hit['rounds_lost'])} "
              f"{hit['rounds_lost']} | {hit['seconds_lost']} | {hit['seconds']} s | {base['seconds']} s |")
    print(f"per kill (mean of {len(hits)}): rounds lost {sum(len(h['rounds_lost']) for h in hits) / len(hits):.2f}, "
          f"seconds lost {sum(h['seconds_lost'] for h in hits) / len(hits):.1f}; the baseline lost "
          f"{len(base['rounds_lost'])} rounds")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "baseline": base,
                                        "kills": hits}, indent=2, default=str))


if __name__ == "__main__":
    main()
