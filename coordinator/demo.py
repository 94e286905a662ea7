"""`bsns demo` and the cluster harness the end-to-end tests share.

``Cluster`` starts a throwaway anvil (1 s blocks, so commit deadlines pass while nodes wait), deploys
the contracts from anvil's dev account 0, writes one ``node.toml`` per node (dev accounts 1..n, a free
TCP port each) and starts each daemon as a separate OS process (``bsns node run``). It proposes a
job from the dev account 0 (not a node), and reads progress from the chain and from the daemons' own
state files. ``stop()`` (also on Ctrl-C and on any exception, via the context manager) terminates
every process it started: SIGTERM, then SIGKILL after a grace period.

``run_demo`` is the README's first command: MiniLM on SST-2 with Houlsby adapters, 2 shards x 2
replicas, at least 3 sync rounds; it evaluates the seeded initial adapter and the published one on
the held-back split, fetches the published adapter from the peers (verifying each hash against the
chain), and prints bytes moved per node, transactions and gas, time per round and a loss-curve PNG.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from node.errors import BsnsError

REPO = Path(__file__).resolve().parents[1]


class DemoError(BsnsError):
    """The demo could not complete (a daemon died, the session failed, a timeout passed)."""


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
name = "houlsby"
config = {{ bottleneck_size = {bottleneck} }}

[shards]
layers = [[0, 3], [3, 6]]
memory_mb = [1024, 1024]
min_replicas = {min_replicas}

[training]
rounds = {rounds}
sync_interval = {sync_interval}
batch_size = {batch_size}
micro_batches = {micro_batches}
learning_rate = {learning_rate}
seed = {seed}
aggregation = "{aggregation}"
"""


def demo_spec_text(**over) -> str:
    params = dict(distribution="iid", max_seq_len=48, validation_size=872, bottleneck=32, min_replicas=1,
                  rounds=4, sync_interval=30, batch_size=16, micro_batches=2, learning_rate=2e-3, seed=0,
                  aggregation="fedavg")
    params.update(over)
    return DEMO_SPEC.format(**params)


@dataclass
class NodeProc:
    index: int
    config: Path
    data_dir: Path
    log: Path
    dev_account: int
    port: int
    proc: subprocess.Popen | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Cluster:
    """anvil + deployment + n daemons in separate processes, under ``workdir``."""

    workdir: Path
    nodes: int = 4
    block_time: float = 1.0
    voting_period_blocks: int = 6
    join_window_blocks: int = 6
    commit_timeout_blocks: int = 10
    pipeline_timeout_s: float = 30.0
    sync_timeout_s: float = 20.0
    train_limit: int | None = None
    threads: int = 1
    procs: list[NodeProc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self._anvil_cm = None
        self.chain = None

    # -- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> "Cluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        from coordinator.deploy import DeployParams, deploy
        from coordinator.localchain import throwaway_anvil
        from node.chain import rpc
        from node.chain.keys import dev_key
        from node.chain.sender import TxSender

        self.workdir.mkdir(parents=True, exist_ok=True)
        self._anvil_cm = throwaway_anvil(block_time=self.block_time, accounts=max(10, self.nodes + 1))
        self.chain = self._anvil_cm.__enter__()
        self.w3 = rpc.connect(self.chain.url)
        # anvil's published dev account 0 deploys and proposes (local chain only, see node.chain.keys)
        self.owner = dev_key(0, self.w3.eth.chain_id)
        self.sender = TxSender(self.w3, self.owner.private_key, db_path=self.workdir / "owner-txs.sqlite")
        params = DeployParams.make(min_stake=10**18, voting_delay_blocks=1,
                                   voting_period_blocks=self.voting_period_blocks,
                                   join_window_blocks=self.join_window_blocks,
                                   commit_timeout_blocks=self.commit_timeout_blocks)
        self.deployment = deploy(self.w3, self.sender, params)
        self.deployment_path = self.deployment.save(self.workdir / "deployment.json")
        self._clients()
        for i in range(self.nodes):
            self.procs.append(self._write_config(i))
        for p in self.procs:
            self.start_node(p)

    def _clients(self) -> None:
        from node.chain.clients import AdapterRegistryClient, GovernanceClient, NodeRegistryClient, SessionsClient

        d = self.deployment
        self.registry = NodeRegistryClient(self.w3, d.address("NodeRegistry"), self.sender)
        self.gov = GovernanceClient(self.w3, d.address("FineTuneGovernance"), self.sender)
        self.sessions = SessionsClient(self.w3, d.address("TrainingSessions"), self.sender)
        self.adapters = AdapterRegistryClient(self.w3, d.address("AdapterRegistry"), self.sender)

    def _write_config(self, i: int) -> NodeProc:
        from coordinator.localchain import free_port

        port = free_port()
        data_dir = self.workdir / f"node{i}"
        data_dir.mkdir(parents=True, exist_ok=True)
        cfg = data_dir / "node.toml"
        cfg.write_text(f"""name = "node{i}"
[chain]
rpc = "{self.chain.url}"
deployment = "{self.deployment_path}"
poll_interval_s = 0.5
[identity]
dev_account = {i + 1}    # anvil's public dev key: accepted on the local chain (31337) only
[p2p]
listen = "/ip4/127.0.0.1/tcp/{port}"
[resources]
device = "auto"
memory_mb = 2048
threads = {self.threads}
[storage]
data_dir = "{data_dir}"
[policy]
vote = "auto"
[register]
stake_eth = 1.0
[timing]
pipeline_timeout_s = {self.pipeline_timeout_s}
sync_timeout_s = {self.sync_timeout_s}
""")
        return NodeProc(i, cfg, data_dir, data_dir / "daemon.log", i + 1, port)

    def start_node(self, p: NodeProc) -> None:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   OMP_NUM_THREADS=str(self.threads), PYTHONUNBUFFERED="1")
        if self.train_limit:
            env["BSNS_TRAIN_LIMIT"] = str(self.train_limit)
        log = open(p.log, "ab")
        p.proc = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "node", "run", "--config", str(p.config)],
                                  cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def kill_node(self, p: NodeProc, sig: int = signal.SIGKILL) -> None:
        if p.alive:
            os.killpg(p.proc.pid, sig)
            p.proc.wait(timeout=30)

    def stop(self) -> None:
        for p in self.procs:
            if p.alive:
                try:
                    os.killpg(p.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 20
        for p in self.procs:
            if p.proc is None:
                continue
            try:
                p.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.proc.wait(timeout=10)
        if self._anvil_cm is not None:
            self._anvil_cm.__exit__(None, None, None)
            self._anvil_cm = None
        if getattr(self, "sender", None) is not None:
            self.sender.close()
            self.sender = None

    # -- driving --------------------------------------------------------------------------------------
    def check_alive(self) -> None:
        for p in self.procs:
            if p.proc is not None and p.proc.poll() is not None and not getattr(p, "expected_dead", False):
                tail = p.log.read_text(errors="replace")[-2000:] if p.log.exists() else ""
                raise DemoError(f"node{p.index} exited with status {p.proc.returncode}:\n{tail}")

    def wait_for(self, what: str, cond, timeout: float, poll: float = 0.5, on_poll=None):
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = cond()
            if value:
                return value
            if on_poll:
                on_poll()
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(poll)

    def wait_registered(self, timeout: float = 180.0) -> None:
        self.wait_for(f"{self.nodes} nodes to register", lambda: self.registry.active_count() >= self.nodes, timeout)

    def propose(self, spec_text: str):
        """Fill in the weights and data hashes, propose from dev account 0; returns (spec, proposal id)."""
        from coordinator.proposals import prepare_spec

        path = self.workdir / "spec.toml"
        path.write_text(spec_text)
        spec = prepare_spec(path)
        (self.workdir / "spec.filled.toml").write_text(spec.toml_text)
        for p in self.procs:  # out-of-band copy, used only if the contract does not carry the text
            (p.data_dir / "specs").mkdir(parents=True, exist_ok=True)
            (p.data_dir / "specs" / f"{spec.spec_hash()}.toml").write_text(spec.toml_text)
        _res, pid = self.gov.propose(spec.to_chain_params(), spec.toml_text)
        return spec, pid

    def session_of(self, pid: int) -> int:
        return self.gov.proposal_info(pid).session_id or self.sessions.session_of_proposal(pid)

    def rounds_done(self, sid: int, num_shards: int) -> list[int]:
        return [self.sessions.current_round(sid, s) for s in range(num_shards)]

    # -- reading the daemons' own records --------------------------------------------------------------
    def node_db(self, p: NodeProc) -> sqlite3.Connection | None:
        path = p.data_dir / "state.sqlite"
        if not path.exists():
            return None
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        db.row_factory = sqlite3.Row
        return db

    def node_rows(self, p: NodeProc, sql: str, args: tuple = ()) -> list[dict]:
        db = self.node_db(p)
        if db is None:
            return []
        try:
            return [dict(r) for r in db.execute(sql, args)]
        except sqlite3.OperationalError:
            return []
        finally:
            db.close()

    def node_txs(self, p: NodeProc) -> list[dict]:
        path = p.data_dir / "txs.sqlite"
        if not path.exists():
            return []
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute("SELECT hash, nonce, purpose, status FROM txs ORDER BY nonce").fetchall()
        finally:
            db.close()
        return [dict(zip(("hash", "nonce", "purpose", "status"), r)) for r in rows]

    def gas_of(self, tx_hash: str) -> int:
        try:
            return int(self.w3.eth.get_transaction_receipt(tx_hash)["gasUsed"])
        except Exception:  # noqa: BLE001 - a dropped transaction has no receipt
            return 0


# -- adapters: fetch from peers, verify against the chain, evaluate ----------------------------------------

def run_demo(workdir: Path | None = None, *, rounds: int = 4, sync_interval: int = 30, batch_size: int = 16,
             max_seq_len: int = 48, keep: bool = False, train_limit: int | None = None,
             timeout: float = 14 * 60, console=None) -> dict:
    """The whole demo; returns the summary dict (also written to ``workdir/summary.json``)."""
    import tempfile

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from coordinator.remote_adapter import fetch_adapter
    from node.train.evaluate import evaluate_adapter

    console = console or Console()
    t_start = time.monotonic()
    # SIGTERM behaves like Ctrl-C: the cluster's context manager then stops every process it started
    prev = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
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
                    raise DemoError(f"session {sid} failed to start")
                return int(info.state) >= 2
            cl.wait_for("the session to start", started, timeout=180)
            shards = spec.num_shards
            bars = [prog.add_task(f"shard {s}: rounds final", total=spec.training.rounds) for s in range(shards)]
            steps_bar = prog.add_task("replica 0: training steps", total=spec.training.rounds * spec.training.sync_interval)

            def progress():
                done = cl.rounds_done(sid, shards)
                for s, b in enumerate(bars):
                    prog.update(b, completed=done[s])
                rows = cl.node_rows(cl.procs[_first_stage_node(cl, sid)], "SELECT COUNT(*) AS n FROM losses")
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
        summary.update(_collect(cl, spec, sid, pid, adapter_id, before, after))
        png = workdir / "loss.png"
        _loss_plot(summary["losses"], png, spec.training.sync_interval)
        summary["loss_png"] = str(png)
    signal.signal(signal.SIGTERM, prev)
    summary["wall_seconds"] = round(time.monotonic() - t_start, 1)
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _print_summary(console, summary)
    return summary


def _first_stage_node(cl: Cluster, sid: int) -> int:
    for p in cl.procs:
        a = cl.sessions.assignment_of(sid, _addr(p))
        if a.joined and a.shard == 0 and a.replica == 0:
            return p.index
    return 0


def _addr(p: NodeProc) -> str:
    from node.chain.keys import dev_key

    return dev_key(p.dev_account, 31337).address


def _collect(cl: Cluster, spec, sid: int, pid: int, adapter_id: int, before: dict, after: dict) -> dict:
    full_bytes = 0
    try:
        from node.train.build import build_model, count_parameters

        full_bytes = count_parameters(build_model(spec, 0, None, "cpu"))[1] * 4
    except Exception:  # noqa: BLE001 - the size is informative only
        pass
    nodes, total_tx, total_gas = [], 0, 0
    losses: dict[str, list] = {}
    round_times: list[float] = []
    for p in cl.procs:
        a = cl.sessions.assignment_of(sid, _addr(p))
        rounds = cl.node_rows(p, "SELECT * FROM rounds WHERE session_id=? ORDER BY round", (sid,))
        txs = cl.node_txs(p)
        gas = sum(cl.gas_of(t["hash"]) for t in txs if t["status"] == "mined")
        total_tx += len([t for t in txs if t["status"] == "mined"])
        total_gas += gas
        sent = sum(r["bytes_sent"] or 0 for r in rounds)
        recv = sum(r["bytes_recv"] or 0 for r in rounds)
        sync = sum(r["sync_sent"] or 0 for r in rounds)
        nodes.append({"node": p.index, "shard": a.shard, "replica": a.replica, "txs": len(txs), "gas": gas,
                      "bytes_sent": sent, "bytes_recv": recv, "sync_bytes_sent": sync,
                      "sync_bytes_per_round": sync // max(1, len(rounds)),
                      "adapter_bytes": _adapter_bytes(p, rounds)})
        if a.shard == 0:
            losses[f"replica {a.replica}"] = [r["loss"] for r in cl.node_rows(
                p, "SELECT loss FROM losses WHERE session_id=? ORDER BY step", (sid,))]
        if a.shard == 0 and a.replica == 0:
            round_times = [round(r["finished"] - r["started"], 1) for r in rounds if r["finished"] and r["started"]]
    owner_txs = [t for t in cl.sender.journal() if t["status"] == "mined"]
    owner_gas = sum(cl.gas_of(t["hash"]) for t in owner_txs)
    return {"proposal": pid, "session": sid, "adapter_id": adapter_id,
            "accuracy_before": before.get("accuracy"), "accuracy_after": after.get("accuracy"),
            "val_examples": after.get("examples"), "nodes": nodes, "node_txs": total_tx, "node_gas": total_gas,
            "deploy_and_propose_txs": len(owner_txs), "deploy_and_propose_gas": owner_gas,
            "round_seconds": round_times, "losses": losses, "full_model_bytes": full_bytes}


def _adapter_bytes(p: NodeProc, rounds: list[dict]) -> int:
    """Size of this node's local update (what each other replica fetches from it per round)."""
    if not rounds:
        return 0
    h = rounds[-1].get("local_hash")
    blob = p.data_dir / "blobs" / f"{(h or '').removeprefix('0x')}.bin"
    return blob.stat().st_size if blob.exists() else 0


def _loss_plot(losses: dict[str, list], path: Path, sync_interval: int = 0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, ys in losses.items():
        if ys:
            ax.plot(range(len(ys)), ys, label=name, alpha=0.8)
    if sync_interval:
        n = max((len(v) for v in losses.values()), default=0)
        for x in range(sync_interval, n, sync_interval):
            ax.axvline(x - 0.5, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("step (dotted: sync rounds)")
    ax.set_ylabel("training loss")
    ax.set_title("bsns demo: MiniLM + Houlsby adapters on SST-2 (2 shards x 2 replicas)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _print_summary(console, s: dict) -> None:
    from rich.table import Table

    console.print()
    console.print(f"[bold]accuracy on {s.get('val_examples')} held-back SST-2 sentences:[/] "
                  f"before {100 * (s['accuracy_before'] or 0):.1f}%  ->  after {100 * (s['accuracy_after'] or 0):.1f}%")
    t = Table(title="per node (p2p payload over the whole session, MB = 10^6 bytes)")
    for col in ("node", "shard", "replica", "sent MB", "received MB", "of which sync MB", "txs", "gas"):
        t.add_column(col, justify="right")
    for n in s["nodes"]:
        t.add_row(str(n["node"]), str(n["shard"]), str(n["replica"]), f"{n['bytes_sent'] / 1e6:.1f}",
                  f"{n['bytes_recv'] / 1e6:.1f}", f"{n['sync_bytes_sent'] / 1e6:.2f}", str(n["txs"]), f"{n['gas']:,}")
    console.print(t)
    console.print(f"transactions: {s['node_txs']} by the nodes ({s['node_gas']:,} gas), "
                  f"{s['deploy_and_propose_txs']} to deploy and propose ({s['deploy_and_propose_gas']:,} gas)")
    if s.get("full_model_bytes"):
        per_round = max(n["sync_bytes_per_round"] for n in s["nodes"])
        console.print(f"sync traffic per node per round: {per_round:,} bytes (adapter "
                      f"{max(n['adapter_bytes'] for n in s['nodes']):,} bytes) vs full-model FedAvg "
                      f"{s['full_model_bytes']:,} bytes ({100 * per_round / s['full_model_bytes']:.2f}%)")
    console.print(f"time per round (shard 0, replica 0): {s['round_seconds']} s; total {s.get('wall_seconds')} s")
    console.print(f"loss curve: {s['loss_png']}; published adapter id {s['adapter_id']}; summary {s['workdir']}/summary.json")
