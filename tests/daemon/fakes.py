"""In-memory chain and network for unit tests of the session runners (the e2e tests use the real ones), and
``run_runners``, which runs one runner per member in threads over them.

``FakeChain`` follows TrainingSessions' rules as the daemon's port sees them (tests/daemon/test_chain_port.py runs
one table of scenarios against both): per-shard rounds, a round is final inside the commit that brings
ceil(2/3 x replicas) identical aggregate hashes, a late commit for the round just finalized is recorded within the
deadline but not counted, and ``finalizeAfterTimeout`` after a deadline finalizes with the most committed hash if
it has ceil(2/3) of those who committed. A commit the contract would refuse (twice, or for another round) changes
nothing and is kept in ``refused``: ``run_runners`` fails a test whose runners sent one.
"""

import math
import threading
import time
from collections import defaultdict

from eth_utils import keccak

from node.daemon.session import Stopped
from node.daemon.state import StateStore
from node.train.pipeline import QueueTransport


class FakeChain:
    def __init__(self, members, rounds, replicas, deadline_s=1.0):
        self.lock = threading.Lock()
        self._members = members
        self.rounds, self.replicas, self.deadline_s = rounds, replicas, deadline_s
        self.round = defaultdict(int)                     # shard -> current round
        self.finals = {}                                  # (round, shard) -> hash
        self.commits = defaultdict(dict)                  # (round, shard) -> {address: agg}
        self.first_commit = {}
        self.finalized_at = {}                            # (round, shard) -> time it became final
        self.txs = []                                     # (address, kind, args)
        self.refused = []                                 # (address, round, shard, why): the contract reverts

    def view(self, me):
        return _ChainView(self, me)

    def members(self, session):
        return list(self._members)


class _ChainView:
    def __init__(self, chain, me):
        self.c, self.me = chain, me

    def current_round(self, session, shard):
        return self.c.round[shard]

    def final_hash(self, session, rnd, shard):
        return self.c.finals.get((rnd, shard))

    def committed(self, session, rnd, shard):
        return self.me.address in self.c.commits[(rnd, shard)]

    def commit(self, session, rnd, shard, agg, local):
        with self.c.lock:
            current = self.c.round[shard]
            late = rnd == current - 1 and time.monotonic() - self.c.finalized_at[(rnd, shard)] <= self.c.deadline_s
            why = ("AlreadyCommitted" if self.me.address in self.c.commits[(rnd, shard)] else
                   None if rnd == current or late else "RoundClosed" if rnd < current else "WrongRound")
            if why is not None:
                self.c.refused.append((self.me.address, rnd, shard, why))
                return
            self.c.txs.append((self.me.address, "commit", (rnd, shard, agg)))
            self.c.commits[(rnd, shard)][self.me.address] = agg
            if late:
                return
            self.c.first_commit.setdefault((rnd, shard), time.monotonic())
            need = math.ceil(2 * self.c.replicas / 3)
            if list(self.c.commits[(rnd, shard)].values()).count(agg) >= need:
                self._finalize(rnd, shard, agg)

    def _finalize(self, rnd, shard, h):
        self.c.finals[(rnd, shard)] = h
        self.c.finalized_at[(rnd, shard)] = time.monotonic()
        self.c.round[shard] = rnd + 1

    def try_finalize_after_timeout(self, session, rnd, shard):
        with self.c.lock:
            t0 = self.c.first_commit.get((rnd, shard))
            if (rnd, shard) in self.c.finals or t0 is None or time.monotonic() - t0 < self.c.deadline_s:
                return False
            votes = list(self.c.commits[(rnd, shard)].values())
            best = max(set(votes), key=votes.count)
            if votes.count(best) >= math.ceil(2 * len(votes) / 3):
                self.c.txs.append((self.me.address, "finalizeAfterTimeout", (rnd, shard)))
                self._finalize(rnd, shard, best)
                return True
            return False

    def members(self, session):
        return self.c.members(session)


class FakeNet:
    """Shared blob store, announcement board and pipeline mailboxes; ``down`` peers serve nothing."""

    def __init__(self):
        self.blobs = defaultdict(dict)     # peer -> {hash: bytes}
        self.board = []
        self.hubs = {}
        self.lock = threading.Lock()
        self.down = set()
        self.blocked = set()               # (fetcher, owner): fetches that fail, as after a reset stream
        self.sent = defaultdict(int)

    def port(self, peer):
        return _NetView(self, peer)


class _NetView:
    def __init__(self, net, peer):
        self.n, self.peer = net, peer

    def transport(self, session, rnd, replica, stage_peers, limits=None):
        with self.n.lock:
            hub = self.n.hubs.setdefault((session, rnd, replica), QueueTransport.Hub())
        me = [s for s, m in stage_peers.items() if m.peer_id == self.peer][0]
        return QueueTransport(hub, me)

    def serve(self, data):
        h = "0x" + keccak(data).hex()
        self.n.blobs[self.peer][h] = data
        return h

    def announce(self, ann):
        with self.n.lock:
            self.n.board.append(ann)

    def announcements(self, session, rnd, shard, kind="update"):
        with self.n.lock:
            latest = {}
            for a in self.n.board:
                if (a.session, a.round, a.shard, a.kind) == (session, rnd, shard, kind):
                    latest[a.replica] = a
            return list(latest.values())

    def fetch(self, peer, h, timeout):
        if peer in self.n.down or (self.peer, peer) in self.n.blocked or h not in self.n.blobs[peer]:
            raise OSError(f"{peer} does not serve {h}")
        data = self.n.blobs[peer][h]
        self.n.sent[peer] += len(data)
        return data

    def bytes_moved(self):
        return self.n.sent[self.peer], 0


def run_runners(cls, spec, members, replicas, chain, net, tmp, *, timeout=120, per_member=lambda m: {}, **kwargs):
    """Build a ``cls`` runner (session 1) for each member with its own state under ``tmp/<peer id>``, run them in
    threads until all return and give them back; the first error stops the others and fails the test."""
    stop = threading.Event()
    runners = []
    # models are built one after another: loading patches module globals (meta-device init), which is fine in
    # the daemons (one process each) but not for threads sharing one interpreter
    for m in members:
        r = cls(1, spec, m, replicas, chain.view(m), net.port(m.peer_id), StateStore(tmp / m.peer_id), stop=stop,
                train_limit=200, poll=0.05, **kwargs, **per_member(m))
        r.setup()
        runners.append(r)
    errors = []

    def go(r):
        try:
            r.run()
        except Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=go, args=(r,), daemon=True) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    hung = [r.me.peer_id for r, t in zip(runners, threads) if t.is_alive()]
    stop.set()
    assert not errors, errors
    assert not hung, f"runners {hung} did not finish"
    assert not chain.refused, f"runners sent commits the contract refuses: {chain.refused}"
    return runners
