"""One table of session scenarios, run against both implementations of the runner's ``ChainPort``: the in-memory
``FakeChain`` the runner unit tests use, and the daemon's real port (``RealChain`` over the chain clients) on
the real ``TrainingSessions`` contract (eth-tester). The fake cannot drift from the contract unnoticed: a rule the
contract changes (when a round is final, what a late, duplicate or early commit does, when the timeout
round closes) fails here for the fake until the fake follows.

Each scenario is a list of steps on one shard of a fresh session; replicas commit labelled hashes:
``("commit", replica, round, label)``, ``("timeout",)`` (the commit deadline passes),
``("close", replica, round, expected)`` (``try_close_round``'s answer), ``("final", round, label)``
(None: not final), ``("round", n)``, ``("committed", replica, round, bool)``, ``("epoch", n)``, ``("failed", bool)``; bound updates:
``("bind", replica, round, label, signed)``, ``("bindtimeout",)``, ``("settled", round, bool)``,
``("check", checker, round, author, label, signer, verdict)``, ``("prove", prover, round, author, label, bool)``.
The deadline counts from the round's (epoch's) start, the quorum from the shard's replicas.
"""

from __future__ import annotations

import time

import pytest

from node.daemon.ports import Member
from node.hashing import keccak_hex
from tests.daemon.fakes import FakeChain

SCENARIOS = {
    "two of three agreeing make the round final": (3, [
        ("commit", 0, 0, "A"), ("final", 0, None), ("round", 0),
        ("commit", 1, 0, "A"), ("final", 0, "A"), ("round", 1)]),
    "a dissenting first commit does not block the majority": (3, [
        ("commit", 0, 0, "B"), ("commit", 1, 0, "A"), ("final", 0, None),
        ("commit", 2, 0, "A"), ("final", 0, "A"), ("round", 1)]),
    "a late commit for the round just final is recorded, not counted": (3, [
        ("commit", 0, 0, "A"), ("commit", 1, 0, "A"), ("commit", 2, 0, "B"),
        ("final", 0, "A"), ("round", 1), ("committed", 2, 0, True)]),
    "a second commit of the same replica changes nothing": (3, [
        ("commit", 0, 0, "A"), ("commit", 0, 0, "B"), ("committed", 0, 0, True),
        ("commit", 1, 0, "B"), ("final", 0, None), ("committed", 2, 0, False)]),
    "a commit for a round that has not started changes nothing": (3, [
        ("commit", 0, 1, "A"), ("committed", 0, 1, False), ("round", 0)]),
    "with one of four replicas down three are a quorum, no deadline needed": (4, [
        ("commit", 0, 0, "A"), ("commit", 1, 0, "A"), ("final", 0, None), ("close", 2, 0, False),
        ("commit", 2, 0, "A"), ("final", 0, "A"), ("round", 1)]),
    "a lone committer is never final: the round is retried in a new epoch": (3, [
        ("commit", 0, 0, "X"), ("timeout",), ("commit", 1, 0, "A"), ("committed", 1, 0, False),
        ("final", 0, None), ("close", 2, 0, True), ("epoch", 1), ("committed", 0, 0, False),
        ("commit", 1, 0, "A"), ("commit", 2, 0, "A"), ("final", 0, "A"), ("round", 1), ("epoch", 0)]),
    "a split retries, then the session fails after the last epoch": (4, [
        ("commit", 0, 0, "A"), ("commit", 1, 0, "B"), ("timeout",), ("close", 2, 0, True), ("epoch", 1),
        ("timeout",), ("close", 2, 0, True), ("epoch", 2), ("failed", False),
        ("timeout",), ("close", 3, 0, True), ("failed", True), ("final", 0, None)]),
    "nothing closes before the deadline": (3, [
        ("close", 0, 0, False), ("final", 0, None), ("epoch", 0)]),
    # bound, signed updates (issue 11 item 4)
    "updates are revealed once all bound; a second update is never signed; a signed other one is proven": (3, [
        ("bind", 0, 0, "U0", True), ("bind", 1, 0, "U1", True), ("settled", 0, False),
        ("bind", 2, 0, "U2", True), ("settled", 0, True),
        ("bind", 0, 0, "V0", False),
        ("check", 1, 0, 0, "U0", 0, "bound"), ("check", 1, 0, 0, "U0", 2, "unbound"),
        ("check", 1, 0, 0, "V0", 0, "equivocation"),
        ("prove", 1, 0, 0, "V0", True), ("prove", 2, 0, 0, "V0", False)]),
    "the bind window closes: a late update is neither bound nor accepted": (3, [
        ("bind", 0, 0, "U0", True), ("bindtimeout",), ("settled", 0, True), ("bind", 1, 0, "U1", False),
        ("check", 0, 0, 1, "U1", 1, "unbound")]),
}


def _h(label: str) -> str:
    return keccak_hex(label.encode())


class FakeWorld:
    """The fake chain: ``deadline_s`` stands for the contract's commit timeout."""

    DEADLINE = 0.2

    def __init__(self, replicas: int):
        self.members = [Member(f"0x{i:040x}", 0, i, f"peer{i}") for i in range(replicas)]
        self.chain = FakeChain(self.members, rounds=3, replicas=replicas, deadline_s=self.DEADLINE)
        self.ports = [self.chain.view(m) for m in self.members]
        self.session = 1

    def timeout(self):
        time.sleep(self.DEADLINE * 1.5)

    def bind_timeout(self):
        time.sleep(self.DEADLINE * 0.75)  # past the bind window (the first half), not the commit deadline

    def sign(self, signer: int, rnd: int, author: int, h: str) -> str:
        return f"sig:{self.members[signer].address}:{h}"


class RealWorld:
    """A fresh session of the real contracts on eth-tester, one node account (and real port) per replica."""

    def __init__(self, replicas: int):
        from node.chain.clients import NodeRegistryClient, SessionsClient
        from node.chain.sender import TxSender
        from node.daemon.real_ports import RealChain
        from tests.support.evm import (COMMIT_TIMEOUT, DEPOSIT, JOIN_WINDOW, VOTING_DELAY, VOTING_PERIOD, deploy_system,
                                       new_chain, propose_args, register, tester_keys)

        self.chain = c = new_chain()
        sys_ = deploy_system(c)
        nodes, keys = c.accounts[1:replicas + 1], tester_keys(c)[1:replicas + 1]
        for n in nodes:
            register(sys_, n)
        c.mine(1)
        params, spec = propose_args(layerBounds=[0, 6], shardMemoryMB=[1000], minReplicas=replicas, rounds=3)
        c.tx(sys_.governance.functions.propose(params, spec), c.accounts[0], value=DEPOSIT)
        c.mine(VOTING_DELAY + 1)
        for n in nodes:
            c.tx(sys_.governance.functions.castVote(1, True), n)
        c.mine(VOTING_PERIOD + 1)
        c.tx(sys_.governance.functions.execute(1), c.accounts[0])
        self.session = sys_.sessions.functions.sessionOfProposal(1).call()
        for n in nodes:
            c.tx(sys_.sessions.functions.join(self.session), n)
        c.mine(JOIN_WINDOW + 1)
        c.tx(sys_.sessions.functions.start(self.session), nodes[0])
        self.timeout_blocks = COMMIT_TIMEOUT
        registry = NodeRegistryClient(c.w3, sys_.registry.address)
        self.ports = [RealChain(SessionsClient(c.w3, sys_.sessions.address, TxSender(c.w3, k)), registry, n)
                      for n, k in zip(nodes, keys)]

    def timeout(self):
        self.chain.mine(self.timeout_blocks + 1)

    def bind_timeout(self):
        self.chain.mine((self.timeout_blocks + 1) // 2 + 1)

    def sign(self, signer: int, rnd: int, author: int, h: str) -> str:
        from node.chain.updates import update_digest

        author_port, signer_port = self.ports[author], self.ports[signer]
        digest = update_digest(author_port._slot(self.session, rnd, 0), author_port.address, bytes.fromhex(h[2:]))
        return "0x" + signer_port.sessions.sender.sign_digest(digest).hex()


@pytest.mark.parametrize("world", [FakeWorld, pytest.param(RealWorld, marks=pytest.mark.slow)], ids=["fake", "contract"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_chain_port_scenarios(world, name):
    replicas, steps = SCENARIOS[name]
    w = world(replicas)
    sid = w.session
    for i, step in enumerate(steps):
        kind, *args = step
        where = f"{name}: step {i} {step}"
        if kind == "commit":
            r, rnd, label = args
            w.ports[r].commit(sid, rnd, 0, _h(label), _h("local" + label))
        elif kind == "timeout":
            w.timeout()
        elif kind == "close":
            r, rnd, expected = args
            assert w.ports[r].try_close_round(sid, rnd, 0) is expected, where
        elif kind == "epoch":
            assert w.ports[0].epoch(sid, 0) == args[0], where
        elif kind == "failed":
            assert w.ports[0].session_failed(sid) is args[0], where
        elif kind == "final":
            rnd, label = args
            assert w.ports[0].final_hash(sid, rnd, 0) == (None if label is None else _h(label)), where
        elif kind == "round":
            assert w.ports[0].current_round(sid, 0) == args[0], where
        elif kind == "committed":
            r, rnd, expected = args
            assert w.ports[r].committed(sid, rnd, 0) is expected, where
        elif kind == "bind":
            r, rnd, label, signed = args
            assert (w.ports[r].bind(sid, rnd, 0, _h(label)) is not None) is signed, where
        elif kind == "bindtimeout":
            w.bind_timeout()
        elif kind == "settled":
            rnd, expected = args
            assert w.ports[0].bindings_settled(sid, rnd, 0, frozenset(range(replicas))) is expected, where
        elif kind == "check":
            r, rnd, author, label, signer, verdict = args
            sig = w.sign(signer, rnd, author, _h(label))
            assert w.ports[r].check_update(sid, rnd, 0, author, _h(label), sig) == verdict, where
        elif kind == "prove":
            r, rnd, author, label, expected = args
            sig = w.sign(author, rnd, author, _h(label))
            assert w.ports[r].prove_equivocation(sid, rnd, 0, author, _h(label), sig) is expected, where
        else:
            raise AssertionError(f"unknown step {step}")
