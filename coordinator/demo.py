"""`bsns demo`: the README's first command, the main job end to end on this machine.

MiniLM on SST-2 with Houlsby adapters, 2 shards x 2 replicas, at least 3 sync rounds, on a ``Cluster``
(coordinator.cluster): it evaluates the seeded initial adapter and the published one on the held-back split,
fetches the published adapter from the peers (verifying each hash against the chain), and prints the report
(coordinator.demo_report).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from coordinator.cluster import Cluster, ClusterError

DEMO_SPEC = """\
# The demo job: all-MiniLM-L6-v2 on SST-2 with Houlsby bottleneck adapters, two shards x two replicas.
name = "demo-minilm-sst2-houlsby"

[model]
id = "minilm"

[data]
dataset = "sst2"
path = "data/sst2/train.tsv"
distribution = "{distribution}"
alpha = 1.0
max_seq_len = {max_seq_len}
validation_size = {validation_size}

[task]
kind = "sequence-classification"
num_labels = 2

[method]
name = "{method}"
config = {method_config}

[shards]
layers = {layers}
memory_mb = {memory_mb}
min_replicas = {min_replicas}

[training]
rounds = {rounds}
sync_interval = {sync_interval}
batch_size = {batch_size}
micro_batches = {micro_batches}
learning_rate = {learning_rate}
seed = {seed}
aggregation = "{aggregation}"
trim_fraction = {trim_fraction}
"""


def demo_spec_text(**over) -> str:
    """The demo's spec text; any field can be changed by name (tests run it at small sizes, with other methods,
    layouts and aggregation rules). ``bottleneck`` sets the Houlsby width unless ``method_config`` is given."""
    params = dict(distribution="iid", max_seq_len=48, validation_size=872, bottleneck=32, min_replicas=1,
                  rounds=4, sync_interval=30, batch_size=16, micro_batches=2, learning_rate=2e-3, seed=0,
                  aggregation="fedavg", trim_fraction=0.1, method="houlsby", method_config=None,
                  layers=[[0, 3], [3, 6]])
    params.update(over)
    if params["method_config"] is None:
        params["method_config"] = f"{{ bottleneck_size = {params['bottleneck']} }}"
    params["memory_mb"] = [1024] * len(params["layers"])
    return DEMO_SPEC.format(**params)


def run_demo(workdir: Path | None = None, *, rounds: int = 4, sync_interval: int = 30, batch_size: int = 16,
             max_seq_len: int = 48, keep: bool = False, train_limit: int | None = None,
             timeout: float = 14 * 60, console=None) -> dict:
    """The whole demo; returns the summary dict (also written to ``workdir/summary.json``)."""
    import tempfile

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from coordinator.demo_report import collect, loss_plot, print_summary
    from coordinator.remote_adapter import fetch_adapter
    from node.train.evaluate import evaluate_adapter

    console = console or Console()
    t_start = time.monotonic()
    # Ctrl-C, and SIGTERM like it, stop the demo: the cluster's context manager then stops every process it started.
    # SIGINT's handler is set, not inherited: a shell starts background jobs with SIGINT ignored, and Python keeps
    # an inherited "ignore" (a demo started with `&` would otherwise run on after Ctrl-C's signal)
    prev = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    workdir = Path(workdir or tempfile.mkdtemp(prefix="bsns-demo-"))
    spec_text = demo_spec_text(rounds=rounds, sync_interval=sync_interval, batch_size=batch_size,
                               max_seq_len=max_seq_len)
    summary: dict = {"workdir": str(workdir)}
    with Cluster(workdir, nodes=4, train_limit=train_limit) as cl:
        console.print(f"[bold]bsns demo[/] anvil at {cl.chain.url}, contracts deployed "
                      f"(registry {cl.deployment.address('NodeRegistry')}); 4 node daemons starting; logs in {workdir}")
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=console) as prog:
            reg = prog.add_task("nodes registered", total=4)
            cl.wait_for("4 nodes to register", lambda: prog.update(reg, completed=cl.registry.active_count())
                        or cl.registry.active_count() >= 4, timeout=300)
            spec, pid = cl.propose(spec_text)
            vote = prog.add_task(f"proposal {pid}: votes", total=4)

            def votes():
                f, a = cl.gov.proposal_votes(pid)
                prog.update(vote, completed=f + a)
                return cl.session_of(pid)
            sid = cl.wait_for("the proposal to pass and be executed", votes, timeout=180)
            join = prog.add_task(f"session {sid}: joined", total=4)

            def started():
                info = cl.sessions.get_session(sid)
                prog.update(join, completed=sum(cl.sessions.get_shard(sid, s).joined for s in range(info.num_shards)))
                if int(info.state) == 4:
                    raise ClusterError(f"session {sid} failed to start")
                return int(info.state) >= 2
            cl.wait_for("the session to start", started, timeout=180)
            shards = spec.num_shards
            bars = [prog.add_task(f"shard {s}: rounds final", total=spec.training.rounds) for s in range(shards)]
            steps_bar = prog.add_task("replica 0: training steps", total=spec.training.rounds * spec.training.sync_interval)

            def progress():
                done = cl.rounds_done(sid, shards)
                for s, b in enumerate(bars):
                    prog.update(b, completed=done[s])
                rows = cl.node_rows(cl.member(sid, 0, 0) or cl.procs[0], "SELECT COUNT(*) AS n FROM losses")
                if rows:
                    prog.update(steps_bar, completed=rows[0]["n"])
                return int(cl.sessions.get_session(sid).state) == 3
            cl.wait_for("the session to complete", progress, timeout=max(60.0, timeout - (time.monotonic() - t_start)))
            progress()  # the bars show the final state
            pub = prog.add_task("adapter published", total=1)
            adapter_id = cl.wait_for("the adapter to be published",
                                     lambda: cl.adapters.adapter_of_session(sid), timeout=120)
            prog.update(pub, completed=1)

        # fetch the published adapter from the peers serving it, verify against chain, evaluate
        out = workdir / "adapter"
        fetched = fetch_adapter(cl.w3, cl.deployment, adapter_id, out, spec_dirs=[cl.procs[0].data_dir / "specs"])
        console.print(f"fetched adapter {adapter_id} from peers: {len(fetched['shards'])} shard files, every hash "
                      f"matches the chain; written to {out} ({fetched['format']} format)")
        console.print("evaluating on the held-back split (before / after) ...")
        before = evaluate_adapter(spec, None)
        after = evaluate_adapter(spec, fetched["state"])
        summary.update(collect(cl, spec, sid, pid, adapter_id, before, after))
        png = workdir / "loss.png"
        loss_plot(summary["losses"], png, spec.training.sync_interval)
        summary["loss_png"] = str(png)
    for sig, handler in prev.items():
        signal.signal(sig, handler)
    summary["wall_seconds"] = round(time.monotonic() - t_start, 1)
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print_summary(console, summary)
    return summary
