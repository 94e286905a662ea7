"""One node's part in a FedPEAT session: each replica of the one shard is a device that tunes the job's adapters
against the emulator the controller's on-chain plan gives it, or sits the round out.

A FedPEAT job (``[fedpeat]`` in the spec, docs/fedpeat.md) is proposed, voted and joined like any job; its
session runner differs from ``node.daemon.session.SessionRunner`` in the round only. Session round ``r``
(0-based, TrainingSessions) obeys the ledger's plan ``r + 1`` (1-based, FedPeatLedger):

1. wait until the plan is on chain (``ChainPort.round_plan``): per replica a retention in basis points, 0 =
   sits out. A replica takes part when its retention is > 0 and an emulator with that retention is attached
   to the session (every node reads the same chain, so every node derives the same participants);
2. a participant gets that emulator (``EmulatorSource``: the on-chain hash decides; built from local weights
   with ``node.emulator.emulator_for_spec`` and checked against the hash, or, with ``fetch_emulators``,
   fetched by hash from session peers over ``/bsns/adapter/1`` and rebuilt from the blob alone), loads the
   round's global adapter into it, trains ``sync_interval`` steps on its data partition and announces its
   update. A sit-out replica trains nothing;
3. every replica, sit-outs included, collects the participants' updates (it waits for exactly those: never
   for a sit-out), agrees on the set as in ``SessionRunner`` (intersection of the announced sets), aggregates
   them with the spec's rule and commits the aggregate hash (a sit-out's local-update hash is zero), so
   finality needs nothing new from TrainingSessions. A round where nobody takes part commits the previous
   global adapter unchanged.

Devices keep no optimizer state across rounds (a device's emulator may change from round to round): each round
starts a fresh AdamW at the spec's learning rate, as the in-process harness (coordinator.fedpeat) does.
Nodes that build emulators serve every emulator attached to the session, so fetching nodes can get any of them;
a node serves what it fetched too. Emulator blobs are cached by hash under ``<data_dir>/emulators/``.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from pathlib import Path

from node.daemon.ports import ZERO_HASH, Announcement
from node.daemon.session import SessionError, SessionRunner, Stopped, _Pulse

BPS = 10_000

# Building models patches torch/transformers globals for a moment (meta-device init in emulator_from_blob and
# node.model): one build at a time per process (the unit tests run several runners in threads).
_BUILD_LOCK = threading.Lock()


def plan_participants(plan: list[int], replicas: int, attached: dict[int, str]) -> tuple[dict[int, int], dict[int, int]]:
    """(participants {replica: retention bps}, unusable {replica: bps}) of a round plan: a replica takes part
    when its retention is > 0 and an emulator with that retention is attached; entries past the session's
    replicas are ignored, missing entries sit out."""
    parts, unusable = {}, {}
    for rep in range(replicas):
        bps = int(plan[rep]) if rep < len(plan) else 0
        if bps <= 0:
            continue
        if bps in attached:
            parts[rep] = bps
        else:
            unusable[rep] = bps
    return parts, unusable


class EmulatorSource:
    """The session's emulators by on-chain hash: memory, the disk cache, then a local build (checked against
    the hash) or, when ``fetch`` is set, a fetch from session peers (verified); every blob it holds is served."""

    def __init__(self, spec, net, cache_dir: Path, *, fetch: bool, peers: Callable[[], list[str]],
                 emit: Callable[..., None], sleep: Callable[[float], None], fetch_timeout: float = 120.0,
                 wait_s: float = 300.0, keep: int = 2) -> None:
        self.spec, self.net, self.cache_dir, self.fetch = spec, net, Path(cache_dir), fetch
        self.peers, self.emit, self.sleep = peers, emit, sleep
        self.fetch_timeout, self.wait_s, self.keep = fetch_timeout, wait_s, keep
        self._held: dict[str, object] = {}   # hash -> Emulator, most recent last (bounded by ``keep``)
        self._served: set[str] = set()
        self._refused: dict[str, str] = {}  # hash -> why this node cannot make it (not rebuilt on every retry)
        self._base = None                    # the full model, loaded once by a building node

    def _path(self, h: str) -> Path:
        return self.cache_dir / f"{h.lower().removeprefix('0x')}.bin"

    def _hold(self, h: str, emu) -> None:
        self._held.pop(h, None)
        self._held[h] = emu
        while len(self._held) > self.keep:
            self._held.pop(next(iter(self._held)))

    def _serve(self, h: str, blob: bytes) -> None:
        if h not in self._served:
            self.net.serve(blob)
            self._served.add(h)

    def _cache(self, blob: bytes, h: str) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        p = self._path(h)
        if not p.exists():
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_bytes(blob)
            tmp.replace(p)

    def _from_cache(self, h: str):
        from node.emulator import EmulatorError, emulator_from_blob

        p = self._path(h)
        if not p.exists():
            return None
        blob = p.read_bytes()
        try:
            with _BUILD_LOCK:
                emu = emulator_from_blob(blob, self.spec, h)
        except EmulatorError:
            p.unlink(missing_ok=True)  # a torn or corrupted file: forget it, get it again
            return None
        self._serve(h, blob)
        return emu

    def _build(self, bps: int, h: str):
        from node.emulator import emulator_blob, emulator_for_spec, load_full_model

        if h in self._refused:
            raise SessionError(self._refused[h])
        t0 = time.perf_counter()
        with _BUILD_LOCK:
            if self._base is None:
                self._base = load_full_model(self.spec)
            emu = emulator_for_spec(self.spec, bps / BPS, base=self._base)
        if emu.hash() != h:
            self._refused[h] = (f"the emulator for retention {bps / BPS:g} built here hashes to {emu.hash()}, but "
                                f"the session's emulator on chain is {h}: this node's model or spec differs from the "
                                f"controller's")
            raise SessionError(self._refused[h])
        blob = emulator_blob(emu)
        self._cache(blob, h)
        self._serve(h, blob)
        self.emit("emulator_built", hash=h, retention=bps / BPS, bytes=len(blob),
                  seconds=round(time.perf_counter() - t0, 3))
        return emu

    def _fetch(self, bps: int, h: str):
        from node.emulator import EmulatorError, emulator_from_blob

        deadline = time.monotonic() + self.wait_s
        last = "no session peer to ask"
        while True:
            for peer in self.peers():
                t0 = time.perf_counter()
                try:
                    blob = self.net.fetch(peer, h, timeout=self.fetch_timeout)
                except Exception as exc:  # noqa: BLE001 - a peer that does not (yet) serve it: ask the next one
                    last = f"{peer}: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
                    continue
                seconds = time.perf_counter() - t0
                try:
                    with _BUILD_LOCK:
                        emu = emulator_from_blob(blob, self.spec, h)
                except EmulatorError as exc:
                    last = f"{peer}: {exc}"
                    self.emit("emulator_refused", hash=h, peer=peer, bytes=len(blob), error=str(exc)[:300])
                    continue
                self._cache(blob, h)
                self._serve(h, blob)
                self.emit("emulator_fetched", hash=h, retention=bps / BPS, peer=peer, bytes=len(blob),
                          seconds=round(seconds, 3), verified=True)
                return emu
            if time.monotonic() > deadline:
                raise SessionError(f"no session peer served emulator {h} (retention {bps / BPS:g}) within "
                                   f"{self.wait_s:g} s; last: {last}")
            self.sleep(2.0)

    def get(self, bps: int, h: str):
        """The emulator with on-chain hash ``h`` (retention ``bps``), verified."""
        emu = self._held.get(h)
        if emu is None:
            emu = self._from_cache(h)
        if emu is None:
            emu = self._fetch(bps, h) if self.fetch else self._build(bps, h)
        self._hold(h, emu)
        return emu

    def serve_all(self, attached: dict[int, str]) -> None:
        """A building node makes every attached emulator fetchable (fetching nodes may need any of them)."""
        if self.fetch:
            return
        for bps, h in sorted(attached.items()):
            if h in self._served:
                continue
            if self._path(h).exists() and self._from_cache(h) is not None:
                continue
            self._build(bps, h)  # served and cached; not held: only the emulators this node trains on are


class FedPeatRunner(SessionRunner):
    """``SessionRunner`` for a session whose spec has ``[fedpeat]`` (one shard; replica = device)."""

    def __init__(self, *args, fetch_emulators: bool = False, cache_dir: str | Path | None = None,
                 emulator_wait_s: float = 300.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.spec.fedpeat is None:
            raise SessionError(f"session {self.sid}: the spec has no [fedpeat] table")
        if self.num_stages != 1:
            raise SessionError(f"session {self.sid}: a FedPEAT job has one shard, not {self.num_stages}")
        self.fetch_emulators = fetch_emulators
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.store.dir / "emulators"
        self.emulator_wait_s = emulator_wait_s
        self.source: EmulatorSource | None = None
        self.global_bytes: bytes | None = None   # the global adapter after round ``loaded_round``
        self._init: bytes | None = None

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self) -> None:
        from node.train import local as L
        from node.train.partition import partition

        self.data = L.build_data(self.spec, train_limit=self.train_limit)
        labels = self.data.train.targets
        parts = partition(labels if self.spec.data.distribution == "dirichlet" else len(labels),
                          self.replicas, self.spec.data.distribution, seed=self.spec.training.seed,
                          dataset_hash=self.spec.data.hash or ZERO_HASH, alpha=self.spec.data.alpha)
        self.part = parts[self.me.replica]
        self.samples = len(self.part)
        self.source = EmulatorSource(self.spec, self.net, self.cache_dir, fetch=self.fetch_emulators,
                                     peers=self._peers, emit=lambda kind, **i: self._emit(kind, **i),
                                     sleep=self._sleep, wait_s=self.emulator_wait_s)
        self.loaded_round = None
        self._emit("setup", layers=list(self.spec.shards.layers[0]), samples=self.samples, fedpeat=True,
                   fetch_emulators=self.fetch_emulators)

    def _peers(self) -> list[str]:
        return [m.peer_id for m in self._members() if m.address != self.me.address and m.peer_id]

    # -- state ----------------------------------------------------------------------------------
    def _initial_bytes(self, emu=None) -> bytes:
        """The seeded initial adapter: the same from every emulator and the full model (node.emulator.adapt)."""
        if self._init is None:
            from node.emulator import adapt
            from node.train.adapter_state import canonical_bytes
            from node.tuners import adapter_state_dict

            if emu is None:
                attached = self._attached()
                bps = min(attached)
                emu = self.source.get(bps, attached[bps])
            with _BUILD_LOCK:
                model = adapt(self.spec, copy.deepcopy(emu.model))
            self._init = canonical_bytes(adapter_state_dict(model))
        return self._init

    def _global(self, emu=None) -> bytes:
        if self.global_bytes is None:  # only before round 0's aggregate: the initial adapter
            self.global_bytes = self._initial_bytes(emu)
        return self.global_bytes

    def _attached(self) -> dict[int, str]:
        while True:
            attached = self.chain.attached_emulators(self.sid)
            if attached:
                return attached
            self._sleep(max(self.poll, 0.5))

    def _restore(self, rnd: int) -> None:
        """Make ``global_bytes`` the final adapter of round ``rnd - 1`` (None before round 0: the initial one)."""
        if self.loaded_round == rnd - 1:
            return
        if rnd == 0:
            self.global_bytes = None
            self.loaded_round = -1
            return
        ck = self.store.checkpoint(self.sid, rnd - 1)
        if ck is not None:
            self.global_bytes = self._get(ck.adapter_hash)
        else:
            final = self.chain.final_hash(self.sid, rnd - 1, 0)
            if final is None:
                raise SessionError(f"round {rnd - 1} of session {self.sid} is not final on chain")
            self.global_bytes = self._get(final)
            self.store.save_checkpoint(self.sid, rnd - 1, self.global_bytes, None, rnd * self.interval)
            self.store.upsert_round(self.sid, 0, rnd - 1, status="final", final_hash=final, finished=time.time())
        self.loaded_round = rnd - 1
        self._emit("restored", round=rnd - 1)

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        if self.source is None:
            self.setup()
        while True:
            if self.stop.is_set():
                raise Stopped()
            rnd = self.chain.current_round(self.sid, 0)
            if rnd >= self.rounds:
                self._emit("shard_done", rounds=self.rounds)
                return
            try:
                self._restore(rnd)
            except SessionError as exc:
                self._emit("restore_failed", round=rnd, error=str(exc))
                self._sleep(2.0)
                continue
            plan = self._wait_plan(rnd)
            if plan is None:
                continue  # the round went final without this node: restore and go on
            attached = self.chain.attached_emulators(self.sid)
            self.source.serve_all(attached)
            parts, unusable = plan_participants(plan, self.replicas, attached)
            if unusable:
                self._emit("plan_unusable", round=rnd, replicas={str(r): b for r, b in unusable.items()},
                           reason="no emulator with that retention is attached: those replicas sit out")
            local = None
            if self.me.replica in parts:
                local = self._train(rnd, parts[self.me.replica], attached[parts[self.me.replica]])
            else:
                self._emit("sat_out", round=rnd, ledger_round=rnd + 1)
            self._sync_round(rnd, parts, local)

    def _wait_plan(self, rnd: int) -> list[int] | None:
        said = False
        while True:
            plan = self.chain.round_plan(self.sid, rnd + 1)
            if plan is not None:
                self._emit("round_plan", round=rnd, ledger_round=rnd + 1, retention_bps=list(plan))
                return plan
            if self.chain.current_round(self.sid, 0) > rnd:
                return None
            if not said:
                self._emit("waiting_for_plan", round=rnd, ledger_round=rnd + 1)
                said = True
            self._sleep(max(self.poll, 0.5))

    def _train(self, rnd: int, bps: int, emulator_hash: str) -> bytes:
        import torch

        from node.emulator import adapt
        from node.train import data as D
        from node.train import local as L
        from node.train.adapter_state import canonical_bytes, state_from_bytes
        from node.tuners import adapter_state_dict, load_adapter_state_dict

        row = self.store.round(self.sid, 0, rnd)
        if row and row["status"] in ("trained", "committed") and row["local_hash"] and \
                self.store.get_blob(row["local_hash"]) is not None:
            self._emit("train_skipped", round=rnd, reason="local update already made")
            return self.store.get_blob(row["local_hash"])
        emu = self.source.get(bps, emulator_hash)
        start = self._global(emu)
        with _BUILD_LOCK:
            model = adapt(self.spec, copy.deepcopy(emu.model))
            load_adapter_state_dict(model, state_from_bytes(start))
        model.to(self.device)
        model.eval()  # dropout off, as in every bsns trainer: the forward pass is a function of weights and batch
        t = self.spec.training
        opt = L.make_optimizer(model, t.learning_rate)
        self.store.upsert_round(self.sid, 0, rnd, status="training")
        self._round_bytes0 = self.net.bytes_moved()
        first = rnd * self.interval
        order = D.batch_indices(len(self.part), t.batch_size, t.seed, self.interval, start_step=first)
        self._emit("round_start", round=rnd, retention=bps / BPS, emulator=emulator_hash,
                   layers=list(emu.manifest.kept_layers))
        t_round = time.perf_counter()
        losses = []
        for i in range(self.interval):
            if self.stop.is_set():
                raise Stopped()
            step = first + i
            batch = self.data.train.collate([self.part[j] for j in next(order)])
            t0 = time.perf_counter()
            loss = L.train_step(model, opt, batch, self.spec.task.kind, self.device, t.learning_rate, t.micro_batches)
            dt = time.perf_counter() - t0
            losses.append(loss)
            self.store.record_loss(self.sid, rnd, step, loss, dt)
            self._emit("step", round=rnd, step=step, loss=round(loss, 5), seconds=round(dt, 4))
        with torch.no_grad():
            local = canonical_bytes({k: v.detach().cpu() for k, v in adapter_state_dict(model).items()})
        del model, opt
        mean = sum(losses) / len(losses)
        self.store.upsert_round(self.sid, 0, rnd, status="trained", loss=mean, local_hash=self.store.put_blob(local))
        self._emit("round_trained", round=rnd, retention=bps / BPS, emulator=emulator_hash, loss=round(mean, 5),
                   seconds=round(time.perf_counter() - t_round, 3))
        return local

    def _sync_round(self, rnd: int, parts: dict[int, int], local: bytes | None) -> None:
        from node.job import keccak_hex

        t_sync = time.perf_counter()
        sent0, recv0 = self.net.bytes_moved()
        me = self.me.replica
        pulse = _Pulse(self.net, 3.0)
        h_local = ZERO_HASH
        updates: dict[int, Announcement] = {}
        blobs: dict[int, bytes] = {}
        if local is not None:
            h_local = self.net.serve(local)
            self.store.put_blob(local)
            mine = Announcement(self.sid, rnd, 0, me, h_local, self.samples, self._my_peer(),
                                {"kind": "update", "retention_bps": parts[me]})
            self.net.announce(mine)
            pulse.every(mine)
            updates[me], blobs[me] = mine, local

        def final():
            return self.chain.final_hash(self.sid, rnd, 0)

        def collect():
            for a in self.net.announcements(self.sid, rnd, 0):
                if a.replica in parts and a.kind == "update":
                    updates[a.replica] = a

        h_agg = agg_bytes = None
        chosen: dict[int, str] = {}
        if not self.chain.committed(self.sid, rnd, 0):
            # 1. the participants' updates, and only theirs: a sit-out is never waited for
            deadline = time.monotonic() + self.sync_timeout
            while not set(parts) <= set(updates) and time.monotonic() < deadline and final() is None:
                collect()
                pulse.tick()
                self._sleep(self.poll)
            collect()  # the round may have gone final with every update already announced
            for rep in sorted(updates):
                if rep in blobs:
                    continue
                try:
                    blobs[rep] = self._fetch_update(updates[rep])
                except Exception as exc:  # noqa: BLE001 - a participant we cannot fetch from is left out
                    self._emit("update_unavailable", round=rnd, replica=rep, error=str(exc)[:200])
            chosen = {rep: updates[rep].hash for rep in blobs}
            # 2. agree on the set (SessionRunner's intersection rule, among the participants we hold)
            for _ in range(len(parts) + 1):
                if chosen:
                    agg_bytes, h_agg = self._aggregate(chosen, blobs, updates)
                else:  # nobody takes part (or no update reached us): the global adapter stays as it was
                    agg_bytes = self._global()
                    h_agg = keccak_hex(agg_bytes)
                    self.net.serve(agg_bytes)
                msg = Announcement(self.sid, rnd, 0, me, h_local, self.samples, self._my_peer(),
                                   {"kind": "set", "set": {str(k): v for k, v in sorted(chosen.items())},
                                    "aggregate": h_agg})
                self.net.announce(msg)
                pulse.every(msg)
                if not chosen:
                    break
                deadline = time.monotonic() + self.sync_timeout
                others: dict[int, dict] = {}
                while time.monotonic() < deadline and final() is None:
                    for a in self.net.announcements(self.sid, rnd, 0, kind="set"):
                        if a.replica in chosen and a.replica != me:
                            others[a.replica] = {int(k): v for k, v in a.extra.get("set", {}).items()}
                    if all(r in others for r in chosen if r != me):
                        break
                    pulse.tick()
                    self._sleep(self.poll)
                narrowed = {r: h for r, h in chosen.items() if all(o.get(r) == h for o in others.values())}
                if narrowed == chosen or not narrowed:
                    break
                chosen = narrowed
            self.store.upsert_round(self.sid, 0, rnd, aggregate_hash=h_agg, peers_used=len(chosen),
                                    samples=self.samples if local is not None else 0)
            # a round that went final while we aggregated is still committed to when we agree with it: the
            # contract records a commit just after finalization, so a sit-out's agreement is on chain too
            if final() in (None, h_agg) and not self.chain.committed(self.sid, rnd, 0):
                self.chain.commit(self.sid, rnd, 0, h_agg, h_local)
                self._emit("committed", round=rnd, aggregate=h_agg, local=h_local, trained=local is not None,
                           participants=sorted(parts), replicas_used=sorted(chosen))
            self.store.upsert_round(self.sid, 0, rnd, status="committed")

        # 3. the round is final on chain (directly, or after the commit deadline)
        h_final = None
        while h_final is None:
            h_final = final()
            if h_final is not None:
                break
            self.chain.try_finalize_after_timeout(self.sid, rnd, 0)
            pulse.tick()
            self._sleep(self.poll)
        if h_final == h_agg:
            data = agg_bytes
        else:
            hints = [a.peer for a in self.net.announcements(self.sid, rnd, 0, kind="set")
                     if a.extra.get("aggregate") == h_final]
            data = self._get(h_final, hints)
        self.store.put_blob(data)
        self.net.serve(data)
        self.global_bytes = data
        self.store.save_checkpoint(self.sid, rnd, data, None, (rnd + 1) * self.interval)
        sent1, recv1 = self.net.bytes_moved()
        rs0, rr0 = getattr(self, "_round_bytes0", None) or (sent0, recv0)
        self.store.upsert_round(self.sid, 0, rnd, status="final", final_hash=h_final, finished=time.time(),
                                bytes_sent=sent1 - rs0, bytes_recv=recv1 - rr0,
                                sync_sent=sent1 - sent0, sync_recv=recv1 - recv0)
        self._round_bytes0 = None
        self.loaded_round = rnd
        self._emit("round_final", round=rnd, final=h_final, agreed=h_final == h_agg, trained=local is not None,
                   sync_seconds=round(time.perf_counter() - t_sync, 3))
