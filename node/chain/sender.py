"""Sending transactions for one account: nonces, gas, local signing, receipts, restart safety.

``TxSender`` keeps its own nonce counter (reconciled with ``eth_getTransactionCount(pending)``, so
other senders of the same account are noticed), estimates gas with headroom (a revert surfaces there,
decoded, before anything is sent), signs locally with eth-account and waits for the receipt.
Every signed transaction is written to sqlite (hash, nonce, purpose, raw bytes) *before* it is
broadcast; on start the sender reconciles the pending ones (mined, still in the pool, rebroadcast, or
replaced) so a restarted process never signs a second transaction with a nonce already used.
The nonce bookkeeping and the journal are hand-written: web3.py's middleware only fills in a nonce
per call from the node, which is not safe across restarts or concurrent sends.
"""

from __future__ import annotations

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
CREATE TABLE IF NOT EXISTS chains (
    chain_id INTEGER PRIMARY KEY,
    genesis TEXT NOT NULL          -- block 0's hash: a fresh chain with the same id is another chain
);
"""


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
                 gas_headroom: float = 1.2, receipt_timeout: float = 120.0, rpc_url: str | None = None):
        from eth_account import Account

        self.w3 = w3
        self._account = Account.from_key(private_key)
        self.address: str = self._account.address
        self.gas_headroom = gas_headroom
        self.receipt_timeout = receipt_timeout
        self.rpc_url = rpc_url or _provider_url(w3)
        try:
            self.chain_id: int = w3.eth.chain_id
        except Exception as exc:
            raise translate(exc, url=self.rpc_url) from None
        if db_path is not None:
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(db_path) if db_path is not None else ":memory:", check_same_thread=False)
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self._next_nonce: int | None = None
        # eth-tester has no eth_estimateGas on "pending" (its default already runs on the pending block)
        self._estimate_block = None if type(w3.provider).__name__ == "EthereumTesterProvider" else "pending"
        self.reconcile()

    def __repr__(self) -> str:  # never the key
        return f"TxSender({self.address}, chain {self.chain_id})"

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

    def _set_status(self, tx_hash: str, status: str, block: int | None = None) -> None:
        with self._db:
            self._db.execute("UPDATE txs SET status=?, block=? WHERE hash=?", (status, block, tx_hash))

    def _forget_other_chain(self) -> None:
        """Retire the journal of an earlier chain that had this chain id (a restarted local test chain):
        its transactions must never be rebroadcast here, and its nonces say nothing about this chain."""
        genesis = self.w3.eth.get_block(0)["hash"].hex()
        row = self._db.execute("SELECT genesis FROM chains WHERE chain_id=?", (self.chain_id,)).fetchone()
        if row is not None and row[0] == genesis:
            return
        with self._db:
            if row is not None:
                self._db.execute("UPDATE txs SET status='other-chain' WHERE chain_id=? AND status!='other-chain'",
                                 (self.chain_id,))
            self._db.execute("INSERT OR REPLACE INTO chains (chain_id, genesis) VALUES (?, ?)", (self.chain_id, genesis))

    def reconcile(self) -> None:
        """Settle journalled pending transactions against the chain and reset the nonce counter."""
        from web3.exceptions import TransactionNotFound

        with self._lock:
            try:
                self._forget_other_chain()
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
                        self._set_status(tx_hash, "mined" if rcpt["status"] == 1 else "failed", rcpt["blockNumber"])
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
                        self._set_status(tx_hash, "mined" if rcpt["status"] == 1 else "failed", rcpt["blockNumber"])
                    except TransactionNotFound:
                        pass
                chain_pending = self.w3.eth.get_transaction_count(self.address, "pending")
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
        self._set_status(result.hash, "mined" if ok else "failed", rcpt["blockNumber"])
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


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
