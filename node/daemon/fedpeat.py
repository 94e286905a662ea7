"""One node's part in a FedPEAT session: each replica of the one shard is a device that tunes the job's adapters
against the emulator the controller's on-chain plan gives it, or sits the round out.

A FedPEAT job (``[fedpeat]`` in the spec, docs/fedpeat.md) is proposed, voted and joined like any job; its
session runner is ``node.daemon.session.SessionRunner`` with another round before the sync (``_work_round``)
and the same sync (``node.daemon.sync.RoundSync``). Session round ``r`` (0-based, TrainingSessions) obeys the
ledger's plan ``r + 1`` (1-based, FedPeatLedger):

1. wait until the plan is on chain (``ChainPort.round_plan``): per replica a retention in basis points, 0 =
   sits out. A replica takes part when its retention is > 0 and an emulator with that retention is attached
   to the session (every node reads the same chain, so every node derives the same participants);
2. a participant gets that emulator (``EmulatorSource``: the on-chain hash decides; built from local weights
   with ``node.emulator.emulator_for_spec`` and checked against the hash, or, with ``fetch_emulators``,
   fetched by hash from session peers over ``/bsns/adapter/1`` and rebuilt from the blob alone), loads the
   round's global adapter into it, trains ``sync_interval`` steps on its data partition and announces its
   update. A sit-out replica trains nothing;
3. every replica, sit-outs included, syncs as in ``SessionRunner``, except that it waits for the participants'
   updates only (never for a sit-out's), a sit-out commits with a zero local-update hash, a round where nobody
   takes part commits the previous global adapter unchanged, a round that went final while this node
   aggregated is still committed to when its aggregate is the final one, and a node that already committed only
   waits for finality after a restart (``FEDPEAT_SYNC``). Finality needs
   nothing new from TrainingSessions.

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

from node.daemon.session import SessionError, SessionRunner
from node.daemon.sync import RoundWork, SyncPolicy

BPS = 10_000

#: a restarted node that already committed only waits for finality, and a node that aggregated after the round went
#: final still commits when its aggregate is the final one
FEDPEAT_SYNC = SyncPolicy(resync_after_commit=False, commit_after_final=True)

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
        from node.emulator import emulator_blob, emulator_for_spec
        from node.train.build import load_full_model

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

    sync_policy = FEDPEAT_SYNC  # the contract records a commit just after finalization: a sit-out's agreement too

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
    def _is_set_up(self) -> bool:
        return self.source is not None

    def setup(self) -> None:
        from node.train.build import build_data

        self.data = build_data(self.spec, train_limit=self.train_limit)
        self.part = self._partition(self.data.train.targets)[self.me.replica]
        self.samples = len(self.part)
        self.source = EmulatorSource(self.spec, self.net, self.cache_dir, fetch=self.fetch_emulators,
                                     peers=self._peers, emit=lambda kind, **i: self._emit(kind, **i),
                                     sleep=self._sleep, wait_s=self.emulator_wait_s)
        self.loaded_round = None
        self._emit("setup", layers=list(self.spec.shards.layers[0]), samples=self.samples, fedpeat=True,
                   fetch_emulators=self.fetch_emulators)

    def _peers(self) -> list[str]:
        return [m.peer_id for m in self._members() if m.address != self.me.address and m.peer_id]

    # -- state: the global adapter as bytes (no shard in memory, no optimizer kept across rounds) ----
    def _initial_bytes(self, emu=None) -> bytes:
        """The seeded initial adapter: the same from every emulator and the full model (node.emulator.adapt)."""
        if self._init is None:
            from node.train.build import adapt
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

    def _adopt(self, data: bytes) -> None:
        self.global_bytes = data

    def _adopt_initial(self) -> None:
        self.global_bytes = None  # made from the first emulator this node holds (``_global``)

    def _global_before(self, rnd: int) -> bytes:
        return self._global()

    def _attached(self) -> dict[int, str]:
        while True:
            attached = self.chain.attached_emulators(self.sid)
            if attached:
                return attached
            self._sleep(max(self.poll, 0.5))

    # -- the round before the sync: obey the plan ---------------------------------------------------
    def _work_round(self, rnd: int) -> RoundWork | None:
        plan = self._wait_plan(rnd)
        if plan is None:
            return None  # the round went final without this node: restore and go on
        attached = self.chain.attached_emulators(self.sid)
        self.source.serve_all(attached)
        parts, unusable = plan_participants(plan, self.replicas, attached)
        if unusable:
            self._emit("plan_unusable", round=rnd, replicas={str(r): b for r, b in unusable.items()},
                       reason="no emulator with that retention is attached: those replicas sit out")
        me = self.me.replica
        local = None
        if me in parts:
            local = self._train(rnd, parts[me], attached[parts[me]])
        else:
            self._emit("sat_out", round=rnd, ledger_round=rnd + 1)
        # only the participants' updates are waited for: a sit-out is never waited for
        return RoundWork(local, frozenset(parts), self.samples, self.samples if local is not None else 0,
                         update_extra={"kind": "update", "retention_bps": parts.get(me)},
                         info={"trained": local is not None}, commit_info={"participants": sorted(parts)})

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

        from node.train.build import adapt
        from node.train.step import make_optimizer, train_step
        from node.train.adapter_state import canonical_bytes, state_from_bytes
        from node.tuners import adapter_state_dict, load_adapter_state_dict

        earlier = self._earlier_update(rnd)
        if earlier is not None:
            return earlier
        emu = self.source.get(bps, emulator_hash)
        start = self._global(emu)
        with _BUILD_LOCK:
            model = adapt(self.spec, copy.deepcopy(emu.model))
            load_adapter_state_dict(model, state_from_bytes(start))
        model.to(self.device)
        model.eval()  # dropout off, as in every bsns trainer: the forward pass is a function of weights and batch
        t = self.spec.training
        opt = make_optimizer(model, t.learning_rate)
        self.store.upsert_round(self.sid, 0, rnd, status="training")
        self._round_bytes0 = self.net.bytes_moved()
        self._emit("round_start", round=rnd, retention=bps / BPS, emulator=emulator_hash,
                   layers=list(emu.manifest.kept_layers))
        t_round = time.perf_counter()
        losses = []
        for step, batch in self._batches(rnd):
            t0 = time.perf_counter()
            loss = train_step(model, opt, batch, self.spec.task.kind, self.device, t.learning_rate, t.micro_batches)
            losses.append(loss)
            self._record_step(rnd, step, loss, time.perf_counter() - t0)
        with torch.no_grad():
            local = canonical_bytes({k: v.detach().cpu() for k, v in adapter_state_dict(model).items()})
        del model, opt
        mean = sum(losses) / len(losses)
        self.store.upsert_round(self.sid, 0, rnd, status="trained", loss=mean, local_hash=self.store.put_blob(local))
        self._emit("round_trained", round=rnd, retention=bps / BPS, emulator=emulator_hash, loss=round(mean, 5),
                   seconds=round(time.perf_counter() - t_round, 3))
        return local
