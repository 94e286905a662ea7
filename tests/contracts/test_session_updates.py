"""SessionsUpdates (in TrainingSessions): local updates bound before they are revealed, and equivocation proven
by signed updates. Each refusal is attacked: late, repeated, foreign or retried-epoch bindings; forged, foreign
and honest signatures offered as proofs; a copied binding; a proof submitted twice. An equivocator is slashed and
barred, and the round goes on with the honest replicas."""

from __future__ import annotations

import pytest

from node.chain.updates import UpdateSlot, sign_digest, signer_of, update_digest
from tests.contracts.test_sessions import commit, nodes, training  # noqa: F401 - fixtures
from tests.support.evm import COMMIT_TIMEOUT, SLASH, h
from tests.support.evm import tester_keys as funded_keys

FINALIZED = "RoundFinalized"


@pytest.fixture(scope="module")
def keys(chain):
    return dict(zip(chain.accounts, funded_keys(chain)))


def slot(system, sid, rnd=0, shard=0) -> UpdateSlot:
    return UpdateSlot(system.chain.w3.eth.chain_id, system.sessions.address, sid, rnd, shard)


def signed(system, keys, sid, author, update: str, rnd=0, shard=0, signer=None) -> tuple[bytes, bytes]:
    """(update hash, signature by ``signer`` or the author over the author's digest of it)."""
    uh = h(update)
    return uh, sign_digest(keys[signer or author], update_digest(slot(system, sid, rnd, shard), author, uh))


def bind(system, sid, node, update: str, rnd=0, shard=0):
    digest = update_digest(slot(system, sid, rnd, shard), node, h(update))
    return system.chain.tx(system.sessions.functions.bind(sid, rnd, shard, digest), node)


def test_bindings_are_recorded_and_the_digest_matches_the_contracts(system, training):
    c, ses = system.chain, system.sessions
    sid, shards = training
    for i, a in enumerate(shards[0][:3]):
        r = bind(system, sid, a, f"u{i}")
        ev = c.events(ses, "UpdateBound", r)[0]
        assert (ev["node"], ev["round"], ev["shard"]) == (a, 0, 0)
        assert ses.functions.bindingOf(sid, 0, 0, i).call() == ev["binding"]
        assert ses.functions.updateDigest(sid, 0, 0, a, h(f"u{i}")).call() == \
            update_digest(slot(system, sid), a, h(f"u{i}"))
    assert ses.functions.bindingOf(sid, 0, 1, 0).call() == b"\0" * 32
    assert ses.functions.bindDeadline(sid, 0).call() == \
        ses.functions.getShard(sid, 0).call()[5] + (COMMIT_TIMEOUT + 1) // 2


def test_bind_refuses_late_repeated_foreign_and_retried_epoch_bindings(system, training, nodes):
    c, ses = system.chain, system.sessions
    sid, shards = training
    a, b, _ = shards[0][:3]
    bind(system, sid, a, "ua")
    with c.reverts("AlreadyBound", 0, 0, a):  # one binding per round: it cannot be swapped after a reveal
        bind(system, sid, a, "other")
    with c.reverts("InvalidHash"):
        c.tx(ses.functions.bind(sid, 0, 0, b"\0" * 32), b)
    with c.reverts("NotAssigned", sid, 1, b):
        bind(system, sid, b, "ub", shard=1)
    with c.reverts("WrongRound", 0, 0, 1):
        bind(system, sid, b, "ub", rnd=1)
    with c.reverts("SpareReplica", sid, 3, 3):
        bind(system, sid, nodes[6], "spare")
    deadline = ses.functions.bindDeadline(sid, 0).call()
    c.mine(max(0, deadline - c.block))
    with c.reverts("BindWindowClosed", 0, 0):  # after the window the others' updates may be out
        bind(system, sid, b, "ub")
    # a retried epoch takes no binding either: the round's updates were revealed in the epoch before
    c.mine(COMMIT_TIMEOUT)
    c.tx(ses.functions.closeRound(sid, 0, 0), c.accounts[0])
    assert ses.functions.getShard(sid, 0).call()[9] == 1
    with c.reverts("BindWindowClosed", 0, 0):
        bind(system, sid, b, "ub")


def test_an_update_signed_other_than_bound_is_proven_and_the_round_goes_on(system, training, keys):
    c, ses, reg = system.chain, system.sessions, system.registry
    sid, shards = training
    h1, h2, byz = shards[0][:3]
    for a in (h1, h2, byz):
        bind(system, sid, a, "u" + a)
    # byz shows h2 an update other than the one it bound: the signed update is the proof
    other, sig = signed(system, keys, sid, byz, "another")
    assert signer_of(update_digest(slot(system, sid), byz, other), sig) == byz
    stake = reg.functions.eligibility(byz).call()[0]
    reporter = c.accounts[9]  # anyone may submit it
    r = c.tx(ses.functions.proveUnbound(sid, 0, 0, byz, other, sig), reporter)
    ev = c.events(ses, "EquivocationProven", r)[0]
    assert (ev["author"], ev["round"], ev["shard"], ev["slashed"], ev["reporter"]) == (byz, 0, 0, SLASH, reporter)
    assert reg.functions.eligibility(byz).call()[0] == stake - SLASH
    assert ses.functions.isBarred(sid, byz).call() and ses.functions.equivocationProven(sid, 0, 0, byz).call()
    with c.reverts("AlreadyProven", 0, 0, byz):  # one slash per round
        c.tx(ses.functions.proveUnbound(sid, 0, 0, byz, *signed(system, keys, sid, byz, "third")), reporter)
    with c.reverts("NodeBarred", byz):  # it no longer counts
        commit(system, sid, byz, 0, 0, "agg")
    commit(system, sid, h1, 0, 0, "agg")
    r = commit(system, sid, h2, 0, 0, "agg")
    assert c.events(ses, FINALIZED, r)[0]["aggregateHash"] == h("agg")


def test_honest_signatures_and_forgeries_prove_nothing(system, training, keys):
    c, ses = system.chain, system.sessions
    sid, shards = training
    h1, h2, byz = shards[0][:3]
    bind(system, sid, h1, "honest")
    # an honest replica signs only the update it bound: that signature proves nothing
    with c.reverts("NotEquivocation", 0, 0, h1):
        c.tx(ses.functions.proveUnbound(sid, 0, 0, h1, *signed(system, keys, sid, h1, "honest")), byz)
    # byz forges h1's signature over another update with its own key, or sends garbage
    uh, forged = signed(system, keys, sid, h1, "framed", signer=byz)
    with c.reverts("BadSignature", h1):
        c.tx(ses.functions.proveUnbound(sid, 0, 0, h1, uh, forged), byz)
    with c.reverts("BadSignature", h1):
        c.tx(ses.functions.proveUnbound(sid, 0, 0, h1, uh, b"\x01" * 65), byz)
    # a signature made for another slot (round 1) or another deployment does not transfer
    uh, sig1 = signed(system, keys, sid, h1, "honest", rnd=1)
    with c.reverts("BadSignature", h1):
        c.tx(ses.functions.proveUnbound(sid, 0, 0, h1, uh, sig1), byz)
    # h2 has not bound yet: one signed update proves nothing (it may have missed the window)
    with c.reverts("NotEquivocation", 0, 0, h2):
        c.tx(ses.functions.proveUnbound(sid, 0, 0, h2, *signed(system, keys, sid, h2, "x")), byz)
    assert not ses.functions.isBarred(sid, h1).call() and not ses.functions.isBarred(sid, h2).call()


def test_two_signed_updates_of_one_round_are_proven_without_a_binding(system, training, keys):
    c, ses, reg = system.chain, system.sessions, system.registry
    sid, shards = training
    byz = shards[0][2]
    (ha, sa), (hb, sb) = signed(system, keys, sid, byz, "to-h1"), signed(system, keys, sid, byz, "to-h2")
    with c.reverts("NotEquivocation", 0, 0, byz):
        c.tx(ses.functions.proveDoubleSigned(sid, 0, 0, byz, [ha, ha], [sa, sa]), c.accounts[9])
    with c.reverts("BadSignature", byz):
        c.tx(ses.functions.proveDoubleSigned(sid, 0, 0, byz, [ha, hb], [sa, sa]), c.accounts[9])
    stake = reg.functions.eligibility(byz).call()[0]
    c.tx(ses.functions.proveDoubleSigned(sid, 0, 0, byz, [ha, hb], [sa, sb]), c.accounts[9])
    assert reg.functions.eligibility(byz).call()[0] == stake - SLASH and ses.functions.isBarred(sid, byz).call()
    with c.reverts("AlreadyProven", 0, 0, byz):
        c.tx(ses.functions.proveDoubleSigned(sid, 0, 0, byz, [hb, ha], [sb, sa]), c.accounts[9])


def test_a_copied_binding_blocks_nobody_and_opens_for_nobody_but_its_author(system, training, keys):
    """A front-runner that binds an honest replica's binding first neither blocks the honest binding nor can
    ever reveal an update that opens it: the digest names its author."""
    c, ses = system.chain, system.sessions
    sid, shards = training
    h1, _, byz = shards[0][:3]
    honest = update_digest(slot(system, sid), h1, h("honest"))
    c.tx(ses.functions.bind(sid, 0, 0, honest), byz)
    c.tx(ses.functions.bind(sid, 0, 0, honest), h1)
    assert update_digest(slot(system, sid), byz, h("honest")) != honest
