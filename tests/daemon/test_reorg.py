"""The daemon after a reorg: cached proposals, sessions (spec, assignment, rounds), votes and runners of the undone
blocks are forgotten and re-derived from the chain; and the confirmation depth a node waits by default."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from node.daemon import daemon as D
from node.daemon.config import DEFAULT_CONFIRMATIONS, ChainCfg, NodeConfig
from node.daemon.state import StateStore


@pytest.fixture
def node(tmp_path):
    d = D.Daemon(NodeConfig.model_validate({"identity": {"dev_account": 1}}))
    d.store = StateStore(tmp_path)
    yield d
    d.store.close()


def _ev(name, **args):
    return SimpleNamespace(name=name, args=args)


def test_reorg_forgets_what_the_undone_blocks_told(node):
    d, st = node, node.store
    for pid in (1, 2):
        st.remember("proposal", pid)
        st.record_vote(pid, True, "policy", "0xtx")
    st.remember("session", 5)
    st.upsert_session(5, proposal_id=2, spec_toml="old spec", status="training", shard=0, replica=1)
    st.upsert_round(5, 0, 0, status="final", final_hash="0xaa")
    st.save_checkpoint(5, 0, b"adapter", None, 10)
    st.upsert_session(4, proposal_id=1, spec_toml="kept", status="training")
    d._proposals, d._sessions = {1, 2}, {4, 5}
    d._runners = {4: object(), 5: object()}
    d._on_reorg(100, [_ev("ProposalCreated", proposalId=2), _ev("SessionOpened", sessionId=5, proposalId=2)])
    assert d._proposals == {1} and d._sessions == {4}
    assert st.known("proposal") == [1] and st.known("session") == []
    assert st.session(5) is None and st.rounds(5) == [] and st.checkpoint(5, 0) is None  # nothing to resume from
    assert st.session(4)["spec_toml"] == "kept"
    assert st.vote_of(1) is None          # re-derived: has_voted on the new branch, else voted again
    assert d._runners == {}               # rebuilt with the assignment read again


@pytest.mark.parametrize("configured, chain_id, depth", [(None, 31337, 0), (None, 1, DEFAULT_CONFIRMATIONS),
                                                         (None, 8453, DEFAULT_CONFIRMATIONS), (3, 1, 3), (5, 31337, 5)])
def test_confirmation_depth_is_non_zero_off_the_dev_chain(configured, chain_id, depth):
    assert ChainCfg(confirmations=configured).confirmations_for(chain_id) == depth
    assert DEFAULT_CONFIRMATIONS > 0
