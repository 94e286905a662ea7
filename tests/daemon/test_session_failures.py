"""A session that fails on this node is retried a bounded number of times, then marked failed with its reason, and
never stops the node's other sessions (a batch_size = 10^12 proposal used to be retried twice a second forever)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from node.daemon import daemon as D
from node.daemon.config import NodeConfig
from node.daemon.state import StateStore
from node.errors import BsnsError


@pytest.fixture
def node(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "SESSION_RETRY_S", 0.0)
    cfg = NodeConfig.model_validate({"identity": {"dev_account": 1}})
    d = D.Daemon(cfg)
    d.store = StateStore(tmp_path)
    d._proposals, d._sessions = set(), {1, 2}
    for sid in (1, 2):
        d.store.upsert_session(sid, proposal_id=sid, spec_toml="", status="training")
    handled = []

    def handle(sid):
        handled.append(sid)
        if sid == 1:
            raise RuntimeError("cannot allocate a batch of 1000000000000 examples\nsecond line")

    d._handle_session = handle
    d.ended = []
    d.net = SimpleNamespace(end_session=d.ended.append)
    yield d, handled
    d.store.close()


def test_failing_session_is_marked_failed_after_bounded_retries_and_others_go_on(node):
    d, handled = node
    for _ in range(6):
        d.tick()
    assert handled.count(1) == D.SESSION_ATTEMPTS     # tried 3 times, then never again
    assert handled.count(2) == 6                      # handled on every tick meanwhile
    row = d.store.session(1)
    assert row["status"] == "failed"
    assert row["reason"] == "RuntimeError: cannot allocate a batch of 1000000000000 examples"
    assert 1 not in d._sessions
    assert d.ended == [1]                             # its pipeline messages are refused from now on


def test_retries_back_off(node, monkeypatch):
    d, handled = node
    monkeypatch.setattr(D, "SESSION_RETRY_S", 60.0)
    for _ in range(5):
        d.tick()
    assert handled.count(1) == 1 and handled.count(2) == 5   # the next try waits a minute: no busy loop
    assert d.store.session(1)["status"] == "training"


def test_chain_outage_is_not_the_sessions_fault(node):
    from node.chain.errors import RpcUnavailable

    d, handled = node

    def down(sid):
        raise RpcUnavailable("connection refused")

    d._handle_session = down
    for _ in range(5):
        with pytest.raises(RpcUnavailable):
            d.tick()
    assert d.store.session(1)["status"] == "training" and not d._failures


def test_a_bsns_error_reason_is_its_message(node):
    d, _ = node

    def bad(sid):
        if sid == 1:
            raise BsnsError("data.path: /etc/passwd is outside the data folders")

    d._handle_session = bad
    for _ in range(3):
        d.tick()
    assert d.store.session(1)["reason"] == "data.path: /etc/passwd is outside the data folders"
