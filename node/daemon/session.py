"""One node's part in a training session: train its shard in its replica's pipeline, sync, commit, resume.

The round loop is driven by the chain, not by local memory: each iteration asks the chain for the
shard's current round, restores the adapter and optimizer as they were when the previous round was
final (local checkpoint, or the final aggregate fetched by hash from a replica), trains
``sync_interval`` pipeline steps, and syncs:

1. serve the local adapter (content-addressed) and announce (round, shard, replica, hash, samples);
2. collect the other replicas' announcements until all arrived or ``sync_timeout_s`` passed (a
   replica that is down is left out), fetch their adapters by hash (verified);
3. agree on the set: announce which updates it holds, keep only those every replica in its set also
   holds (intersection; replicas that saw different sets converge instead of splitting the vote:
   with two replicas a split could never be finalized), aggregate them in replica order with the
   proposal's rule weighted by the samples each announced, and commit (aggregate hash, local hash)
   unless this node already did (no duplicate transaction after a restart);
4. wait until the round is final on chain, calling ``finalizeAfterTimeout`` once the deadline passed;
   adopt the final aggregate (fetching it if it is not ours) and checkpoint it *before* moving on.

A neighbour stage that stops answering makes the step raise ``PipelineTimeout``; the round is then
restarted from its checkpoint, or skipped if the chain moved on without this replica. After a kill -9
the same loop resumes from the last checkpoint whose round is final.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from node.daemon.ports import Announcement, ChainPort, Member, NetPort
from node.daemon.state import StateStore
from node.errors import BsnsError

log = logging.getLogger("bsns.session")


class SessionError(BsnsError):
    """The session cannot go on for this node (bad spec, missing assignment, lost state)."""


class Stopped(Exception):
    """The daemon is shutting down."""


class _Pulse:
    """Repeats the latest announcements every few seconds, for replicas that (re)subscribed late."""

    def __init__(self, net: NetPort, period: float) -> None:
        self.net, self.period = net, period
        self.msgs: dict[str, Announcement] = {}
        self.last = time.monotonic()

    def every(self, ann: Announcement) -> None:
        self.msgs[ann.kind] = ann

    def tick(self) -> None:
        if time.monotonic() - self.last >= self.period:
            for ann in self.msgs.values():
                self.net.announce(ann)
            self.last = time.monotonic()


class SessionRunner:
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
        self.optimizer = None
        self.data = None
        self.part: list[int] | None = None
        self.samples = 0
        self.loaded_round: int | None = None  # the in-memory adapter is the final state of this round

    # -- set-up ---------------------------------------------------------------------------------
    def _emit(self, kind: str, **info) -> None:
        info = {"session": self.sid, "shard": self.stage, "replica": self.me.replica, **info}
        log.info(kind, extra={"fields": info})
        self.on_event(kind, info)

    def setup(self) -> None:
        from node.train import local as L
        from node.train.partition import partition

        self.shard = L.build_model(self.spec, self.start_layer, self.end_layer, self.device)
        self.optimizer = L.make_optimizer(self.shard, self.spec.training.learning_rate)
        self.loaded_round = -1  # the seeded initial adapter, identical on every replica
        self._init_bytes = self._state_bytes()
        if self.stage == 0:
            self.data = L.build_data(self.spec, train_limit=self.train_limit)
            labels = self.data.train.targets
            parts = partition(labels if self.spec.data.distribution == "dirichlet" else len(labels),
                              self.replicas, self.spec.data.distribution, seed=self.spec.training.seed,
                              dataset_hash=self.spec.data.hash or "0x" + "00" * 32, alpha=self.spec.data.alpha)
            self.part = parts[self.me.replica]
            self.samples = len(self.part)
        else:
            self.samples = 0  # only the first stage sees the data; later stages announce its count
        self._emit("setup", layers=[self.start_layer, self.end_layer], samples=self.samples)

    # -- state ----------------------------------------------------------------------------------
    def _state_bytes(self) -> bytes:
        from node.train import local as L
        from node.train.adapter_state import canonical_bytes

        return canonical_bytes(L.trainable_state(self.shard, self.spec))

    def _load_bytes(self, data: bytes) -> None:
        from node.train import local as L
        from node.train.adapter_state import state_from_bytes

        L.load_trainable_state(self.shard, self.spec, state_from_bytes(data))

    def _members(self, shard: int | None = None) -> list[Member]:
        return [m for m in self.chain.members(self.sid) if shard is None or m.shard == shard]

    def _get(self, h: str, hint_peers: list[str] = ()) -> bytes:
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
            from node.train import local as L

            self._load_bytes(self._init_bytes)
            self.optimizer = L.make_optimizer(self.shard, self.spec.training.learning_rate)
            self.loaded_round = -1
            return
        ck = self.store.checkpoint(self.sid, rnd - 1)
        if ck is not None:
            self._load_bytes(self._get(ck.adapter_hash))
            opt = self.store.load_optimizer_state(ck)
            if opt is not None:
                self.optimizer.load_state_dict(opt)
        else:
            # the round went final while this node was down: adopt the agreed adapter, keep the
            # newest optimizer moments this node has (or fresh ones)
            final = self.chain.final_hash(self.sid, rnd - 1, self.stage)
            if final is None:
                raise SessionError(f"round {rnd - 1} of shard {self.stage} is not final on chain")
            data = self._get(final)
            self._load_bytes(data)
            older = self.store.latest_checkpoint(self.sid)
            if older is not None and older.round < rnd - 1:
                opt = self.store.load_optimizer_state(older)
                if opt is not None:
                    self.optimizer.load_state_dict(opt)
            self.store.save_checkpoint(self.sid, rnd - 1, data, self.optimizer.state_dict(), rnd * self.interval)
            self.store.upsert_round(self.sid, self.stage, rnd - 1, status="final", final_hash=final,
                                    finished=time.time())
        self.loaded_round = rnd - 1
        self._emit("restored", round=rnd - 1)

    # -- the loop -------------------------------------------------------------------------------
    def _sleep(self, s: float) -> None:
        if self.stop.wait(s):
            raise Stopped()

    def run(self) -> None:
        if self.shard is None:
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
            if not self._train_round(rnd):
                continue
            self._sync(rnd)

    def _stage_peers(self) -> dict[int, Member]:
        peers = {}
        for m in self._members():
            if m.replica == self.me.replica:
                peers[m.shard] = m
        return peers

    def _train_round(self, rnd: int) -> bool:
        from node.train import data as D
        from node.train.local import lr_at
        from node.train.pipeline import PipelineError, ShardTrainer

        row = self.store.round(self.sid, self.stage, rnd)
        if row and row["status"] in ("trained", "committed") and row["local_hash"] and \
                self.store.get_blob(row["local_hash"]) is not None:
            # trained (and maybe committed) before a restart: go straight to the sync with that update
            self._load_bytes(self.store.get_blob(row["local_hash"]))
            self._emit("train_skipped", round=rnd, reason="local update already made")
            return True
        t = self.spec.training
        transport = self.net.transport(self.sid, rnd, self.me.replica, self._stage_peers())
        trainer = ShardTrainer(self.shard, self.stage, self.num_stages, transport, self.optimizer,
                               micro_batches=t.micro_batches, task=self.spec.task.kind,
                               timeout=self.pipeline_timeout, device=self.device)
        self.store.upsert_round(self.sid, self.stage, rnd, status="training")
        self._round_bytes0 = self.net.bytes_moved()
        first_step = rnd * self.interval
        order = None
        if self.stage == 0:
            order = D.batch_indices(len(self.part), t.batch_size, t.seed, self.interval, start_step=first_step)
        self._emit("round_start", round=rnd)
        t_round = time.perf_counter()
        losses = []
        for i in range(self.interval):
            if self.stop.is_set():
                raise Stopped()
            step = first_step + i
            batch = None
            if order is not None:
                batch = self.data.train.collate([self.part[j] for j in next(order)])
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
            dt = time.perf_counter() - t0
            losses.append(loss)
            self.store.record_loss(self.sid, rnd, step, loss, dt)
            self._emit("step", round=rnd, step=step, loss=round(loss, 5), seconds=round(dt, 4))
        mean = sum(losses) / len(losses)
        self.store.upsert_round(self.sid, self.stage, rnd, status="trained", loss=mean,
                                local_hash=self.store.put_blob(self._state_bytes()))
        self._emit("round_trained", round=rnd, loss=round(mean, 5), seconds=round(time.perf_counter() - t_round, 3))
        return True

    def _sync(self, rnd: int) -> None:
        t_sync = time.perf_counter()
        sent0, recv0 = self.net.bytes_moved()
        local = self._state_bytes()
        h_local = self.net.serve(local)
        self.store.put_blob(local)
        # later stages do not see the data: they weight their update by their first stage's count,
        # which every node recomputes from the partition (deterministic, so no message is needed)
        samples = self.samples or self._replica_samples(self.me.replica)
        mine = Announcement(self.sid, rnd, self.stage, self.me.replica, h_local, samples, self._my_peer())
        self.net.announce(mine)
        pulse = _Pulse(self.net, 3.0)
        pulse.every(mine)

        # 1. the replicas' local updates: all of them, or those announced before the timeout
        deadline = time.monotonic() + self.sync_timeout
        updates: dict[int, Announcement] = {self.me.replica: mine}
        while len(updates) < self.replicas and time.monotonic() < deadline:
            if self.chain.final_hash(self.sid, rnd, self.stage) is not None:
                break
            for a in self.net.announcements(self.sid, rnd, self.stage):
                if a.replica < self.replicas and a.kind == "update":
                    updates[a.replica] = a
            pulse.tick()
            self._sleep(self.poll)
        blobs: dict[int, bytes] = {self.me.replica: local}
        for rep in sorted(updates):
            if rep in blobs:
                continue
            try:
                blobs[rep] = self._fetch_update(updates[rep])
            except Exception as exc:  # noqa: BLE001 - a replica we cannot fetch from is left out
                self._emit("update_unavailable", round=rnd, replica=rep, error=str(exc)[:200])
        chosen = {rep: updates[rep].hash for rep in blobs}

        # 2. agree on the set: each node announces what it holds and keeps only what everyone it
        # holds also holds (the intersection), so replicas that saw different sets converge on the
        # same aggregate instead of splitting the vote
        h_agg = agg_bytes = None
        if self.chain.final_hash(self.sid, rnd, self.stage) is None:
            for _ in range(self.replicas + 1):
                agg_bytes, h_agg = self._aggregate(chosen, blobs, updates)
                msg = Announcement(self.sid, rnd, self.stage, self.me.replica, h_local, samples, self._my_peer(),
                                   {"kind": "set", "set": {str(k): v for k, v in sorted(chosen.items())},
                                    "aggregate": h_agg})
                self.net.announce(msg)
                pulse.every(msg)
                deadline = time.monotonic() + self.sync_timeout
                others: dict[int, dict] = {}
                while time.monotonic() < deadline:
                    for a in self.net.announcements(self.sid, rnd, self.stage, kind="set"):
                        if a.replica in chosen and a.replica != self.me.replica:
                            others[a.replica] = {int(k): v for k, v in a.extra.get("set", {}).items()}
                    if all(r in others for r in chosen if r != self.me.replica):
                        break
                    if self.chain.final_hash(self.sid, rnd, self.stage) is not None:
                        break
                    pulse.tick()
                    self._sleep(self.poll)
                narrowed = {r: h for r, h in chosen.items() if all(o.get(r) == h for o in others.values())}
                if narrowed == chosen or not narrowed:
                    break
                chosen = narrowed
            self.store.upsert_round(self.sid, self.stage, rnd, aggregate_hash=h_agg, peers_used=len(chosen),
                                    samples=samples)
            if self.chain.final_hash(self.sid, rnd, self.stage) is None and \
                    not self.chain.committed(self.sid, rnd, self.stage):
                self.chain.commit(self.sid, rnd, self.stage, h_agg, h_local)
                self._emit("committed", round=rnd, aggregate=h_agg, local=h_local, replicas_used=sorted(chosen))
            self.store.upsert_round(self.sid, self.stage, rnd, status="committed")

        # 3. the round is final on chain (directly, or after the commit deadline)
        final = None
        while final is None:
            final = self.chain.final_hash(self.sid, rnd, self.stage)
            if final is not None:
                break
            self.chain.try_finalize_after_timeout(self.sid, rnd, self.stage)
            pulse.tick()
            self._sleep(self.poll)
        if final == h_agg:
            data = agg_bytes
        else:
            hints = [a.peer for a in self.net.announcements(self.sid, rnd, self.stage, kind="set")
                     if a.extra.get("aggregate") == final]
            data = self._get(final, hints)
        self.store.put_blob(data)
        self.net.serve(data)
        self._load_bytes(data)
        self.store.save_checkpoint(self.sid, rnd, data, self.optimizer.state_dict(), (rnd + 1) * self.interval)
        sent1, recv1 = self.net.bytes_moved()
        rs0, rr0 = getattr(self, "_round_bytes0", None) or (sent0, recv0)
        self.store.upsert_round(self.sid, self.stage, rnd, status="final", final_hash=final, finished=time.time(),
                                bytes_sent=sent1 - rs0, bytes_recv=recv1 - rr0,
                                sync_sent=sent1 - sent0, sync_recv=recv1 - recv0)
        self._round_bytes0 = None
        self.loaded_round = rnd
        self._emit("round_final", round=rnd, final=final, agreed=final == h_agg,
                   sync_seconds=round(time.perf_counter() - t_sync, 3))

    def _aggregate(self, chosen: dict[int, str], blobs: dict[int, bytes],
                   updates: dict[int, Announcement]) -> tuple[bytes, str]:
        from node.job import keccak_hex
        from node.train.adapter_state import canonical_bytes, state_from_bytes
        from node.train.aggregate import aggregate

        reps = sorted(chosen)  # replica order: every node aggregates in the same order
        t = self.spec.training
        agg = aggregate(t.aggregation, [state_from_bytes(blobs[r]) for r in reps], [updates[r].samples for r in reps],
                        trim=t.trim_fraction)
        data = canonical_bytes(agg)
        self.net.serve(data)
        return data, keccak_hex(data)

    def _fetch_update(self, a: Announcement) -> bytes:
        data = self.store.get_blob(a.hash)
        if data is not None:
            return data
        for attempt in range(3):
            try:
                data = self.net.fetch(a.peer, a.hash, timeout=30.0)
                break
            except Exception:  # noqa: BLE001 - a reset stream after a peer restart: redial and retry
                if attempt == 2:
                    raise
                self._sleep(1.0)
        self.store.put_blob(data)
        return data

    def _my_peer(self) -> str:
        return self.me.peer_id

    def _replica_samples(self, replica: int) -> int:
        from node.train import data as D
        from node.train.partition import partition

        if self.spec.task.kind == "sequence-classification":
            _, labels = D.read_sst2(D.resolve_data_path(self.spec.data.path))
            train_idx, _ = D.split_indices(len(labels), self.spec.data.validation_size)
            if self.train_limit is not None:
                train_idx = train_idx[:self.train_limit]
            ys = [labels[i] for i in train_idx]
        else:
            from node.train import local as L

            ys = L.build_data(self.spec, train_limit=self.train_limit).train.targets
        parts = partition(ys if self.spec.data.distribution == "dirichlet" else len(ys), self.replicas,
                          self.spec.data.distribution, seed=self.spec.training.seed,
                          dataset_hash=self.spec.data.hash or "0x" + "00" * 32, alpha=self.spec.data.alpha)
        self.samples = len(parts[replica])
        return self.samples
