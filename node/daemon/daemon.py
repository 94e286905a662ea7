"""``bsns node run``: the long-running node daemon.

Owns the node's life: unlock the key, connect to the chain and the deployment, start the libp2p host
(authorising only peers active in the NodeRegistry), register (or update the announce address after a
restart). Its data folder is held by one daemon at a time and bound to one deployment (node.daemon.datadir): a
start against a chain that lost the deployment, or against another deployment, stops with one line saying so and
how to set the old records aside, instead of replaying them. Then it reacts to the chain:

- ``ProposalCreated`` → remember it; while it is Active, vote by the node's policy
  (``node.daemon.proposals.VotePolicy``) unless the policy is ``manual`` (then the operator runs ``bsns vote``);
  a Succeeded proposal is executed (anyone may);
- ``SessionOpened`` → read the spec from the chain (``SpecSource``: the ``ProposalSpec`` event, checked against
  the agreed params), join in the join window if a shard fits and the policy accepts the spec
  (``VotePolicy.accepts``, whatever this node voted), call ``start`` once the window closed;
- a started session with this node assigned → ``SessionRunner`` trains, syncs and commits round after
  round (node.daemon.session), or ``FedPeatRunner`` for a spec with ``[fedpeat]`` (node.daemon.fedpeat);
  after the last round ``node.daemon.publish.Publisher`` serves the manifest and publishes the adapter. The
  daemon keeps serving its blobs.

A session that fails on this node (any exception but the chain being unreachable) is retried
``SESSION_ATTEMPTS`` times with a doubling wait, then marked failed here with its reason (the sessions row and a
``session_failed_here`` event); the node's other sessions are handled on every tick meanwhile.

Events come through the chain layer's ``EventWatcher`` (checkpointed, exactly once); decisions are
re-derived from chain views each tick, so a restart (even after kill -9) repeats nothing: votes,
joins and commits are checked on chain (and in the sender's journal) before any transaction.
Logs: node.daemon.logs.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from node.daemon.config import NodeConfig
from node.daemon.datadir import DataDir
from node.daemon.logs import event, setup_logging
from node.daemon.state import StateStore
from node.errors import BsnsError

log = logging.getLogger("bsns.daemon")


#: tries of a session that fails on this node before it is marked failed here; the wait doubles from
#: SESSION_RETRY_S between tries (a transient fault gets another chance, a poisoned spec never spins)
SESSION_ATTEMPTS = 3
SESSION_RETRY_S = 5.0


class DaemonError(BsnsError):
    """The daemon cannot start or go on (no deployment, locked key, chain unreachable...)."""


class Daemon:
    def __init__(self, cfg: NodeConfig, *, train_limit: int | None = None) -> None:
        self.cfg = cfg
        self.stop = threading.Event()
        self.train_limit = train_limit
        self.store: StateStore | None = None
        self.p2p = None
        self.watcher = None
        self._active_cache: dict[str, tuple[float, bool]] = {}
        self._runners: dict = {}
        self._released: set[int] = set()   # sessions whose stake lock this node took back on chain
        self.datadir: DataDir | None = None
        self._chain_down_since: float | None = None
        self._failures: dict[int, tuple[int, float]] = {}  # session -> (failed tries, monotonic time of the next)

    # -- start-up ---------------------------------------------------------------------------------
    def start(self) -> None:
        from node.chain import rpc
        from node.chain.clients import (AdapterRegistryClient, FedPeatLedgerClient, GovernanceClient,
                                        NodeRegistryClient, SessionsClient)
        from node.chain.deployment import Deployment
        from node.chain.keys import dev_key, load_keystore
        from node.chain.sender import OtherChain, TxSender

        cfg = self.cfg
        from node.paths import shown

        reset_hint = f"`bsns node reset --config {shown(cfg.path) if cfg.path else 'node.toml'}`"
        self.datadir = DataDir(cfg.data_dir, reset_hint)
        self.datadir.lock()
        self._check_listen()
        self.w3 = rpc.connect(cfg.chain.rpc)
        chain_id = self.chain_id = self.w3.eth.chain_id
        self.deployment = Deployment.load(cfg.deployment_path, chain_id=chain_id)
        self.deployment.check_code(self.w3)  # a chain restarted without its state says so here, in one line
        self.datadir.bind(self.deployment)
        self.store = StateStore(cfg.data_dir)
        if cfg.identity.dev_account is not None:
            # anvil's published development keys: accepted by dev_key only on the local chain (31337)
            self.key = dev_key(cfg.identity.dev_account, chain_id, rpc_url=rpc.rpc_url(cfg.chain.rpc))
        else:
            self.key = load_keystore(cfg.resolve(cfg.identity.keystore))
        self.address = self.key.address
        try:
            # settles what a previous run signed (kill -9 included) before anything new; never replays it
            # onto another chain, and never forgets it silently either
            self.sender = TxSender(self.w3, self.key.private_key, db_path=cfg.data_dir / "txs.sqlite",
                                   rpc_url=rpc.rpc_url(cfg.chain.rpc), on_other_chain="refuse")
        except OtherChain as exc:
            raise DaemonError(f"{exc}: if that chain is gone, {reset_hint} sets the node's records aside") from None
        d = self.deployment
        self.registry = NodeRegistryClient(self.w3, d.address("NodeRegistry"), self.sender)
        self.gov = GovernanceClient(self.w3, d.address("FineTuneGovernance"), self.sender)
        self.sessions = SessionsClient(self.w3, d.address("TrainingSessions"), self.sender)
        self.adapters = AdapterRegistryClient(self.w3, d.address("AdapterRegistry"), self.sender)
        # FedPEAT sessions read their round plans and emulators from FedPeatLedger (absent in older deployments)
        self.fedpeat = (FedPeatLedgerClient(self.w3, d.addresses["FedPeatLedger"], self.sender)
                        if "FedPeatLedger" in d.addresses else None)
        from node.daemon.proposals import SpecSource, VotePolicy

        self.specs = SpecSource(self.gov, cfg.data_dir)
        self.policy = VotePolicy(cfg, self.specs)
        self._start_p2p()
        self._rejoin_peers()
        from node.daemon.publish import Publisher

        self.publisher = Publisher(self.sessions, self.adapters, self.chain_port, self.net, self.store, self.stop,
                                   cfg.device())
        self._ensure_registered()
        self._start_watcher()
        event("started", address=self.address, peer=self.p2p.peer_id, addrs=",".join(self.p2p.addrs),
              chain=chain_id, rpc=rpc.rpc_url(cfg.chain.rpc), deployment=str(self.deployment.path),
              data_dir=str(cfg.data_dir))

    def _authorize(self, eth_address: str, protocol: str) -> bool:
        from node.p2p import ADAPTER_PROTOCOL

        if protocol == ADAPTER_PROTOCOL:
            # adapter blobs are content-addressed and published: anyone who knows a hash may fetch it
            # (`bsns adapter fetch` uses a throwaway identity); pipeline and gossip need a registered node
            return True
        now = time.monotonic()
        hit = self._active_cache.get(eth_address.lower())
        if hit and now - hit[0] < 30.0:
            return hit[1]
        try:
            ok = bool(self.registry.is_active(eth_address))
        except Exception:  # noqa: BLE001 - chain unreachable: keep the last answer, else refuse
            return bool(hit and hit[1])
        self._active_cache[eth_address.lower()] = (now, ok)
        return ok

    def _check_listen(self) -> None:
        """A listen address that parses but cannot be bound (port in use, not this host's) fails here, in one line,
        before the chain is contacted."""
        from node.p2p.host import check_listen

        try:
            check_listen(self.cfg.p2p.listen)
        except BsnsError as exc:
            raise DaemonError(f"p2p.listen: {exc}") from None

    def _start_p2p(self) -> None:
        from node.p2p import P2PNode

        # blobs beyond the p2p layer's memory bound are read back from this node's durable store
        self.p2p = P2PNode(self.key.private_key, self._authorize, listen=self.cfg.p2p.listen,
                           bootstrap=self.cfg.p2p.bootstrap,
                           blob_source=lambda digest: self.store.get_blob("0x" + digest.hex())).start()
        from node.daemon.real_ports import RealChain, RealNet

        self.chain_port = RealChain(self.sessions, self.registry, self.address, self.fedpeat)
        self.net = RealNet(self.p2p, self.chain_port.members)

    def _rejoin_peers(self) -> None:
        """After a restart, reconnect at once to the members of the sessions this node was training in: they
        stop waiting for a member that left ``GONE_GRACE`` seconds ago (node.daemon.sync), and this is the
        earliest the node can show it is back (before its watcher catches up and its model loads)."""
        for row in self.store.sessions("training"):
            try:
                self.net.ensure_connected(self.chain_port.members(row["session_id"]))
            except BsnsError as exc:  # the session's own handling will say what is wrong with it
                log.info("could not reconnect to session %s's members: %s", row["session_id"], exc)

    def _announce_addr(self) -> str:
        if self.cfg.p2p.announce:
            return self.cfg.p2p.announce
        return self.p2p.addrs[0].split("/p2p/")[0]

    def _ensure_registered(self) -> None:
        from node.chain.clients import NodeStatus, device_kind_code

        info = self.registry.get_node(self.address)
        res = self.cfg.resources
        kind = device_kind_code(self.cfg.device())
        addr = self._announce_addr()
        if info.status == NodeStatus.NONE:
            if self.cfg.register_ is None:
                raise DaemonError(f"{self.address} is not registered: run `bsns node register` or add a "
                                  f"[register] section to the node config")
            stake = int(self.cfg.register_.stake_eth * 10**18)
            stake = max(stake, self.registry.min_stake())
            self.registry.register(self.p2p.peer_id, addr, res.memory_mb, kind, res.throughput, stake=stake)
            event("registered", stake_wei=stake, announce=addr)
        elif info.status != NodeStatus.ACTIVE:
            raise DaemonError(f"{self.address} is {info.status.name.lower()} in the NodeRegistry")
        elif info.peer_id != self.p2p.peer_id or info.announce_addr != addr or info.memory_mb != res.memory_mb:
            self.registry.update(self.p2p.peer_id, addr, res.memory_mb, kind, res.throughput)
            event("registration_updated", announce=addr)

    def _start_watcher(self) -> None:
        from node.chain.artifacts import load_abi
        from node.chain.watcher import EventWatcher

        d = self.deployment
        contracts = {n: (d.address(n), load_abi(n)) for n in ("FineTuneGovernance", "TrainingSessions")}
        self.watcher = EventWatcher(self.w3, contracts, db_path=self.cfg.data_dir / "watcher.sqlite",
                                    start_block=d.deploy_block,
                                    confirmations=self.cfg.chain.confirmations_for(self.chain_id))
        self.watcher.on("FineTuneGovernance", "ProposalCreated", self._on_proposal)
        self.watcher.on("TrainingSessions", "SessionOpened", self._on_session_opened)
        self.watcher.on_reorg(self._on_reorg)
        self._proposals: set[int] = set(self.store.known("proposal")) - set(self.store.known("proposal_closed"))
        self._sessions: set[int] = set(self.store.known("session"))

    # the watcher's handlers only remember ids (idempotent); each tick derives actions from the chain
    def _remember(self, kind: str, ident: int) -> None:
        self.store.remember(kind, ident)

    def _on_proposal(self, ev) -> None:
        pid = int(ev.args["proposalId"])
        self._remember("proposal", pid)
        self._proposals.add(pid)
        event("proposal_seen", proposal=pid, block=ev.block_number)

    def _on_session_opened(self, ev) -> None:
        sid = int(ev.args["sessionId"])
        self._remember("session", sid)
        self._sessions.add(sid)
        event("session_opened", session=sid, proposal=int(ev.args["proposalId"]))

    def _on_reorg(self, fork: int, removed) -> None:
        """Blocks after ``fork`` were replaced: what this node cached from them is invalid. A proposal or session
        whose creation was undone is forgotten (the id may name another one on the new branch, which the watcher
        delivers again); votes of open proposals are re-derived from the chain; every runner is rebuilt, so its
        assignment is read again."""
        for ev in removed:
            if ev.name == "ProposalCreated":
                pid = int(ev.args["proposalId"])
                self._proposals.discard(pid)
                self.store.forget("proposal", pid)
            elif ev.name == "SessionOpened":
                sid = int(ev.args["sessionId"])
                self._sessions.discard(sid)
                self.store.forget("session", sid)
                self.store.delete_session(sid)
                self._failures.pop(sid, None)
        for pid in self._proposals:
            self.store.delete_vote(pid)
        self._runners.clear()
        event("reorg", fork_block=fork, undone=len(removed))

    # -- the loop -----------------------------------------------------------------------------------
    def run(self) -> None:
        from node.chain.errors import RpcUnavailable

        while not self.stop.is_set():
            try:
                self.watcher.poll_once()
                if self._chain_down_since is not None:
                    event("chain_reachable", down_s=round(time.monotonic() - self._chain_down_since, 1))
                    self._chain_down_since = None
                self.tick()
            except RpcUnavailable as exc:
                if self._chain_down_since is None:
                    self._chain_down_since = time.monotonic()
                event("chain_unreachable", error=str(exc))  # repeats are counted by the logs, not printed
            except BsnsError as exc:
                event("error", error=str(exc))
            self.stop.wait(self.cfg.chain.poll_interval_s)

    def tick(self) -> None:
        from node.chain.errors import RpcUnavailable

        for pid in sorted(self._proposals):
            try:
                self._handle_proposal(pid)
            except RpcUnavailable:
                raise
            except BsnsError as exc:  # one proposal's trouble never stops the others
                event("error", proposal=pid, error=str(exc))
        for sid in sorted(self._sessions):
            if self.stop.is_set():
                return
            attempts, retry_at = self._failures.get(sid, (0, 0.0))
            if time.monotonic() < retry_at:
                continue
            try:
                self._handle_session(sid)
            except RpcUnavailable:
                raise  # the chain, not the session: the run loop waits for it
            except Exception as exc:  # noqa: BLE001 - any failure of one session is that session's, never the node's
                self._session_failed(sid, exc, attempts + 1)

    def _session_failed(self, sid: int, exc: BaseException, attempts: int) -> None:
        """Retry a failed session a bounded number of times, backing off; then mark it failed here with the reason.
        The other sessions are handled on every tick meanwhile."""
        reason = str(exc).splitlines()[0][:300] if isinstance(exc, BsnsError) else \
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        self._free_runner(sid)  # a runner that failed may hold half-built state: the next try starts afresh
        if attempts >= SESSION_ATTEMPTS:
            self._failures.pop(sid, None)
            if self.store.session(sid) is not None:
                self.store.upsert_session(sid, status="failed", reason=reason)
            self._sessions.discard(sid)
            self._session_over(sid)
            event("session_failed_here", session=sid, attempts=attempts, reason=reason)
            return
        wait = SESSION_RETRY_S * 2 ** (attempts - 1)
        self._failures[sid] = (attempts, time.monotonic() + wait)
        event("session_error", session=sid, attempt=attempts, retry_in_s=wait, reason=reason)

    def _handle_proposal(self, pid: int) -> None:
        from node.chain.clients import ProposalState
        from node.chain.errors import ContractRevert

        st = self.gov.state(pid)
        if st in (ProposalState.CANCELED, ProposalState.DEFEATED, ProposalState.EXECUTED):
            self._proposals.discard(pid)  # nothing left to do: stop polling it
            self._remember("proposal_closed", pid)
            return
        if st == ProposalState.ACTIVE and self.cfg.policy.vote == "auto" and self.store.vote_of(pid) is None:
            if self.gov.has_voted(pid, self.address):
                self.store.record_vote(pid, self.gov.receipt_of(pid, self.address) == 2, "voted before restart", None)
                return
            if not self.gov.can_vote(pid, self.address):
                self.store.record_vote(pid, False, "not eligible (registered after the proposal)", None)
                return
            support, reason = self.policy.decide(pid)
            try:
                res = self.gov.cast_vote(pid, support)
                self.chain_port._count(res)
                self.store.record_vote(pid, support, reason, res.hash)
                event("voted", proposal=pid, support=support, reason=reason)
            except ContractRevert as exc:
                self.store.record_vote(pid, support, f"vote refused: {exc.name}", None)
        elif st == ProposalState.SUCCEEDED:
            try:
                res, sid = self.gov.execute(pid)
                self.chain_port._count(res)
                event("executed", proposal=pid, session=sid)
            except BsnsError as exc:  # another node executed it first (refused, or mined after theirs)
                if getattr(exc, "name", "") != "NotSucceeded" and self.gov.state(pid) != ProposalState.EXECUTED:
                    raise
                log.debug("execute %s: %s", pid, exc)

    def _handle_session(self, sid: int) -> None:
        from node.chain.clients import SessionState
        from node.chain.errors import ContractRevert
        from node.job import JobSpec

        row = self.store.session(sid)
        if row and row["status"] in ("done", "left", "failed"):
            if sid not in self._released and row["shard"] is not None:
                self._release_stake(sid)  # the stake lock comes back once the session ended on chain
            return
        info = self.sessions.get_session(sid)
        if row is None:
            try:
                spec = self.specs.spec_for(info.proposal_id)
            except BsnsError as exc:
                event("session_refused", session=sid, reason=str(exc))
                return
            if spec is None:
                return
            self.store.upsert_session(sid, proposal_id=info.proposal_id, spec_toml=spec.toml_text, status="seen")
            row = self.store.session(sid)
        a = self.sessions.assignment_of(sid, self.address)
        if info.state == SessionState.JOINING:
            head = self.w3.eth.block_number
            if not a.joined and self.cfg.policy.join and head + 1 <= info.join_deadline:
                mem = self.cfg.resources.memory_mb
                needs = [self.sessions.get_shard(sid, s).memory_mb for s in range(info.num_shards)]
                ok, why = self.policy.accepts(JobSpec.from_text(row["spec_toml"]))
                if not any(m <= mem for m in needs):
                    ok, why = False, f"no shard fits {mem} MB"
                if not ok:  # whatever this node voted: it joins only what its policy accepts
                    self.store.upsert_session(sid, status="left", reason=why)
                    event("not_joining", session=sid, reason=why)
                    return
                try:
                    res = self.sessions.join(sid)
                    self.chain_port._count(res)
                    a = self.sessions.joined_assignment(res.receipt)
                    self.store.upsert_session(sid, shard=a.shard, replica=a.replica, status="joined")
                    event("joined", session=sid, shard=a.shard, replica=a.replica)
                except ContractRevert as exc:
                    event("join_refused", session=sid, reason=str(exc))
            elif a.joined and head + 1 > info.join_deadline:
                try:
                    res = self.sessions.start(sid)
                    self.chain_port._count(res)
                    event("session_start_sent", session=sid)
                except BsnsError as exc:
                    if getattr(exc, "name", "") != "WrongSessionState" and \
                            self.sessions.get_session(sid).state == SessionState.JOINING:
                        raise
                    # another member started it first
            return
        if info.state == SessionState.FAILED:
            self.store.upsert_session(sid, status="failed")
            self._free_runner(sid)
            event("session_failed", session=sid, replicas=info.replicas, min_replicas=info.min_replicas)
            if a.joined:
                self._release_stake(sid)
            return
        if not a.joined:
            self.store.upsert_session(sid, status="left")
            return
        if a.replica >= info.replicas:
            self.store.upsert_session(sid, shard=a.shard, replica=a.replica, replicas=info.replicas, status="spare")
            event("spare_replica", session=sid, shard=a.shard, replica=a.replica, replicas=info.replicas)
            self.store.upsert_session(sid, status="left")
            self._release_stake(sid)  # a spare takes no part in rounds: its stake comes back at once
            return
        self.store.upsert_session(sid, shard=a.shard, replica=a.replica, replicas=info.replicas, status="training")
        self._run_session(sid, row["spec_toml"], a.shard, a.replica, info.replicas)

    def _run_session(self, sid: int, spec_toml: str, shard: int, replica: int, replicas: int) -> None:
        from node.daemon.ports import Member
        from node.daemon.session import SessionRunner, Stopped
        from node.daemon.sync import SessionAborted
        from node.job import JobSpec

        spec = JobSpec.from_text(spec_toml)
        me = Member(self.address, shard, replica, self.p2p.peer_id, self._announce_addr())
        self.net.join_topic(sid)
        self.net.ensure_connected(self.chain_port.members(sid))
        t = self.cfg.timing
        runner = self._runners.get(sid)
        if runner is None:  # kept across ticks: an error in one round does not reload the model
            kwargs = dict(device=self.cfg.device(), pipeline_timeout=t.pipeline_timeout_s,
                          sync_timeout=t.sync_timeout_s, stop=self.stop, train_limit=self.train_limit)
            if spec.fedpeat is not None:  # replicas are devices tuning on emulators (node.daemon.fedpeat)
                from node.daemon.fedpeat import FedPeatRunner

                runner = FedPeatRunner(sid, spec, me, replicas, self.chain_port, self.net, self.store,
                                       fetch_emulators=self.cfg.fedpeat.fetch_emulators,
                                       cache_dir=self.cfg.data_dir / "emulators", **kwargs)
            else:
                runner = SessionRunner(sid, spec, me, replicas, self.chain_port, self.net, self.store, **kwargs)
            self._runners[sid] = runner
        try:
            runner.run()
        except Stopped:
            return
        except SessionAborted as exc:  # a round ran out of epochs on chain: stop, and take the stake back
            self._free_runner(sid)
            self._session_over(sid)
            self.store.upsert_session(sid, status="failed")
            event("session_failed", session=sid, reason=str(exc))
            self._release_stake(sid)
            return
        try:
            self.publisher.publish(sid, spec, shard, replica, runner)
        finally:
            self._free_runner(sid)
            self._session_over(sid)
        self.store.upsert_session(sid, status="done")
        event("session_done", session=sid, shard=shard, replica=replica)
        self._release_stake(sid)

    def _release_stake(self, sid: int) -> None:
        """Take this node's stake lock of an ended session back (TrainingSessions.release). Refused while other
        shards still train (NotReleasable): tried again on a later tick."""
        if self.sessions.assignment_of(sid, self.address).released:
            self._released.add(sid)
            return
        try:
            self.chain_port._count(self.sessions.release(sid))
        except BsnsError as exc:  # NotReleasable while other shards train, or a race with a restart
            log.debug("release of session %s refused: %s", sid, exc)
            return
        self._released.add(sid)
        event("stake_released", session=sid)

    def _session_over(self, sid: int) -> None:
        """The session ended here (done, aborted or failed for good): its pipeline messages are refused from now
        on and its inbox state is dropped (its round blobs age out of the blob store's LRU bound; the published adapter
        stays, pinned by the publisher)."""
        try:
            self.net.end_session(sid)
        except Exception as exc:  # noqa: BLE001 - the p2p node may be closing; the session is over anyway
            log.debug("ending session %s on the p2p node: %s", sid, exc)

    def _free_runner(self, sid: int) -> None:
        """Forget a finished session's runner (its model, optimizer state and data) and give the memory back: an
        idle daemon should hold what it held before the session, not one model per session it ever ran."""
        import ctypes
        import gc

        self._runners.pop(sid, None)
        gc.collect()
        try:  # glibc keeps freed arenas mapped; hand them back so the process's resident size falls too
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass

    def serve_finished(self) -> None:
        """Re-serve the final adapters and manifests of finished sessions (after a restart)."""
        for h in self.store.blob_hashes():
            data = self.store.get_blob(h)
            if data is not None:
                self.p2p.serve_blob(data)

    def close(self) -> None:
        self.stop.set()
        if self.p2p is not None:
            self.p2p.close()
        if self.watcher is not None:
            self.watcher.close()
        if self.store is not None:
            self.store.close()
        if self.datadir is not None:
            self.datadir.unlock()


def run_daemon(config_path: str | Path, verbose: bool = False, train_limit: int | None = None,
               log_level: str = "info") -> None:
    """Entry point of ``bsns node run``: runs until SIGTERM/SIGINT, then shuts down cleanly."""
    import os

    cfg = NodeConfig.from_toml(config_path)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(cfg.data_dir, cfg.name, verbose, log_level)
    try:
        import torch

        torch.set_num_threads(cfg.resources.threads)
    except ImportError:
        pass
    env_limit = os.environ.get("BSNS_TRAIN_LIMIT")
    d = Daemon(cfg, train_limit=train_limit or (int(env_limit) if env_limit else None))

    def _stop(signum, frame):  # noqa: ARG001
        d.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    started = False
    try:
        d.start()
        started = True
        d.serve_finished()
        d.run()
    finally:
        d.close()
        if started:  # a failed start is the one error line the CLI prints, nothing else
            event("stopped")
