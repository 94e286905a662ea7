"""Sending transactions for one account: nonces, gas, local signing, receipts, restart safety.

``TxSender`` keeps its own nonce counter (reconciled with ``eth_getTransactionCount(pending)``, so
other senders of the same account are noticed), estimates gas with headroom (a revert surfaces there,
decoded, before anything is sent), signs locally with eth-account and waits for the receipt.
Every signed transaction is written to sqlite (hash, nonce, purpose, raw bytes) *before* it is
broadcast; on start the sender reconciles the pending ones (mined, still in the pool, rebroadcast, or
replaced) so a restarted process never signs a second transaction with a nonce already used.
A journal belongs to one chain, recognised by what that chain holds: the block its first transaction was mined
in, with that block's hash (block 0 is no witness: anvil reloading its state file can give it a new hash). A
chain without that block is another chain (a fresh one with the same id): its journal is never replayed there;
``on_other_chain`` says whether that refuses (``OtherChain``) or sets the journal aside with a warning.
The nonce bookkeeping and the journal are hand-written: web3.py's middleware only fills in a nonce
per call from the node, which is not safe across restarts or concurrent sends.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.chain.errors import ChainError, ContractRevert, RpcUnavailable, is_connection_error, translate

_SCHEMA = """
CREATE TABLE IF NOT EXISTS txs (
    hash TEXT PRIMARY KEY,
    chain_id INTEGER NOT NULL,
    sender TEXT NOT NULL,
    nonce INTEGER NOT NULL,
    purpose TEXT NOT NULL,
    raw BLOB NOT NULL,
    status TEXT NOT NULL,          -- pending | mined | failed | dropped | other-chain
    block INTEGER,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS txs_by_sender ON txs (chain_id, sender, nonce);
CREATE TABLE IF NOT EXISTS anchors (
    chain_id INTEGER PRIMARY KEY,
    block INTEGER NOT NULL,        -- the block this journal's first transaction on the chain was mined in
    hash TEXT NOT NULL             -- its hash: the chain is the journal's while it still holds that block
);
"""

log = logging.getLogger("bsns.chain")


class OtherChain(ChainError):
    """The journal was written on another chain with the same chain id; ``reason`` says what differs."""

    def __init__(self, db_path: str, address: str, chain_id: int, live: int, reason: str):
        self.db_path, self.address, self.chain_id, self.live, self.reason = db_path, address, chain_id, live, reason
        super().__init__(f"{db_path}: the transaction journal of {address} was written on another chain with id "
                         f"{chain_id} ({reason})")


@dataclass(frozen=True)
class TxResult:
    hash: str
    nonce: int
    purpose: str
    receipt: Any = None  # web3 receipt (AttributeDict) once mined

    @property
    def block_number(self) -> int | None:
        return None if self.receipt is None else self.receipt["blockNumber"]

    @property
    def gas_used(self) -> int | None:
        return None if self.receipt is None else self.receipt["gasUsed"]

    @property
    def contract_address(self) -> str | None:
        return None if self.receipt is None else self.receipt.get("contractAddress")


class TxSender:
    """Signs and sends transactions for one private key on one chain.

    ``db_path`` None keeps the journal in memory (tests, one-shot scripts); give a file for
    anything that must survive a restart.
    """

    def __init__(self, w3, private_key: bytes | str, db_path: str | Path | None = None,
                 gas_headroom: float = 1.2, receipt_timeout: float = 120.0, rpc_url: str | None = None,
                 on_other_chain: str = "retire"):
        from eth_account import Account

        self.w3 = w3
        self._account = Account.from_key(private_key)
        self.address: str = self._account.address
        self.gas_headroom = gas_headroom
        self.receipt_timeout = receipt_timeout
        self.rpc_url = rpc_url or _provider_url(w3)
        if on_other_chain not in ("retire", "refuse"):
            raise ValueError(f"on_other_chain: {on_other_chain!r} (retire | refuse)")
        self.on_other_chain = on_other_chain
        self.db_path = str(db_path) if db_path is not None else ":memory:"
        try:
            self.chain_id: int = w3.eth.chain_id
        except Exception as exc:
            raise translate(exc, url=self.rpc_url) from None
        if db_path is not None:
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.db_path, check_same_thread=False)
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self._next_nonce: int | None = None
        # eth-tester has no eth_estimateGas on "pending" (its default already runs on the pending block)
        self._estimate_block = None if type(w3.provider).__name__ == "EthereumTesterProvider" else "pending"
        self.reconcile()

    def __repr__(self) -> str:  # never the key
        return f"TxSender({self.address}, chain {self.chain_id})"

    def sign_digest(self, digest: bytes) -> bytes:
        """This account's EIP-191 signature over a 32-byte digest (a signed update, ``node.chain.updates``);
        the key stays in here."""
        from node.chain.updates import sign_digest

        return sign_digest(self._account.key, digest)

    # -- journal ------------------------------------------------------------------------------------
    def journal(self, status: str | None = None) -> list[dict]:
        """The recorded transactions of this account on this chain, oldest first."""
        q = "SELECT hash, nonce, purpose, status, block FROM txs WHERE chain_id=? AND sender=?"
        params: list = [self.chain_id, self.address]
        if status:
            q += " AND status=?"
            params.append(status)
        rows = self._db.execute(q + " ORDER BY nonce, created", params).fetchall()
        return [dict(zip(("hash", "nonce", "purpose", "status", "block"), r)) for r in rows]

    def _set_status(self, tx_hash: str, status: str, block: int | None = None, rcpt=None) -> None:
        with self._db:
            self._db.execute("UPDATE txs SET status=?, block=? WHERE hash=?", (status, block, tx_hash))
            if rcpt is not None:  # the first receipt on a chain anchors the journal to it
                self._db.execute("INSERT OR IGNORE INTO anchors (chain_id, block, hash) VALUES (?, ?, ?)",
                                 (self.chain_id, rcpt["blockNumber"], _hex(rcpt["blockHash"])))

    def _check_chain(self) -> None:
        """Make sure the chain is the one this journal was written on (see the module docstring)."""
        from web3.exceptions import BlockNotFound, TransactionNotFound

        row = self._db.execute("SELECT block, hash FROM anchors WHERE chain_id=?", (self.chain_id,)).fetchone()
        if row is None:  # a journal from before anchors: its oldest mined transaction must be where it was
            first = self._db.execute(
                "SELECT hash, block FROM txs WHERE chain_id=? AND status IN ('mined','failed') AND block IS NOT NULL "
                "ORDER BY block LIMIT 1", (self.chain_id,)).fetchone()
            if first is None:
                return  # nothing this chain should hold yet
            try:
                rcpt = self.w3.eth.get_transaction_receipt(first[0])
            except TransactionNotFound:
                rcpt = None
            if rcpt is not None and rcpt["blockNumber"] == first[1]:
                with self._db:
                    self._db.execute("INSERT OR IGNORE INTO anchors VALUES (?, ?, ?)",
                                     (self.chain_id, first[1], _hex(rcpt["blockHash"])))
                return
            reason = f"its transaction {first[0][:12]}… of block {first[1]} is not on this one"
        else:
            try:
                got = _hex(self.w3.eth.get_block(row[0])["hash"])
            except BlockNotFound:
                got = None
            if got == row[1]:
                return
            reason = (f"this one has no block {row[0]} yet" if got is None else
                      f"block {row[0]} is {got[:12]}… here, the journal saw {row[1][:12]}…")
        live = self._db.execute("SELECT COUNT(*) FROM txs WHERE chain_id=? AND status!='other-chain'",
                                (self.chain_id,)).fetchone()[0]
        from node.paths import shown

        where = self.db_path if self.db_path == ":memory:" else shown(Path(self.db_path))
        err = OtherChain(where, self.address, self.chain_id, live, reason)
        if self.on_other_chain == "refuse":
            raise err
        # never replayed here: its transactions and nonces belong to the other chain
        with self._db:
            self._db.execute("UPDATE txs SET status='other-chain' WHERE chain_id=? AND status!='other-chain'",
                             (self.chain_id,))
            self._db.execute("DELETE FROM anchors WHERE chain_id=?", (self.chain_id,))
        log.warning("%s; its %d transactions are kept as other-chain and never sent here", err, live)

    def reconcile(self) -> None:
        """Settle journalled pending transactions against the chain and reset the nonce counter."""
        from web3.exceptions import TransactionNotFound

        with self._lock:
            try:
                self._check_chain()
                latest = self.w3.eth.get_transaction_count(self.address, "latest")
                # pending ones, and mined ones a reorg may have orphaned (their nonce is not used on chain)
                pending_rows = self._db.execute(
                    "SELECT hash, nonce, raw FROM txs WHERE chain_id=? AND sender=? AND (status='pending' OR "
                    "(status IN ('mined','failed') AND nonce>=?)) ORDER BY nonce",
                    (self.chain_id, self.address, latest)).fetchall()
                for tx_hash, nonce, raw in pending_rows:
                    try:
                        rcpt = self.w3.eth.get_transaction_receipt(tx_hash)
                    except TransactionNotFound:
                        rcpt = None
                    if rcpt is not None:
                        self._set_status(tx_hash, "mined" if rcpt["status"] == 1 else "failed", rcpt["blockNumber"],
                                         rcpt)
                        continue
                    self._set_status(tx_hash, "pending")
                    if nonce < latest:  # another transaction took this nonce
                        self._set_status(tx_hash, "dropped")
                        continue
                    try:
                        self.w3.eth.get_transaction(tx_hash)
                        continue  # still in the node's pool
                    except TransactionNotFound:
                        pass
                    try:  # signed and journalled but never reached the node (crash, RPC down): send it now
                        self.w3.eth.send_raw_transaction(raw)
                    except Exception as exc:
                        if is_connection_error(exc):
                            raise
                        self._set_status(tx_hash, "dropped")
                        continue
                    try:  # an automining chain has already included it
                        rcpt = self.w3.eth.get_transaction_receipt(tx_hash)
                        self._set_status(tx_hash, "mined" if rcpt["status"] == 1 else "failed", rcpt["blockNumber"],
                                         rcpt)
                    except TransactionNotFound:
                        pass
                chain_pending = self.w3.eth.get_transaction_count(self.address, "pending")
            except OtherChain:
                raise
            except Exception as exc:
                raise translate(exc, url=self.rpc_url) from None
            row = self._db.execute(
                "SELECT MAX(nonce) FROM txs WHERE chain_id=? AND sender=? AND status='pending'",
                (self.chain_id, self.address)).fetchone()
            journal_next = -1 if row[0] is None else row[0] + 1
            self._next_nonce = max(chain_pending, journal_next)

    def _take_nonce(self) -> int:
        if self._next_nonce is None:
            self.reconcile()
        chain_pending = self.w3.eth.get_transaction_count(self.address, "pending")
        # someone else sending from this account moves the chain's count past ours
        nonce = max(self._next_nonce, chain_pending)
        self._next_nonce = nonce + 1
        return nonce

    # -- sending ------------------------------------------------------------------------------------
    def estimate_gas(self, fn, value: int = 0) -> int:
        """Gas ``fn`` would use from this account, against the pending block (where it would run); a revert
        surfaces here as the raw web3 error (``translate`` it)."""
        return int(fn.estimate_gas({"from": self.address, "value": value}, block_identifier=self._estimate_block))

    def send(self, fn, value: int = 0, purpose: str = "", contract: str | None = None, wait: bool = True,
             gas: int | None = None) -> TxResult:
        """Estimate, sign, journal, broadcast and (by default) wait for ``fn``.

        ``fn`` is a bound web3 contract function or constructor (anything with ``estimate_gas`` and
        ``build_transaction``). Reverts raise ``ContractRevert`` (named after ``contract``); a dead
        RPC raises ``RpcUnavailable``; in both cases before the estimate nothing has been sent.
        """
        purpose = purpose or getattr(fn, "fn_name", None) or type(fn).__name__
        with self._lock:
            base = {"from": self.address, "value": value}
            try:
                if gas is None:
                    # against the pending block: that is where the transaction will run (block.number
                    # checks such as a voting window see the right height)
                    gas = int(self.estimate_gas(fn, value) * self.gas_headroom) + 1
                nonce = self._take_nonce()
                tx = fn.build_transaction({**base, "gas": gas, "nonce": nonce, "chainId": self.chain_id})
            except Exception as exc:
                self._next_nonce = None  # re-read from the chain next time
                raise translate(exc, contract, self.rpc_url) from None
            signed = self._account.sign_transaction(tx)
            tx_hash = "0x" + bytes(signed.hash).hex()
            with self._db:  # journal first: a crash after broadcasting still knows this nonce is taken
                self._db.execute("INSERT INTO txs VALUES (?,?,?,?,?,?,?,?,?)",
                                 (tx_hash, self.chain_id, self.address, nonce, purpose,
                                  bytes(signed.raw_transaction), "pending", None, time.time()))
            try:
                self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Exception as exc:
                err = translate(exc, contract, self.rpc_url)
                if isinstance(err, RpcUnavailable):
                    self._next_nonce = None  # the journalled tx is rebroadcast by the next reconcile
                else:
                    self._set_status(tx_hash, "dropped")
                    self._next_nonce = None
                    if err is exc:
                        err = ChainError(f"{purpose}: the node refused the transaction: {_one_line(exc)}")
                raise err from None
        result = TxResult(tx_hash, nonce, purpose)
        return self.wait(result, contract) if wait else result

    def wait(self, result: TxResult, contract: str | None = None, timeout: float | None = None) -> TxResult:
        """Wait for ``result``'s receipt; a failed transaction raises its decoded revert."""
        from web3.exceptions import TimeExhausted

        try:
            rcpt = self.w3.eth.wait_for_transaction_receipt(result.hash, timeout=timeout or self.receipt_timeout,
                                                            poll_latency=0.05)
        except TimeExhausted:
            raise ChainError(f"{result.purpose}: transaction {result.hash} not mined within "
                             f"{timeout or self.receipt_timeout:.0f} s") from None
        except Exception as exc:
            raise translate(exc, contract, self.rpc_url) from None
        ok = rcpt["status"] == 1
        self._set_status(result.hash, "mined" if ok else "failed", rcpt["blockNumber"], rcpt)
        done = TxResult(result.hash, result.nonce, result.purpose, rcpt)
        if not ok:
            raise self._failure(done, contract)
        return done

    def _failure(self, result: TxResult, contract: str | None) -> ChainError:
        """Why a mined transaction failed: replay it as a call at its block to get the revert data."""
        tx = self.w3.eth.get_transaction(result.hash)
        call = {"from": tx["from"], "to": tx["to"], "data": tx["input"], "value": tx["value"], "gas": tx["gas"]}
        try:
            self.w3.eth.call(call, block_identifier=result.receipt["blockNumber"] - 1)
        except Exception as exc:
            err = translate(exc, contract, self.rpc_url)
            if isinstance(err, ContractRevert):
                return err
        return ChainError(f"{result.purpose}: transaction {result.hash} failed (status 0, "
                          f"gas used {result.receipt['gasUsed']} of {tx['gas']})")

    def close(self) -> None:
        self._db.close()


def _provider_url(w3) -> str | None:
    return getattr(w3.provider, "endpoint_uri", None) or type(w3.provider).__name__


def _hex(value) -> str:
    return value.lower() if isinstance(value, str) else "0x" + bytes(value).hex()


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
