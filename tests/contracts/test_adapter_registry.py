"""AdapterRegistry: publish checked against a completed session's final hashes, lineage, lookups."""

from __future__ import annotations

import pytest

from tests.support.evm import as_tuple, h, job_params, plain, register
from .test_sessions import commit, join_all, open_session, start

ZERO = b"\x00" * 32


def record(**overrides) -> dict:
    p = job_params()
    r = dict(manifestHash=h("manifest"), baseModel=p["baseModel"], baseModelHash=p["baseModelHash"],
             method=p["method"], task=p["task"], shardHashes=[h("s0"), h("s1")], sessionId=0, parentId=0,
             accuracyBps=8750, metricsURI='{"loss": 0.31}')
    r.update(overrides)
    return r


def publish(system, sender, **overrides):
    c = system.chain
    r = c.tx(system.adapters.functions.publish(as_tuple(record(**overrides))), sender)
    return c.events(system.adapters, "AdapterPublished", r)[0]["adapterId"], r


@pytest.fixture(scope="module")
def completed(chain, system):
    """A completed 2-shard, 1-round session whose final hashes are h('final0'), h('final1')."""
    nodes = chain.accounts[1:5]
    for a in nodes:
        register(system, a)
    sid = open_session(system, nodes, rounds=1, minReplicas=2)
    join_all(system, sid, nodes)
    start(system, sid)
    for a in nodes:
        _, shard, *_ = system.sessions.functions.assignmentOf(sid, a).call()
        commit(system, sid, a, 0, shard, f"final{shard}")
    assert system.sessions.functions.getSession(sid).call()[9] == 3
    return sid, nodes


def test_publish_without_session_and_lookups(system, snap):
    c, ad = snap, system.adapters
    pub = c.accounts[8]
    aid, r = publish(system, pub)
    assert aid == 1 and ad.functions.adapterCount().call() == 1
    ev = c.events(ad, "AdapterPublished", r)[0]
    assert (ev["publisher"], ev["manifestHash"], ev["task"], ev["sessionId"]) == (pub, h("manifest"), "sequence-classification", 0)
    rec, publisher, block = ad.functions.getAdapter(aid).call()
    assert plain(rec) == plain(list(record().values())) and publisher == pub and block == r.blockNumber
    child, _ = publish(system, pub, parentId=aid, manifestHash=h("child"))
    other, _ = publish(system, pub, task="causal-lm")
    key = (record()["baseModelHash"], "sequence-classification")
    # records no session vouches for live apart: anyone could publish them, so they never answer latestFor
    assert plain(ad.functions.unverifiedFor(*key).call()) == [aid, child]
    assert plain(ad.functions.adaptersFor(*key).call()) == []
    assert ad.functions.latestFor(*key).call() == 0
    assert plain(ad.functions.unverifiedFor(record()["baseModelHash"], "causal-lm").call()) == [other]
    assert ad.functions.latestFor(h("another model"), "causal-lm").call() == 0
    assert plain(ad.functions.adaptersFor(h("another model"), "x").call()) == []
    with c.reverts("NotFromSession", aid):  # and carry no member attestations
        c.tx(ad.functions.attest(aid, 9000, ""), pub)
    assert ad.functions.attestationCount(aid).call() == 0
    with c.reverts("UnknownAdapter", 9):
        ad.functions.getAdapter(9).call()
    with c.reverts("UnknownAdapter", 0):
        ad.functions.getAdapter(0).call()


BAD = [
    ("manifestHash", {"manifestHash": ZERO}),
    ("baseModel", {"baseModel": ""}),
    ("baseModelHash", {"baseModelHash": ZERO}),
    ("method", {"method": ""}),
    ("task", {"task": "t" * 257}),
    ("shardHashes", {"shardHashes": []}),
    ("shardHashes", {"shardHashes": [h("a")] * 65}),
    ("shardHashes", {"shardHashes": [h("a"), ZERO]}),
    ("accuracyBps", {"accuracyBps": 10_001}),
    ("metricsURI", {"metricsURI": "u" * 1025}),
]


def test_publish_refuses_bad_records(system, snap):
    c, ad = snap, system.adapters
    for field, bad in BAD:
        with c.reverts("InvalidRecord", field):
            ad.functions.publish(as_tuple(record(**bad))).call({"from": c.accounts[8]})
    with c.reverts("UnknownAdapter", 5):
        ad.functions.publish(as_tuple(record(parentId=5))).call({"from": c.accounts[8]})
    aid, _ = publish(system, c.accounts[8])
    with c.reverts("ParentMismatch", aid):  # a parent must be of the same base model
        ad.functions.publish(as_tuple(record(parentId=aid, baseModelHash=h("other")))).call({"from": c.accounts[8]})


def test_publish_from_session_is_checked_against_final_hashes(system, completed, snap):
    c, ad = snap, system.adapters
    sid, nodes = completed
    member, outsider = nodes[0], c.accounts[8]
    good = dict(sessionId=sid, shardHashes=[h("final0"), h("final1")])
    with c.reverts("ShardHashMismatch", 1, h("final1"), h("s1")):
        ad.functions.publish(as_tuple(record(sessionId=sid, shardHashes=[h("final0"), h("s1")]))).call({"from": member})
    with c.reverts("ShardCountMismatch", 2, 1):
        ad.functions.publish(as_tuple(record(sessionId=sid, shardHashes=[h("final0")]))).call({"from": member})
    with c.reverts("NotSessionMember", sid, outsider):
        ad.functions.publish(as_tuple(record(**good))).call({"from": outsider})
    with c.reverts("SessionMismatch", "baseModelHash"):
        ad.functions.publish(as_tuple(record(baseModelHash=h("x"), **good))).call({"from": member})
    with c.reverts("SessionMismatch", "method"):
        ad.functions.publish(as_tuple(record(method="ia3", **good))).call({"from": member})
    with c.reverts("SessionMismatch", "task"):
        ad.functions.publish(as_tuple(record(task="causal-lm", **good))).call({"from": member})
    with c.reverts("SessionNotCompleted", 99):
        ad.functions.publish(as_tuple(record(sessionId=99, shardHashes=good["shardHashes"]))).call({"from": member})
    squat, _ = publish(system, outsider, manifestHash=h("squat"))  # session 0: cannot take the lookups over
    aid, r = publish(system, member, accuracyBps=9000, **good)
    assert ad.functions.adapterOfSession(sid).call() == aid
    assert c.events(ad, "AdapterPublished", r)[0]["sessionId"] == sid
    key = (record()["baseModelHash"], "sequence-classification")
    assert ad.functions.latestFor(*key).call() == aid and plain(ad.functions.adaptersFor(*key).call()) == [aid]
    assert plain(ad.functions.unverifiedFor(*key).call()) == [squat]
    with c.reverts("AlreadyPublished", sid, aid):
        ad.functions.publish(as_tuple(record(**good))).call({"from": nodes[1]})
    # metrics are attestations by named members: the publisher's is one, others add theirs
    ev = c.events(ad, "MetricsAttested", r)[0]
    assert (ev["attester"], ev["accuracyBps"]) == (member, 9000)
    r = c.tx(ad.functions.attest(aid, 8700, "ipfs://m"), nodes[1])
    assert c.events(ad, "MetricsAttested", r)[0]["metricsURI"] == "ipfs://m"
    assert plain(ad.functions.attestationOf(aid, nodes[1]).call()) == [True, 8700]
    assert plain(ad.functions.attestationOf(aid, nodes[2]).call()) == [False, 0]
    assert ad.functions.attestationCount(aid).call() == 2
    with c.reverts("AlreadyAttested", aid, nodes[1]):
        c.tx(ad.functions.attest(aid, 1, ""), nodes[1])
    with c.reverts("NotSessionMember", sid, outsider):
        c.tx(ad.functions.attest(aid, 1, ""), outsider)
    with c.reverts("InvalidRecord", "accuracyBps"):
        c.tx(ad.functions.attest(aid, 10_001, ""), nodes[2])
    with c.reverts("UnknownAdapter", 99):
        c.tx(ad.functions.attest(99, 1, ""), nodes[2])


def test_session_not_completed_is_refused(system, completed, snap):
    c = snap
    sid, nodes = completed
    sid2 = open_session(system, nodes, rounds=1, minReplicas=1)
    with c.reverts("SessionNotCompleted", sid2):
        system.adapters.functions.publish(as_tuple(record(sessionId=sid2))).call({"from": nodes[0]})
