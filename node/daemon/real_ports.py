"""The session runner's ports (node.daemon.ports) over the real parts: ``RealChain`` (node.chain clients) and
``RealNet`` (node.p2p's ``P2PNode``; its pipeline transport is node.p2p's ``PipelineTransport``).

These are the only places where the daemon touches chain and p2p objects during a session, so the
runner (node.daemon.session) stays testable with in-memory fakes (tests/daemon/fakes.py: ``FakeChain``,
``FakeNet``); tests/daemon/test_chain_port.py runs one table of scenarios against ``RealChain`` on the real
contract and against ``FakeChain``.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from node.daemon.ports import ZERO_HASH, Announcement, Member
from node.errors import BsnsError

log = logging.getLogger("bsns.daemon")


def _hex(h) -> str | None:
    if h is None:
        return None
    if isinstance(h, (bytes, bytearray)):
        h = "0x" + bytes(h).hex()
    h = h.lower()
    return None if h == ZERO_HASH else h


class RealChain:
    """``ChainPort`` over ``SessionsClient`` + ``NodeRegistryClient`` (+ ``FedPeatLedgerClient`` for FedPEAT
    sessions; None for a deployment without the ledger) for this node's account."""

    def __init__(self, sessions, registry, address: str, fedpeat=None) -> None:
        self.sessions, self.registry, self.address = sessions, registry, address
        self.fedpeat = fedpeat
        self._members: dict[int, list[Member]] = {}
        self._lock = threading.Lock()
        self.tx_count = 0
        self.gas_used = 0
        self._last_finalize_try: dict[tuple, int] = {}
        self._last_finalize_error: dict[tuple, str] = {}
        self._bindings: dict[tuple, str] = {}

    def _count(self, result) -> None:
        self.tx_count += 1
        self.gas_used += int(result.gas_used or 0)

    def current_round(self, session, shard):
        return self.sessions.current_round(session, shard)

    def final_hash(self, session, rnd, shard):
        return _hex(self.sessions.final_hash(session, rnd, shard))

    def _purpose(self, session, rnd, shard) -> str:
        # one commit per epoch: a retried round is committed again under a new purpose
        st = self.sessions.get_shard(session, shard)
        epoch = st.epoch if st.round == rnd else self.sessions.final_epoch(session, rnd, shard)[0]
        return f"commit s{session} r{rnd} k{shard} e{epoch}"

    def committed(self, session, rnd, shard):
        if _hex(self.sessions.commit_of(session, rnd, shard, self.address)) is not None:
            return True
        # a commit signed before a crash and still in flight counts: the sender re-broadcasts it
        purpose = self._purpose(session, rnd, shard)
        return any(t.get("purpose") == purpose and t.get("status") in ("pending", "mined")
                   for t in self.sessions.sender.journal())

    def epoch(self, session, shard):
        return self.sessions.get_shard(session, shard).epoch

    def session_failed(self, session):
        from node.chain.clients import SessionState

        return self.sessions.get_session(session).state == SessionState.FAILED

    def commit(self, session, rnd, shard, aggregate_hash, local_hash):
        from node.chain.errors import ContractRevert, translate

        fn = self.sessions._fn("commit", session, rnd, shard, bytes.fromhex(aggregate_hash[2:]),
                               bytes.fromhex(local_hash[2:]))
        try:
            # the commit that finalizes a round costs more than one that does not, and which one ours
            # is depends on the order the block includes them: give it room for the finalizing path
            est = self.sessions.sender.estimate_gas(fn)
            res = self.sessions.sender.send(fn, purpose=self._purpose(session, rnd, shard),
                                            contract="TrainingSessions", gas=max(2 * est, 250_000))
            self._count(res)
        except ContractRevert as exc:
            # the round closed (finalized without us) or we already committed: nothing to do
            if exc.name in ("AlreadyCommitted", "RoundClosed", "WrongRound", "ShardDone",
                            "CommitDeadlinePassed"):
                log.info("commit skipped: %s", exc)
                return
            raise
        except BsnsError:
            # mined but reverted: a finalization raced our commit into the same block
            if self.current_round(session, shard) > rnd:
                log.info("commit reverted: round %s of shard %s was finalized first", rnd, shard)
                return
            raise
        except Exception as exc:  # the estimate's revert arrives as a raw web3 error
            err = translate(exc, "TrainingSessions")
            if isinstance(err, ContractRevert) and err.name in ("AlreadyCommitted", "RoundClosed", "WrongRound",
                                                                 "ShardDone", "CommitDeadlinePassed"):
                log.info("commit skipped: %s", err)
                return
            if err is exc:
                raise
            raise err from None

    # -- bound, signed local updates ------------------------------------------------------------------
    def _slot(self, session, rnd, shard):
        from node.chain.updates import UpdateSlot

        return UpdateSlot(self.sessions.sender.chain_id, self.sessions.address, session, rnd, shard)

    def _member_at(self, session, shard, replica) -> str | None:
        m = next((m for m in self.members(session) if m.shard == shard and m.replica == replica), None)
        return None if m is None else m.address

    def _binding(self, session, rnd, shard, replica) -> str | None:
        key = (session, rnd, shard, replica)
        if key not in self._bindings:  # a binding never changes once made: cache only those
            b = _hex(self.sessions.binding_of(session, rnd, shard, replica))
            if b is None:
                return None
            self._bindings[key] = b
        return self._bindings[key]

    def bind(self, session, rnd, shard, update_hash):
        from node.chain.errors import ContractRevert
        from node.chain.updates import update_digest

        me = self.sessions.assignment_of(session, self.address)
        digest = update_digest(self._slot(session, rnd, shard), self.address, bytes.fromhex(update_hash[2:]))
        bound = self._binding(session, rnd, shard, me.replica)
        if bound is None:
            st = self.sessions.get_shard(session, shard)
            if st.round != rnd or st.epoch != 0 or \
                    self.sessions.w3.eth.block_number + 1 > self.sessions.bind_deadline(session, shard):
                return None
            try:
                self._count(self.sessions.bind(session, rnd, shard, digest, purpose=f"bind s{session} r{rnd} k{shard}"))
            except ContractRevert as exc:  # the window closed while the transaction waited
                log.info("bind refused: %s", exc)
                return None
            bound = self._binding(session, rnd, shard, me.replica)
        if bound != "0x" + digest.hex():
            return None  # another update of ours is bound (a restart retrained): never sign a second one
        return "0x" + self.sessions.sender.sign_digest(digest).hex()

    def bindings_settled(self, session, rnd, shard, replicas):
        st = self.sessions.get_shard(session, shard)
        if st.round != rnd or st.epoch != 0:
            return True
        if self.sessions.w3.eth.block_number >= self.sessions.bind_deadline(session, shard):
            return True  # a bind sent now lands after the window
        return all(self._binding(session, rnd, shard, r) is not None for r in replicas)

    def check_update(self, session, rnd, shard, replica, update_hash, signature):
        from node.chain.updates import signer_of, update_digest

        author = self._member_at(session, shard, replica)
        if author is None or not signature:
            return "unbound"
        try:
            digest = update_digest(self._slot(session, rnd, shard), author, bytes.fromhex(update_hash[2:]))
            sig = bytes.fromhex(signature[2:] if signature.startswith("0x") else signature)
        except ValueError:
            return "unbound"
        if (signer_of(digest, sig) or "").lower() != author.lower():
            return "unbound"
        bound = self._binding(session, rnd, shard, replica)
        if bound is None:
            return "unbound"
        return "bound" if bound == "0x" + digest.hex() else "equivocation"

    def prove_equivocation(self, session, rnd, shard, replica, update_hash, signature):
        from node.chain.errors import ContractRevert

        author = self._member_at(session, shard, replica)
        sig = bytes.fromhex(signature[2:] if signature.startswith("0x") else signature)
        try:
            self._count(self.sessions.prove_unbound(session, rnd, shard, author, update_hash, sig))
            return True
        except ContractRevert as exc:  # another replica proved it first
            log.info("equivocation proof refused: %s", exc)
            return False

    def try_close_round(self, session, rnd, shard):
        from node.chain.errors import ContractRevert

        head = self.sessions.w3.eth.block_number
        if self._last_finalize_try.get((session, rnd, shard)) == head:
            return False  # at most one try per block
        self._last_finalize_try[(session, rnd, shard)] = head
        st = self.sessions.get_shard(session, shard)
        if st.round != rnd or st.aborted or st.replicas == 0:
            return False
        if head + 1 <= st.round_start + self.sessions.commit_timeout_blocks():
            return False
        try:
            self._count(self.sessions.close_round(session, rnd, shard))
            return True
        except ContractRevert as exc:  # another replica was first
            if self._last_finalize_error.get((session, rnd, shard)) != exc.name:
                log.info("closeRound refused: %s", exc)
                self._last_finalize_error[(session, rnd, shard)] = exc.name
            return False

    def _ledger(self):
        if self.fedpeat is None:
            raise BsnsError("this deployment has no FedPeatLedger: FedPEAT sessions cannot be run on it")
        return self.fedpeat

    def _opened_block(self, session) -> int:
        return self.sessions.get_session(session).opened_block

    def round_plan(self, session, ledger_round):
        plan = self._ledger().round_plan(session, ledger_round, from_block=self._opened_block(session))
        return None if plan is None else list(plan.retention_bps)

    def attached_emulators(self, session):
        out: dict[int, str] = {}
        for e in self._ledger().attached_emulators(session, from_block=self._opened_block(session)):
            out.setdefault(e.retention_bps, e.emulator_hash)  # the first attached for a retention wins
        return out

    def members(self, session):
        with self._lock:
            if session in self._members:
                return self._members[session]
        info = self.sessions.get_session(session)
        out = []
        for shard in range(info.num_shards):
            st = self.sessions.get_shard(session, shard)
            for rep in range(st.joined):
                addr = self.sessions.member_at(session, shard, rep)
                node = self.registry.get_node(addr)
                out.append(Member(addr, shard, rep, node.peer_id, node.announce_addr))
        if info.replicas:  # started: the membership is fixed from now on
            with self._lock:
                self._members[session] = out
        return out


class RealNet:
    """``NetPort`` over ``P2PNode``: pipeline transport, blobs, and announcements on the session topic."""

    def __init__(self, node, members_of) -> None:
        self.node = node
        self.members_of = members_of          # session -> list[Member] (the chain's view)
        self._board: dict[tuple[int, int, int, str], dict[int, Announcement]] = {}
        self._subscribed: set[int] = set()
        self._lock = threading.Lock()
        self._attempts: dict[tuple[int, int], int] = {}

    # -- connections ----------------------------------------------------------------------------
    def ensure_connected(self, members: list[Member]) -> None:
        for m in members:
            if m.peer_id and m.peer_id != self.node.peer_id and m.addr:
                try:
                    self.node.connect(m.peer_id, [m.addr])
                except Exception as exc:  # noqa: BLE001 - a peer that is down now may come back
                    log.info("peer %s at %s unreachable: %s", m.peer_id[:12], m.addr, exc)

    def transport(self, session, rnd, replica, stage_peers, limits=None):
        from node.p2p import PipelineTransport

        key = (session, rnd)
        with self._lock:
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
        if attempt:
            # a retried round resends steps this node already consumed: forget the session's inbox
            # state (messages of the failed attempt are dropped with it)
            self.node.reset_session(session)
        self.ensure_connected(list(stage_peers.values()))
        max_frame, micro = limits or (None, None)
        # declares the round to the node's admission rule: only these peers, only frames this large
        return PipelineTransport(self.node, session, rnd, {s: m.peer_id for s, m in stage_peers.items()},
                                 max_frame=max_frame, micro_batches=micro)

    # -- blobs ----------------------------------------------------------------------------------
    def serve(self, data):
        return self.node.serve_blob(data)

    def pin(self, data):
        return self.node.serve_blob(data, pin=True)

    def end_session(self, session):
        self.node.forget_session(session)
        with self._lock:
            for key in [k for k in self._attempts if k[0] == session]:
                del self._attempts[key]

    def fetch(self, peer, h, timeout):
        members = [m for s in list(self._subscribed) for m in self.members_of(s) if m.peer_id == peer]
        self.ensure_connected(members[:1])
        return self.node.fetch_blob(peer, h, timeout=timeout)

    def bytes_moved(self):
        return self.node.bytes_moved()

    def gone_for(self, peer):
        return self.node.peer_gone_for(peer)

    # -- announcements --------------------------------------------------------------------------
    def join_topic(self, session: int) -> None:
        from node.p2p import session_topic

        with self._lock:
            if session in self._subscribed:
                return
            self._subscribed.add(session)
        self.node.subscribe(session_topic(session), lambda sender, data: self._on_gossip(session, sender, data))

    def _on_gossip(self, session: int, sender: str, data: bytes) -> None:
        try:
            msg = json.loads(data)
            ann = Announcement(int(msg["session"]), int(msg["round"]), int(msg["shard"]), int(msg["replica"]),
                               str(msg["hash"]), int(msg["samples"]), str(msg["peer"]), dict(msg.get("extra", {})))
        except (ValueError, KeyError, TypeError, OverflowError):  # JSON allows Infinity: int() overflows
            log.info("malformed announcement from %s dropped", sender)
            return
        if ann.session != session:
            return
        # the gossip message is signed by the sender's key: it must be the member at (shard, replica)
        owner = next((m for m in self.members_of(session) if m.shard == ann.shard and m.replica == ann.replica), None)
        if owner is None or owner.address.lower() != sender.lower() or owner.peer_id != ann.peer:
            log.info("announcement for shard %s replica %s from %s refused (not that member)",
                     ann.shard, ann.replica, sender)
            return
        self._remember(ann)

    def _remember(self, ann: Announcement) -> None:
        with self._lock:
            self._board.setdefault((ann.session, ann.round, ann.shard, ann.kind), {})[ann.replica] = ann

    def announce(self, ann):
        from node.p2p import session_topic

        self.join_topic(ann.session)
        self._remember(ann)
        msg = json.dumps({"session": ann.session, "round": ann.round, "shard": ann.shard, "replica": ann.replica,
                          "hash": ann.hash, "samples": ann.samples, "peer": ann.peer, "extra": ann.extra,
                          "t": round(time.time(), 3)}, separators=(",", ":")).encode()
        try:
            self.node.publish(session_topic(ann.session), msg)
        except Exception as exc:  # noqa: BLE001 - gossip is best effort; the announcement is repeated
            log.info("announce failed: %s", exc)

    def announcements(self, session, rnd, shard, kind="update"):
        with self._lock:
            return list(self._board.get((session, rnd, shard, kind), {}).values())
