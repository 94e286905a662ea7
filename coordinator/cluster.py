"""The cluster harness: a throwaway anvil, the contracts and n node daemons as separate processes.

``Cluster`` starts a throwaway anvil (1 s blocks, so commit deadlines pass while nodes wait), deploys
the contracts from anvil's dev account 0, writes one ``node.toml`` per node (dev accounts 1..n, a free
TCP port each) and starts each daemon as a separate OS process (``bsns node run``). It proposes a
job from the dev account 0 (not a node), and reads progress from the chain and from the daemons' own
state files. ``stop()`` (also on Ctrl-C and on any exception, via the context manager) terminates
every process it started: SIGTERM, then SIGKILL after a grace period. ``bsns demo`` and the end-to-end
tests run on it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.localchain import DEFAULT_BLOCK_TIME
from node.errors import BsnsError
from node.paths import PACKAGE_ROOT



class ClusterError(BsnsError):
    """The cluster could not get where it was asked to (a daemon died, a timeout passed)."""


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

    @property
    def address(self) -> str:
        """The node's Ethereum address (anvil's published dev key of its account: local chain only)."""
        from node.chain.keys import dev_key

        return dev_key(self.dev_account, 31337).address


@dataclass
class Cluster:
    """anvil + deployment + n daemons in separate processes, under ``workdir``."""

    workdir: Path
    nodes: int = 4
    block_time: float = DEFAULT_BLOCK_TIME
    voting_period_blocks: int = 6
    join_window_blocks: int = 6
    commit_timeout_blocks: int = 120  # an epoch must hold a round's training and sync (deadline from its start)
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

    def entry(self, p: NodeProc) -> list[str]:
        """The command that starts node ``p``'s `bsns` (a test may give one node another, e.g. a hostile daemon)."""
        return [sys.executable, "-m", "coordinator.cli"]

    def start_node(self, p: NodeProc) -> None:
        # the cluster's own home: nothing the daemons might write lands in the caller's folder
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   OMP_NUM_THREADS=str(self.threads), PYTHONUNBUFFERED="1",
                   BSNS_HOME=str((self.workdir / "home").resolve()))
        if self.train_limit:
            env["BSNS_TRAIN_LIMIT"] = str(self.train_limit)
        log = open(p.log, "ab")
        p.proc = subprocess.Popen([*self.entry(p), "node", "run", "--config", str(p.config)],
                                  cwd=str(PACKAGE_ROOT), env=env, stdout=log, stderr=subprocess.STDOUT,
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
                raise ClusterError(f"node{p.index} exited with status {p.proc.returncode}:\n{tail}")

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
                raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}")
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

    def member(self, sid: int, shard: int, replica: int) -> NodeProc | None:
        """The node assigned (shard, replica) in session ``sid``."""
        for p in self.procs:
            a = self.sessions.assignment_of(sid, p.address)
            if a.joined and a.shard == shard and a.replica == replica:
                return p
        return None

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
