"""A transaction journal recognises its chain by a block it saw its own transaction mined in, not block 0."""

from __future__ import annotations

import pytest

from tests.support.evm import deploy_probe as _probe
from tests.support import evm

TAG = b"\x01" * 32


def _chain():
    c = evm.new_chain()
    return c.w3, evm.tester_keys(c)


def test_same_chain_with_a_new_genesis_hash_keeps_the_journal(tmp_path, probe_artifact, monkeypatch):
    """anvil reloading its state file can give block 0 a new hash: that is still the same chain."""
    from node.chain.sender import TxSender

    w3, keys = _chain()
    db = tmp_path / "txs.sqlite"
    s1 = TxSender(w3, keys[0], db_path=db, on_other_chain="refuse")
    probe = _probe(w3, s1, probe_artifact)
    s1.send(probe.functions.ping(1, TAG))
    s1.close()
    real = w3.eth.get_block

    def new_genesis(ident, *a, **kw):
        block = real(ident, *a, **kw)
        return {**block, "hash": b"\x42" * 32} if ident == 0 else block

    monkeypatch.setattr(w3.eth, "get_block", new_genesis)
    s2 = TxSender(w3, keys[0], db_path=db, on_other_chain="refuse")
    assert [j["status"] for j in s2.journal()] == ["mined", "mined"]
    assert s2.send(probe.functions.ping(2, TAG)).nonce == 2


def test_another_chain_with_the_same_id_is_refused_in_one_line(tmp_path, probe_artifact):
    from node.chain.sender import OtherChain, TxSender

    w3, keys = _chain()
    db = tmp_path / "txs.sqlite"
    s1 = TxSender(w3, keys[0], db_path=db)
    _probe(w3, s1, probe_artifact)
    s1.close()
    fresh, _ = _chain()
    with pytest.raises(OtherChain) as err:
        TxSender(fresh, keys[0], db_path=db, on_other_chain="refuse")
    assert "\n" not in str(err.value) and "was written on another chain with id" in str(err.value)
    assert err.value.live == 1
    assert fresh.eth.get_transaction_count(TxSender(fresh, keys[0]).address) == 0  # nothing replayed


def test_retiring_is_never_silent(tmp_path, probe_artifact, caplog):
    from node.chain.sender import TxSender

    w3, keys = _chain()
    db = tmp_path / "txs.sqlite"
    s1 = TxSender(w3, keys[0], db_path=db)
    _probe(w3, s1, probe_artifact)
    s1.close()
    fresh, _ = _chain()
    with caplog.at_level("WARNING", logger="bsns.chain"):
        s2 = TxSender(fresh, keys[0], db_path=db)
    assert [j["status"] for j in s2.journal()] == ["other-chain"]
    assert any("kept as other-chain and never sent here" in r.getMessage() for r in caplog.records)


def test_a_journal_from_before_anchors_is_checked_by_its_oldest_transaction(tmp_path, probe_artifact):
    import sqlite3

    from node.chain.sender import OtherChain, TxSender

    w3, keys = _chain()
    db = tmp_path / "txs.sqlite"
    s1 = TxSender(w3, keys[0], db_path=db)
    _probe(w3, s1, probe_artifact)
    s1.close()
    con = sqlite3.connect(db)
    con.execute("DELETE FROM anchors")
    con.commit()
    con.close()
    assert [j["status"] for j in TxSender(w3, keys[0], db_path=db, on_other_chain="refuse").journal()] == ["mined"]
    con = sqlite3.connect(db)
    con.execute("DELETE FROM anchors")
    con.commit()
    con.close()
    with pytest.raises(OtherChain, match="is not on this one"):
        TxSender(_chain()[0], keys[0], db_path=db, on_other_chain="refuse")
