"""In-memory chain and network for unit tests of the session runners (the e2e tests use the real ones), and
``run_runners``, which runs one runner per member in threads over them.

``FakeChain`` follows TrainingSessions' rules as the daemon's port sees them (tests/daemon/test_chain_port.py runs
one table of scenarios against both): per-shard rounds in epochs, a round is final inside the commit that brings
ceil(2/3 x replicas) identical aggregate hashes, each epoch takes commits until a deadline counted from its start,
a late commit for a finalized round is recorded until that round's deadline but not counted, and ``closeRound``
after a deadline without a quorum retries the round in a new epoch or, after the last one, fails the session.
Local updates are bound in the first half of a round's epoch 0 and checked against their "signatures" (the
author's address and the hash: the contract's ecrecover is tested in tests/contracts/test_session_updates.py). A commit the contract would refuse (twice, or for another round) changes
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


MAX_EPOCHS = 3  # TrainingSessions.MAX_EPOCHS


class FakeChain:
    def __init__(self, members, rounds, replicas, deadline_s=30.0):
        self.lock = threading.Lock()
        self._members = members
        self.rounds, self.replicas, self.deadline_s = rounds, replicas, deadline_s
        self.round = defaultdict(int)                     # shard -> current round
        self.epoch = defaultdict(int)                     # shard -> epoch of the current round
        self.started = time.monotonic()
        self.round_start = defaultdict(lambda: self.started)  # shard -> start of the current epoch
        self.finals = {}                                  # (round, shard) -> hash
        self.final_epoch = {}                             # (round, shard) -> (epoch, deadline)
        self.commits = defaultdict(dict)                  # (round, shard) -> {address: agg} of the counting epoch
        self.closed_epochs = {}                           # (round, shard, epoch) -> its commits, once retried
        self.failed = False
        self.txs = []                                     # (address, kind, args)
        self.refused = []                                 # (address, round, shard, why): the contract reverts
        self.bindings = {}                                # (round, shard, replica) -> bound local update hash
        self.proven = set()                               # (round, shard, replica): equivocation proven

    def start_clock(self):
        """Round 0's deadline counts from here (the contract's start(); runners load their models before)."""
        self.started = time.monotonic()
        self.round_start.clear()

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

    def epoch(self, session, shard):
        return self.c.epoch[shard]

    def session_failed(self, session):
        return self.c.failed

    def commit(self, session, rnd, shard, agg, local):
        with self.c.lock:
            now, current, epoch = time.monotonic(), self.c.round[shard], self.c.epoch[shard]
            if self.c.failed:
                why = "WrongSessionState"
            elif rnd > current:
                why = "WrongRound"
            elif rnd < current:
                why = "RoundClosed" if now > self.c.final_epoch[(rnd, shard)][1] else None
            else:
                why = "CommitDeadlinePassed" if now > self.c.round_start[shard] + self.c.deadline_s else None
            if why is None and self.me.address in self.c.commits[(rnd, shard)]:
                why = "AlreadyCommitted"
            if why is not None:
                self.c.refused.append((self.me.address, rnd, shard, why))
                return
            self.c.txs.append((self.me.address, "commit", (rnd, shard, agg)))
            self.c.commits[(rnd, shard)][self.me.address] = agg
            if rnd < current:
                return  # a late commit: recorded, not counted
            need = math.ceil(2 * self.c.replicas / 3)  # of the shard's replicas, not of the commits
            if list(self.c.commits[(rnd, shard)].values()).count(agg) >= need:
                self.c.finals[(rnd, shard)] = agg
                self.c.final_epoch[(rnd, shard)] = (epoch, self.c.round_start[shard] + self.c.deadline_s)
                self.c.round[shard] = rnd + 1
                self.c.epoch[shard] = 0
                self.c.round_start[shard] = now

    def try_close_round(self, session, rnd, shard):
        with self.c.lock:
            if self.c.failed or rnd != self.c.round[shard] or \
                    time.monotonic() <= self.c.round_start[shard] + self.c.deadline_s:
                return False
            self.c.txs.append((self.me.address, "closeRound", (rnd, shard)))
            if self.c.epoch[shard] + 1 >= MAX_EPOCHS:
                self.c.failed = True
            else:
                self.c.closed_epochs[(rnd, shard, self.c.epoch[shard])] = self.c.commits.pop((rnd, shard), {})
                self.c.epoch[shard] += 1
                self.c.round_start[shard] = time.monotonic()
            return True

    def members(self, session):
        return self.c.members(session)

    # bound, signed updates: a "signature" is the author's address over the hash (the contract checks real ones)
    def _bind_open(self, rnd, shard):
        return rnd == self.c.round[shard] and self.c.epoch[shard] == 0 and \
            time.monotonic() <= self.c.round_start[shard] + self.c.deadline_s / 2

    def bind(self, session, rnd, shard, update_hash):
        with self.c.lock:
            key = (rnd, shard, self.me.replica)
            if key not in self.c.bindings:
                if not self._bind_open(rnd, shard):
                    return None
                self.c.txs.append((self.me.address, "bind", (rnd, shard, update_hash)))
                self.c.bindings[key] = update_hash
            return f"sig:{self.me.address}:{update_hash}" if self.c.bindings[key] == update_hash else None

    def bindings_settled(self, session, rnd, shard, replicas):
        with self.c.lock:
            return not self._bind_open(rnd, shard) or all((rnd, shard, r) in self.c.bindings for r in replicas)

    def check_update(self, session, rnd, shard, replica, update_hash, signature):
        author = next((m.address for m in self.c._members if m.shard == shard and m.replica == replica), None)
        bound = self.c.bindings.get((rnd, shard, replica))
        if author is None or signature != f"sig:{author}:{update_hash}" or bound is None:
            return "unbound"
        return "bound" if bound == update_hash else "equivocation"

    def prove_equivocation(self, session, rnd, shard, replica, update_hash, signature):
        with self.c.lock:
            if self.check_update(session, rnd, shard, replica, update_hash, signature) != "equivocation" or \
                    (rnd, shard, replica) in self.c.proven:
                return False
            self.c.txs.append((self.me.address, "proveUnbound", (rnd, shard, replica)))
            self.c.proven.add((rnd, shard, replica))
            return True


class FakeNet:
    """Shared blob store, announcement board and pipeline mailboxes; ``down`` peers serve nothing."""

    def __init__(self):
        self.blobs = defaultdict(dict)     # peer -> {hash: bytes}
        self.pinned = defaultdict(set)     # peer -> hashes kept in memory while it runs
        self.ended = defaultdict(list)     # peer -> sessions it ended
        self.board = []
        self.hubs = {}
        self.lock = threading.Lock()
        self.down = set()
        self.blocked = set()               # (fetcher, owner): fetches that fail, as after a reset stream
        self.sent = defaultdict(int)
        self.left = {}                     # peer -> monotonic time its connections closed (it is gone)

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

    def pin(self, data):
        h = self.serve(data)
        self.n.pinned[self.peer].add(h)
        return h

    def end_session(self, session):
        self.n.ended[self.peer].append(session)

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

    def gone_for(self, peer):
        since = self.n.left.get(peer)
        return None if since is None else time.monotonic() - since


def run_runners(cls, spec, members, replicas, chain, net, tmp, *, timeout=120, per_member=lambda m: {}, expect=None,
                **kwargs):
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
    errors, expected = [], []

    def go(r):
        try:
            r.run()
        except Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            if expect is not None and isinstance(exc, expect):
                expected.append(exc)
                return
            errors.append(exc)
            stop.set()

    if hasattr(chain, "start_clock"):
        chain.start_clock()
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
    return expected if expect is not None else runners
