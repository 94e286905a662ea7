"""One node's part in a training session: train its shard in its replica's pipeline, sync, commit, resume.

This module owns the round loop; the sync protocol is ``node.daemon.sync.RoundSync`` (with the runner's
``SyncPolicy``), and ``node.daemon.fedpeat.FedPeatRunner`` changes only what a round does before the sync.

The round loop is driven by the chain, not by local memory: each iteration asks the chain for the
shard's current round, restores the adapter and optimizer as they were when the previous round was
final (local checkpoint, or the final aggregate fetched by hash from a replica), does the round's local
work (``_work_round``: here, train ``sync_interval`` pipeline steps), syncs with the shard's other
replicas until the round is final on chain, then adopts the final aggregate and checkpoints it with the
optimizer state *before* moving on (``_finish_round``).

A neighbour stage that stops answering makes the step raise ``PipelineTimeout``; the round is then
restarted from its checkpoint, or skipped if the chain moved on without this replica. After a kill -9
the same loop resumes from the last checkpoint whose round is final.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from node.daemon.logs import event_level
from node.daemon.ports import ZERO_HASH, ChainPort, Member, NetPort
from node.daemon.state import StateStore
from node.daemon.sync import PIPELINE_SYNC, RoundSync, RoundWork, SyncPolicy
from node.errors import BsnsError

log = logging.getLogger("bsns.session")


class SessionError(BsnsError):
    """The session cannot go on for this node (bad spec, missing assignment, lost state)."""


class Stopped(Exception):
    """The daemon is shutting down."""


class SessionRunner:
    sync_policy: SyncPolicy = PIPELINE_SYNC  # the round sync's choices (node.daemon.sync); FedPEAT declares its own

    def __init__(self, session_id: int, spec, me: Member, replicas: int, chain: ChainPort, net: NetPort,
                 store: StateStore, *, device: str = "cpu", pipeline_timeout: float = 60.0,
                 sync_timeout: float = 45.0, stop: threading.Event | None = None,
                 on_event: Callable[[str, dict], None] | None = None, train_limit: int | None = None,
                 poll: float = 0.25) -> None:
        self.sid, self.spec, self.me, self.replicas = session_id, spec, me, replicas
        self.chain, self.net, self.store = chain, net, store
        self.device = device
        self.pipeline_timeout, self.sync_timeout = pipeline_timeout, sync_timeout
        self.stop = stop or threading.Event()
        self.on_event = on_event or (lambda kind, info: None)
        self.train_limit = train_limit
        self.poll = poll
        t = spec.training
        self.rounds, self.interval = t.rounds, t.sync_interval
        self.total_steps = self.rounds * self.interval
        self.num_stages = spec.num_shards
        self.stage = me.shard
        self.start_layer, self.end_layer = spec.shards.layers[self.stage]
        self.shard = None
        self.optimizer = None  # stays None in a runner that keeps no optimizer state across rounds
        self.data = None
        self.part: list[int] | None = None
        self.samples = 0
        self._counts: list[int] | None = None  # every replica's sample count, from the deterministic partition
        self.loaded_round: int | None = None  # the in-memory adapter is the final state of this round
        self._round_bytes0: tuple[int, int] | None = None
        from node.train.aggregate import rule_for
        from node.train.server import server_update_for

        self.sync = RoundSync(session_id, me, chain, net, store, rule_for(t), self.sync_policy, sync_timeout, poll,
                              self._sleep, self._emit, self.fetch_blob, self._global_before, self.replica_samples,
                              server_update_for(t.server_update))

    # -- set-up ---------------------------------------------------------------------------------
    def _emit(self, kind: str, **info) -> None:
        info = {"session": self.sid, "shard": self.stage, "replica": self.me.replica, **info}
        log.log(event_level(kind), kind, extra={"fields": info})
        self.on_event(kind, info)

    def _is_set_up(self) -> bool:
        return self.shard is not None

    def setup(self) -> None:
        from node.train.build import build_data, build_model
        from node.train.step import make_optimizer

        self.shard = build_model(self.spec, self.start_layer, self.end_layer, self.device)
        self.optimizer = make_optimizer(self.shard, self.spec.training.learning_rate)
        self.loaded_round = -1  # the seeded initial adapter, identical on every replica
        self._init_bytes = self._state_bytes()
        if self.stage == 0:
            self.data = build_data(self.spec, train_limit=self.train_limit)
            self.part = self._partition(self.data.train.targets)[self.me.replica]
            self.samples = len(self.part)
        else:
            self.samples = 0  # only the first stage sees the data; later stages announce its count
        self._emit("setup", layers=[self.start_layer, self.end_layer], samples=self.samples)

    def _partition(self, labels) -> list[list[int]]:
        """Every replica's training indices (deterministic: every node computes the same partition)."""
        return partition_of(self.spec, self.replicas, labels)

    # -- state ----------------------------------------------------------------------------------
    def _state_bytes(self) -> bytes:
        from node.tuners import adapter_state_dict
        from node.train.adapter_state import canonical_bytes

        return canonical_bytes(adapter_state_dict(self.shard))

    def _load_bytes(self, data: bytes) -> None:
        from node.tuners import load_adapter_state_dict
        from node.train.adapter_state import state_from_bytes

        load_adapter_state_dict(self.shard, state_from_bytes(data))

    def _adopt(self, data: bytes) -> None:
        """Make ``data`` (a final aggregate) the adapter the next round starts from."""
        self._load_bytes(data)

    def _adopt_initial(self) -> None:
        """Make the seeded initial adapter (and fresh optimizer moments) what round 0 starts from."""
        from node.train.step import make_optimizer

        self._load_bytes(self._init_bytes)
        self.optimizer = make_optimizer(self.shard, self.spec.training.learning_rate)

    def _global_before(self, rnd: int) -> bytes:
        """The adapter round ``rnd`` started from (the final one of round ``rnd - 1``)."""
        if rnd == 0:
            return self._init_bytes
        ck = self.store.checkpoint(self.sid, rnd - 1)
        if ck is not None:
            return self.fetch_blob(ck.adapter_hash)
        # not checkpointed here (this node was down when it went final): the chain has its hash
        final = self.chain.final_hash(self.sid, rnd - 1, self.stage)
        if final is None:
            raise SessionError(f"round {rnd - 1} of session {self.sid}, shard {self.stage} is not final on chain")
        return self.fetch_blob(final)

    def _load_optimizer(self, ck) -> None:
        if self.optimizer is None:
            return
        opt = self.store.load_optimizer_state(ck)
        if opt is not None:
            self.optimizer.load_state_dict(opt)

    def _optimizer_state(self) -> dict | None:
        return None if self.optimizer is None else self.optimizer.state_dict()

    def _members(self, shard: int | None = None) -> list[Member]:
        return [m for m in self.chain.members(self.sid) if shard is None or m.shard == shard]

    def fetch_blob(self, h: str, hint_peers: list[str] = ()) -> bytes:
        """A blob by hash: from the local store, else from the given peers, else any peer of the shard."""
        data = self.store.get_blob(h)
        if data is not None:
            return data
        peers = list(dict.fromkeys([*hint_peers, *(m.peer_id for m in self._members(self.stage)
                                                    if m.address != self.me.address and m.peer_id)]))
        last = None
        for _ in range(3):
            for p in peers:
                try:
                    data = self.net.fetch(p, h, timeout=30.0)
                    self.store.put_blob(data)
                    return data
                except Exception as exc:  # noqa: BLE001 - try the next peer that may serve it
                    last = exc
            self._sleep(1.0)
        raise SessionError(f"no peer served adapter {h} ({last})")

    def _restore(self, rnd: int) -> None:
        """Make the in-memory adapter and optimizer the state after round ``rnd - 1`` was final."""
        if self.loaded_round == rnd - 1:
            return
        if rnd == 0:
            self._adopt_initial()
            self.loaded_round = -1
            return
        ck = self.store.checkpoint(self.sid, rnd - 1)
        if ck is not None:
            self._adopt(self.fetch_blob(ck.adapter_hash))
            self._load_optimizer(ck)
        else:
            # the round went final while this node was down: adopt the agreed adapter, keep the
            # newest optimizer moments this node has (or fresh ones)
            final = self.chain.final_hash(self.sid, rnd - 1, self.stage)
            if final is None:
                raise SessionError(f"round {rnd - 1} of session {self.sid}, shard {self.stage} is not final on chain")
            data = self.fetch_blob(final)
            self._adopt(data)
            older = self.store.latest_checkpoint(self.sid)
            if older is not None and older.round < rnd - 1:
                self._load_optimizer(older)
            self.store.save_checkpoint(self.sid, rnd - 1, data, self._optimizer_state(), rnd * self.interval)
            self.store.upsert_round(self.sid, self.stage, rnd - 1, status="final", final_hash=final,
                                    finished=time.time())
        self.loaded_round = rnd - 1
        self._emit("restored", round=rnd - 1)

    # -- the loop -------------------------------------------------------------------------------
    def _sleep(self, s: float) -> None:
        if self.stop.wait(s):
            raise Stopped()

    def run(self) -> None:
        if not self._is_set_up():
            self.setup()
        while True:
            if self.stop.is_set():
                raise Stopped()
            rnd = self.chain.current_round(self.sid, self.stage)
            if rnd >= self.rounds:
                self._emit("shard_done", rounds=self.rounds)
                return
            try:
                self._restore(rnd)
            except SessionError as exc:
                self._emit("restore_failed", round=rnd, error=str(exc))
                self._sleep(2.0)
                continue
            work = self._work_round(rnd)
            if work is not None:  # None: the round is to be tried again (or the chain moved on)
                self._sync(rnd, work)

    def _work_round(self, rnd: int) -> RoundWork | None:
        """What this node does in round ``rnd`` before the sync: train its shard's steps in the pipeline."""
        if not self._train_round(rnd):
            return None
        # later stages do not see the data: they weight their update by their first stage's count,
        # which every node recomputes from the partition (deterministic, so no message is needed)
        samples = self.replica_samples(self.me.replica)
        return RoundWork(self._state_bytes(), frozenset(range(self.replicas)), samples, samples)

    def _stage_peers(self) -> dict[int, Member]:
        peers = {}
        for m in self._members():
            if m.replica == self.me.replica:
                peers[m.shard] = m
        return peers

    def _frame_bound(self) -> int:
        """The largest pipeline message this job can produce, in bytes; peers' larger frames are refused.

        A micro-batch of fp32 hidden states (forward) or their gradient (backward), plus an int64 mask
        and labels per token; the sequence may grow by a soft prompt's virtual tokens (slack of 64
        covers the methods' defaults).
        """
        t = self.spec.training
        seq = self.spec.data.max_seq_len + int(self.spec.method.config.get("num_virtual_tokens", 0)) + 64
        return t.batch_size // t.micro_batches * seq * (4 * self.shard.config.hidden_size + 16) + 4096

    def _earlier_update(self, rnd: int) -> bytes | None:
        """The local update this node made in round ``rnd`` before a restart, if it made (and kept) one."""
        row = self.store.round(self.sid, self.stage, rnd)
        if row and row["status"] in ("trained", "committed") and row["local_hash"]:
            data = self.store.get_blob(row["local_hash"])
            if data is not None:
                self._emit("train_skipped", round=rnd, reason="local update already made")
                return data
        return None

    def _batches(self, rnd: int):
        """(step, batch) for each step of round ``rnd``; the batch is None on a stage that does not see the data."""
        from node.train import data as D

        t = self.spec.training
        first = rnd * self.interval
        order = None
        if self.part is not None:
            order = D.batch_indices(len(self.part), t.batch_size, t.seed, self.interval, start_step=first)
        for i in range(self.interval):
            if self.stop.is_set():
                raise Stopped()
            yield first + i, None if order is None else self.data.train.collate([self.part[j] for j in next(order)])

    def _record_step(self, rnd: int, step: int, loss: float, seconds: float) -> None:
        self.store.record_loss(self.sid, rnd, step, loss, seconds)
        self._emit("step", round=rnd, step=step, loss=round(loss, 5), seconds=round(seconds, 4))

    def _train_round(self, rnd: int) -> bool:
        from node.train.step import lr_at
        from node.train.pipeline import PipelineError, ShardTrainer

        earlier = self._earlier_update(rnd)
        if earlier is not None:  # trained (and maybe committed) before a restart: sync with that update
            self._load_bytes(earlier)
            return True
        t = self.spec.training
        transport = self.net.transport(self.sid, rnd, self.me.replica, self._stage_peers(),
                                       limits=(self._frame_bound(), t.micro_batches))
        trainer = ShardTrainer(self.shard, self.stage, self.num_stages, transport, self.optimizer,
                               micro_batches=t.micro_batches, task=self.spec.task.kind,
                               timeout=self.pipeline_timeout, device=self.device)
        self.store.upsert_round(self.sid, self.stage, rnd, status="training")
        self._round_bytes0 = self.net.bytes_moved()
        self._emit("round_start", round=rnd)
        t_round = time.perf_counter()
        losses = []
        for step, batch in self._batches(rnd):
            t0 = time.perf_counter()
            try:
                loss = trainer.step(step, batch, lr_at(step, self.total_steps, t.learning_rate))
            except (PipelineError, OSError, BsnsError) as exc:
                self.loaded_round = None  # the adapter moved mid-round: restore before anything else
                moved = self.chain.current_round(self.sid, self.stage) > rnd
                self._emit("pipeline_broken", round=rnd, step=step, error=str(exc).splitlines()[0][:200],
                           action="skip round" if moved else "retry round")
                if not moved:
                    self._sleep(1.0)
                return False
            losses.append(loss)
            self._record_step(rnd, step, loss, time.perf_counter() - t0)
        mean = sum(losses) / len(losses)
        self.store.upsert_round(self.sid, self.stage, rnd, status="trained", loss=mean,
                                local_hash=self.store.put_blob(self._state_bytes()))
        self._emit("round_trained", round=rnd, loss=round(mean, 5), seconds=round(time.perf_counter() - t_round, 3))
        return True

    # -- the sync -------------------------------------------------------------------------------
    def _sync(self, rnd: int, work: RoundWork) -> None:
        t_sync = time.perf_counter()
        sync0 = self.net.bytes_moved()
        res = self.sync.run(rnd, work)
        self._finish_round(rnd, work, res.final, res.data, agreed=res.agreed, t_sync=t_sync, sync0=sync0)

    def _finish_round(self, rnd: int, work: RoundWork, final: str, data: bytes, *, agreed: bool, t_sync: float,
                      sync0: tuple[int, int]) -> None:
        """Adopt and checkpoint the final aggregate, serve it, and close the round's row and byte counters."""
        self.store.put_blob(data)
        self.net.serve(data)
        self._adopt(data)
        self.store.save_checkpoint(self.sid, rnd, data, self._optimizer_state(), (rnd + 1) * self.interval)
        sent1, recv1 = self.net.bytes_moved()
        rs0, rr0 = self._round_bytes0 or sync0
        self.store.upsert_round(self.sid, self.stage, rnd, status="final", final_hash=final, finished=time.time(),
                                bytes_sent=sent1 - rs0, bytes_recv=recv1 - rr0,
                                sync_sent=sent1 - sync0[0], sync_recv=recv1 - sync0[1])
        self._round_bytes0 = None
        self.loaded_round = rnd
        self._emit("round_final", round=rnd, final=final, agreed=agreed, **work.info,
                   sync_seconds=round(time.perf_counter() - t_sync, 3))

    def replica_samples(self, replica: int) -> int:
        """How many training examples replica ``replica`` holds: its update's FedAvg weight. Every node computes
        it from the deterministic partition, so no replica can choose its own weight by announcing one."""
        if self._counts is None:
            ys = self.data.train.targets if self.data is not None else train_labels(self.spec, self.train_limit)
            self._counts = [len(p) for p in self._partition(ys)]
        return self._counts[replica]


def partition_of(spec, replicas: int, labels) -> list[list[int]]:
    """Every replica's training indices for ``spec`` over the training split's ``labels`` (node.train.partition)."""
    from node.train.partition import partition

    d = spec.data
    # every part must fill a batch (node.train.data.batch_indices refuses a smaller one): a Dirichlet draw that
    # leaves a replica fewer examples is redrawn, as node.train.partition does for min_size
    return partition(labels if d.distribution == "dirichlet" else len(labels), replicas, d.distribution,
                     seed=spec.training.seed, dataset_hash=d.hash or ZERO_HASH, alpha=d.alpha,
                     min_size=spec.training.batch_size)


def train_labels(spec, train_limit: int | None = None) -> list[int]:
    """The training split's labels, for a node that does not hold the data (only the partition is needed)."""
    from node.train import data as D

    if spec.task.kind == "sequence-classification":
        _, labels = D.read_sst2(D.spec_data_path(spec.data.path))
        train_idx, _ = D.split_indices(len(labels), spec.data.validation_size)
        if train_limit is not None:
            train_idx = train_idx[:train_limit]
        return [labels[i] for i in train_idx]
    from node.train.build import build_data

    return build_data(spec, train_limit=train_limit).train.targets


def replica_counts(spec, replicas: int, train_limit: int | None = None) -> list[int]:
    """Every replica's sample count: what any node, or a checker, computes as the FedAvg weights."""
    return [len(p) for p in partition_of(spec, replicas, train_labels(spec, train_limit))]
