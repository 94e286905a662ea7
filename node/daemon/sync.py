"""The round sync: how the replicas of one shard turn their local updates into the round's final aggregate.

One component used by every session runner (``node.daemon.session.SessionRunner`` and its FedPEAT variant);
where runners differ, they declare a ``SyncPolicy`` instead of overriding steps. For one (session, round,
shard) ``RoundSync.run``:

1. serves this node's local update (content-addressed), binds its hash on chain (``ChainPort.bind``: the
   round's bind window, epoch 0), waits until every expected replica bound or the window closed, then
   announces (round, shard, replica, hash, samples) on the session's topic with its signature over the bound
   update; a node that sits the round out, or missed the bind window, announces nothing and commits a zero
   local hash;
2. collects the expected replicas' announcements until all arrived, the round is final, ``sync_timeout``
   passed, or every replica still missing is known to be gone (``_gone``: a member of it whose connection to
   this node closed ``GONE_GRACE`` seconds ago and has not reopened; a restarting daemon is back well within
   that and is waited for), keeping only updates signed by their author and equal to its binding (a signed
   update other than the bound one is submitted as an equivocation proof: its author is slashed and barred),
   and fetches them by hash (verified);
3. agrees on the set (``_agree_on_set``): announces which updates it holds and keeps only those every replica
   in its set also holds (the intersection), so replicas that saw different sets converge on one aggregate
   instead of splitting the vote (with two replicas a split could never be finalized); screens them
   (``node.train.screen``: undecodable, wrong shapes, NaN/Inf, unchanged, copied, outlying norm are refused and
   each refusal is logged as ``update_refused`` with the replica and reason) and aggregates the rest in replica
   order with the spec's rule (``node.train.aggregate``), weighted by each replica's sample count from the
   deterministic partition (``sample_count``), never by the count a replica announces;
4. commits (aggregate hash, local hash) unless this node already did (no duplicate transaction after a
   restart) or the round is already final;
5. waits until the round is final on chain, calling ``closeRound`` once the epoch's deadline passed without a
   quorum (the chain retries the round in a new epoch, where this node commits its aggregate again, or aborts
   the session after its last epoch: ``SessionAborted``), and returns the final hash with its bytes (ours, or
   fetched by hash from a replica that announced it).

What happens next (adopting and checkpointing the aggregate, optimizer state) is the runner's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from node.daemon.ports import ZERO_HASH, Announcement, ChainPort, Member, NetPort
from node.daemon.state import StateStore
from node.hashing import keccak_hex

PULSE_SECONDS = 3.0
FETCH_TIMEOUT = 30.0
#: how long a replica's member must have been disconnected from this node before the sync stops waiting for the
#: replica: longer than a daemon restarted after a crash takes to reconnect (it reconnects to the session's members
#: before anything else; scripts/bench_kill_restart.py saw restarted daemons up again 12 to 24 s after the kill on
#: a loaded 2-core machine, and with 20 s here the slowest one lost its round), shorter than the sync timeout
#: (45 s by default), which is what a replica that is gone cost before
GONE_GRACE = 30.0


class SessionAborted(Exception):
    """The session failed on chain (a round ran out of epochs): nothing more to do but release the stake."""


@dataclass(frozen=True)
class SyncPolicy:
    """Where runners' syncs differ.

    resync_after_commit: a node that already committed the round (before a restart) still collects the updates
        and announces its set, since other replicas may still be agreeing on theirs;
    commit_after_final: a node whose aggregation finished after the round went final still commits when its
        aggregate is the final one (so the chain shows every replica that computed it).
    """

    resync_after_commit: bool
    commit_after_final: bool


#: the pipeline runner: every replica takes part in every round
PIPELINE_SYNC = SyncPolicy(resync_after_commit=True, commit_after_final=False)


@dataclass
class RoundWork:
    """What a round's local work hands to the sync."""

    local: bytes | None          # this node's local update; None: it sits the round out (zero local hash)
    expected: frozenset[int]     # the replicas whose updates the sync waits for
    samples: int                 # announced with the update (informational: weights come from the partition)
    recorded_samples: int        # the round row's ``samples``
    update_extra: dict = field(default_factory=dict)   # more fields of the update announcement
    info: dict = field(default_factory=dict)           # more fields of the committed and round_final events
    commit_info: dict = field(default_factory=dict)    # more fields of the committed event only


@dataclass
class SyncResult:
    final: str          # the round's final aggregate hash, as on chain
    data: bytes         # its bytes
    agreed: bool        # whether it is the aggregate this node computed


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


@dataclass
class RoundSync:
    """The sync of one node's (session, shard); the runner supplies its clock, events and blob access."""

    session: int
    me: Member
    chain: ChainPort
    net: NetPort
    store: StateStore
    rule: object                                  # a node.train.aggregate.AggregationRule
    policy: SyncPolicy
    sync_timeout: float
    poll: float
    sleep: Callable[[float], None]                # raises the runner's Stopped when the daemon stops
    emit: Callable[..., None]
    fetch_blob: Callable[[str, list[str]], bytes]  # (hash, peers to try first) -> verified bytes
    global_before: Callable[[int], bytes]         # the adapter round r started from
    sample_count: Callable[[int], int]            # a replica's sample count from the partition: its update's weight
    _proven: set = field(default_factory=set)     # (round, replica) whose equivocation this node submitted
    _refused: set = field(default_factory=set)    # (round, replica, hash) refused as not bound (logged once)
    server: object = None                         # a node.train.server.ServerUpdateRule (None: the aggregate as is)

    @property
    def shard(self) -> int:
        return self.me.shard

    def _final(self, rnd: int) -> str | None:
        return self.chain.final_hash(self.session, rnd, self.shard)

    def run(self, rnd: int, work: RoundWork) -> SyncResult:
        pulse = _Pulse(self.net, PULSE_SECONDS)
        h_local = ZERO_HASH
        takeable = work.expected
        updates: dict[int, Announcement] = {}
        blobs: dict[int, bytes] = {}
        if work.local is not None:
            h_local = self.net.serve(work.local)
            self.store.put_blob(work.local)
            sig = self.chain.bind(self.session, rnd, self.shard, h_local)
            if sig is None:  # every peer would refuse an unbound update: sit out, aggregate the others'
                self.emit("bind_missed", round=rnd, local=h_local)
                h_local = ZERO_HASH
            else:
                takeable = self._await_bindings(rnd, work.expected, pulse)
                mine = Announcement(self.session, rnd, self.shard, self.me.replica, h_local, work.samples,
                                    self.me.peer_id, {**work.update_extra, "sig": sig})
                self.net.announce(mine)
                pulse.every(mine)
                updates[self.me.replica], blobs[self.me.replica] = mine, work.local

        h_agg = agg_bytes = None
        if self.policy.resync_after_commit or not self.chain.committed(self.session, rnd, self.shard):
            self._collect_updates(rnd, takeable, updates, pulse)
            for rep in sorted(updates):
                if rep in blobs:
                    continue
                try:
                    blobs[rep] = self._fetch_update(updates[rep])
                except Exception as exc:  # noqa: BLE001 - a replica we cannot fetch from is left out
                    self.emit("update_unavailable", round=rnd, replica=rep, error=str(exc)[:200])
            chosen = {rep: updates[rep].hash for rep in blobs}
            if self.policy.commit_after_final or self._final(rnd) is None:  # else nothing is left to agree on
                chosen, agg_bytes, h_agg = self._agree_on_set(rnd, chosen, blobs, updates, h_local, work, pulse)
                self.store.upsert_round(self.session, self.shard, rnd, aggregate_hash=h_agg, peers_used=len(chosen),
                                        samples=work.recorded_samples)
                final = self._final(rnd)
                if (final is None or (self.policy.commit_after_final and final == h_agg)) and \
                        not self.chain.committed(self.session, rnd, self.shard):
                    self.chain.commit(self.session, rnd, self.shard, h_agg, h_local)
                    self.emit("committed", round=rnd, aggregate=h_agg, local=h_local, **work.info,
                              **work.commit_info, replicas_used=sorted(chosen))
                self.store.upsert_round(self.session, self.shard, rnd, status="committed")

        final = self._await_final(rnd, pulse, h_agg, h_local)
        if final == h_agg:
            return SyncResult(final, agg_bytes, True)
        hints = [a.peer for a in self.net.announcements(self.session, rnd, self.shard, kind="set")
                 if a.extra.get("aggregate") == final]
        return SyncResult(final, self.fetch_blob(final, hints), False)

    def _collect_updates(self, rnd: int, expected: frozenset[int], updates: dict[int, Announcement],
                         pulse: _Pulse) -> None:
        """Add the expected replicas' update announcements to ``updates``: all of them, or those announced
        before the timeout or the round's finality."""
        def collect():
            for a in self.net.announcements(self.session, rnd, self.shard):
                if a.replica in expected and a.kind == "update" and a.replica not in updates and self._bound(rnd, a):
                    updates[a.replica] = a

        deadline = time.monotonic() + self.sync_timeout
        while not expected <= set(updates) and time.monotonic() < deadline and self._final(rnd) is None:
            collect()
            if self._gone(rnd, expected - set(updates)):
                break
            pulse.tick()
            self.sleep(self.poll)
        if self.policy.commit_after_final:
            collect()  # the round may have gone final with every update announced: ours must still match it

    def _await_bindings(self, rnd: int, expected: frozenset[int], pulse: _Pulse) -> frozenset[int]:
        """Reveal nothing before every expected replica bound its update or the bind window closed: a binding
        made after a reveal could depend on the updates revealed. Returns the replicas whose updates this node
        will take: all expected ones, or, when every replica still unbound is known gone (``_gone``), only those
        bound before this node revealed (a gone replica that binds later, a Byzantine one that disconnected to
        hasten the reveal included, is left out; honest replicas that drew the line at different blocks converge
        through the set agreement, which keeps only what all of them hold)."""
        while self._final(rnd) is None:
            if self.chain.bindings_settled(self.session, rnd, self.shard, expected):
                return expected
            unbound = frozenset(r for r in expected
                                if not self.chain.bindings_settled(self.session, rnd, self.shard, frozenset({r})))
            if unbound and self._gone(rnd, set(unbound)):
                return expected - unbound
            pulse.tick()
            self.sleep(self.poll)
        return expected

    def _bound(self, rnd: int, a: Announcement) -> bool:
        """Whether a peer's update announcement carries its author's signature over the update it bound. A
        signed update other than the bound one is proven on chain (its author is slashed and barred) and
        refused, like an unsigned or unbound one."""
        verdict = self.chain.check_update(self.session, rnd, self.shard, a.replica, a.hash, a.extra.get("sig"))
        if verdict == "equivocation" and (rnd, a.replica) not in self._proven:
            self._proven.add((rnd, a.replica))
            proven = self.chain.prove_equivocation(self.session, rnd, self.shard, a.replica, a.hash, a.extra["sig"])
            self.emit("equivocation", round=rnd, replica=a.replica, hash=a.hash, proven_by_us=proven)
        elif verdict == "unbound" and (rnd, a.replica, a.hash) not in self._refused:
            self._refused.add((rnd, a.replica, a.hash))
            self.emit("update_refused", round=rnd, replica=a.replica, hash=a.hash, reason="not bound")
        return verdict == "bound"

    def _agree_on_set(self, rnd: int, chosen: dict[int, str], blobs: dict[int, bytes],
                      updates: dict[int, Announcement], h_local: str, work: RoundWork,
                      pulse: _Pulse) -> tuple[dict[int, str], bytes, str]:
        """(agreed set, aggregate bytes, aggregate hash). Each node announces what it holds and keeps only what
        everyone it holds also holds (the intersection), so replicas that saw different sets converge on the
        same aggregate instead of splitting the vote."""
        for _ in range(len(work.expected) + 1):
            if chosen:
                agg_bytes, h_agg = self._aggregate(rnd, chosen, blobs)
            else:  # nobody took part (or no update reached us): the global adapter stays as it was
                agg_bytes = self.global_before(rnd)
                h_agg = keccak_hex(agg_bytes)
                self.net.serve(agg_bytes)
            msg = Announcement(self.session, rnd, self.shard, self.me.replica, h_local, work.samples, self.me.peer_id,
                               {"kind": "set", "set": {str(k): v for k, v in sorted(chosen.items())},
                                "aggregate": h_agg})
            self.net.announce(msg)
            pulse.every(msg)
            if not chosen:
                break
            deadline = time.monotonic() + self.sync_timeout
            others: dict[int, dict] = {}
            while time.monotonic() < deadline:
                for a in self.net.announcements(self.session, rnd, self.shard, kind="set"):
                    if a.replica in chosen and a.replica != self.me.replica:
                        others[a.replica] = {int(k): v for k, v in a.extra.get("set", {}).items()}
                if all(r in others for r in chosen if r != self.me.replica):
                    break
                if self._gone(rnd, {r for r in chosen if r != self.me.replica and r not in others}):
                    break
                if self._final(rnd) is not None:
                    break
                pulse.tick()
                self.sleep(self.poll)
            narrowed = {r: h for r, h in chosen.items() if all(o.get(r) == h for o in others.values())}
            if narrowed == chosen or not narrowed:
                break
            chosen = narrowed
        return chosen, agg_bytes, h_agg

    def _gone(self, rnd: int, missing: set[int]) -> bool:
        """Whether every replica in ``missing`` is known to be gone: some member of it (any shard: without one
        stage a replica cannot train) left this node ``GONE_GRACE`` seconds ago or more and is not back."""
        if not missing:
            return False
        gone = []
        for rep in sorted(missing):
            left = [self.net.gone_for(m.peer_id) for m in self.chain.members(self.session)
                    if m.replica == rep and m.peer_id and m.address != self.me.address]
            if not any(t is not None and t >= GONE_GRACE for t in left):
                return False
            gone.append(rep)
        self.emit("replicas_gone", round=rnd, replicas=gone, grace=GONE_GRACE)
        return True

    def _await_final(self, rnd: int, pulse: _Pulse, h_agg: str | None, h_local: str) -> str:
        """The round's final hash, once it is final on chain. A round retried in a new epoch gets this node's
        aggregate again; a session aborted on chain raises ``SessionAborted``."""
        tried_epoch = self.chain.epoch(self.session, self.shard)  # this node's commit (if any) went here
        while True:
            final = self._final(rnd)
            if final is not None:
                return final
            if self.chain.session_failed(self.session):
                raise SessionAborted(f"session {self.session} failed on chain in round {rnd}")
            epoch = self.chain.epoch(self.session, self.shard)
            if h_agg is not None and epoch != tried_epoch:
                tried_epoch = epoch
                if not self.chain.committed(self.session, rnd, self.shard):
                    self.chain.commit(self.session, rnd, self.shard, h_agg, h_local)
                    self.emit("recommitted", round=rnd, epoch=epoch, aggregate=h_agg)
            self.chain.try_close_round(self.session, rnd, self.shard)
            pulse.tick()
            self.sleep(self.poll)

    def _aggregate(self, rnd: int, chosen: dict[int, str], blobs: dict[int, bytes]) -> tuple[bytes, str]:
        """The aggregate of the agreed set's updates that pass screening. A pure function of the set (and the
        round's starting adapter), so every replica holding the same set computes the same bytes."""
        from node.train.screen import screened_aggregate

        start = self.global_before(rnd)
        data, refused = screened_aggregate({r: blobs[r] for r in chosen}, start, self.rule, self.sample_count)
        if self.server is not None:
            # the server update reads the finals before this round (their hashes are on chain): a pure function of
            # what every replica holds, after a restart too
            data = self.server.apply(data, [self.global_before(rnd - 1), start] if rnd > 0 else [start])
        for r, why in refused.items():
            self.emit("update_refused", round=rnd, replica=r, hash=chosen[r], reason=why)
        self.net.serve(data)
        return data, keccak_hex(data)

    def _fetch_update(self, a: Announcement) -> bytes:
        data = self.store.get_blob(a.hash)
        if data is not None:
            return data
        for attempt in range(3):
            try:
                data = self.net.fetch(a.peer, a.hash, timeout=FETCH_TIMEOUT)
                break
            except Exception:  # noqa: BLE001 - a reset stream after a peer restart: redial and retry
                if attempt == 2:
                    raise
                self.sleep(1.0)
        self.store.put_blob(data)
        return data
