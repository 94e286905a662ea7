"""Watching contract events: bounded log polling, a sqlite checkpoint, reorg rewind, exactly-once delivery.

``EventWatcher`` polls ``eth_getLogs`` in ranges of at most ``max_range`` blocks up to
``head - confirmations``. After each block with events it commits, in one sqlite transaction, the
record of those events (keyed by (tx hash, log index), which de-duplicates) together with the new
checkpoint (block number + hash); handlers may write their own tables through ``watcher.db`` inside
that same transaction, so what they did and how far the watcher got can never disagree. A handler
that raises rolls the block back; it is delivered again on the next poll.

Every range read is checked whole (``_consistent``): its first block must be the checkpoint's child, and every log
must lie in the range and carry the canonical hash of its block, so an answer that mixes branches (a reorg between
calls, a lagging RPC backend) delivers nothing and is read again.

Before each poll the stored checkpoint hash is compared with the chain's block at that height; on a
mismatch the watcher walks its stored block hashes back to the fork point, deletes the records of the
orphaned blocks (telling ``on_reorg`` handlers which events were undone), and replays from there.
A WebSocket ``newHeads`` subscription (anvil serves ws on its HTTP port) only wakes the loop early;
the logs always come from the checkpoint-based backfill, so a missed notification loses nothing.
This log poller is hand-written after Chainlink's LogPoller: web3.py's filters keep no checkpoint and
know nothing of reorgs.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from node.chain.errors import translate

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS watcher_checkpoint (
    watcher TEXT PRIMARY KEY, number INTEGER NOT NULL, hash TEXT
);
CREATE TABLE IF NOT EXISTS watcher_blocks (
    watcher TEXT NOT NULL, number INTEGER NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (watcher, number)
);
CREATE TABLE IF NOT EXISTS watcher_events (
    watcher TEXT NOT NULL, tx_hash TEXT NOT NULL, log_index INTEGER NOT NULL,
    block_number INTEGER NOT NULL, block_hash TEXT NOT NULL,
    contract TEXT NOT NULL, name TEXT NOT NULL, args TEXT NOT NULL,
    PRIMARY KEY (watcher, tx_hash, log_index)
);
CREATE INDEX IF NOT EXISTS watcher_events_by_block ON watcher_events (watcher, block_number);
"""

KEEP_BLOCK_HASHES = 1024  # how far back a reorg can be traced to its fork point


@dataclass(frozen=True)
class Event:
    """A decoded log: plain Python values (bytes stay bytes, addresses are checksummed strings)."""

    contract: str
    name: str
    args: dict[str, Any]
    address: str
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.tx_hash, self.log_index)


Handler = Callable[[Event], None]


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value) if isinstance(value, list) else tuple(_plain(v) for v in value)
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"__bytes__": value.hex()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _unjson(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__bytes__"}:
            return bytes.fromhex(value["__bytes__"])
        return {k: _unjson(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unjson(v) for v in value]
    return value


def _hex(h: Any) -> str:
    if isinstance(h, (bytes, bytearray)):
        return "0x" + bytes(h).hex()
    return h if str(h).startswith("0x") else "0x" + str(h)


@dataclass
class _Watched:
    name: str
    contract: Any  # web3 Contract
    by_topic: dict[str, Any] = field(default_factory=dict)  # topic0 hex -> event ABI name


class EventWatcher:
    """Delivers each event of the watched contracts to its handlers once, across restarts and reorgs.

    ``contracts`` maps a name to ``(address, abi)``. ``db_path`` None keeps state in memory.
    ``start_block`` is where a watcher with no checkpoint begins (e.g. the deployment block).
    """

    def __init__(self, w3, contracts: dict[str, tuple[str, list[dict]]], db_path: str | Path | None = None,
                 start_block: int = 0, confirmations: int = 0, max_range: int = 500, name: str = "default"):
        from eth_utils import event_abi_to_log_topic, to_checksum_address

        if max_range < 1:
            raise ValueError("max_range must be at least 1")
        self.w3 = w3
        self.name = name
        self.start_block = start_block
        self.confirmations = confirmations
        self.max_range = max_range
        self._by_address: dict[str, _Watched] = {}
        for cname, (address, abi) in contracts.items():
            address = to_checksum_address(address)
            w = _Watched(cname, w3.eth.contract(address=address, abi=abi))
            for entry in abi:
                if entry.get("type") == "event" and not entry.get("anonymous"):
                    w.by_topic["0x" + event_abi_to_log_topic(entry).hex()] = entry["name"]
            self._by_address[address] = w
        self._known = {(w.name, ev) for w in self._by_address.values() for ev in w.by_topic.values()}
        self._handlers: dict[tuple[str, str], list[Handler]] = {}
        self._reorg_handlers: list[Callable[[int, list[Event]], None]] = []
        if db_path is not None:
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(db_path) if db_path is not None else ":memory:", check_same_thread=False)
        self.subscribed = threading.Event()  # set while ``run``'s newHeads subscription is live (``ws_url``)
        self.db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    # -- registration -------------------------------------------------------------------------------
    def on(self, contract: str, event: str, handler: Handler | None = None):
        """Register ``handler(event)`` for ``contract``'s ``event``; usable as a decorator."""
        if (contract, event) not in self._known:
            raise ValueError(f"{contract} has no event {event} (or is not watched)")

        def add(fn: Handler) -> Handler:
            self._handlers.setdefault((contract, event), []).append(fn)
            return fn

        return add(handler) if handler is not None else add

    def on_reorg(self, handler: Callable[[int, list[Event]], None]):
        """``handler(fork_block, removed_events)`` runs inside the rewind's transaction."""
        self._reorg_handlers.append(handler)
        return handler

    # -- state --------------------------------------------------------------------------------------
    def checkpoint(self) -> tuple[int, str | None] | None:
        row = self.db.execute("SELECT number, hash FROM watcher_checkpoint WHERE watcher=?", (self.name,)).fetchone()
        return None if row is None else (row[0], row[1])

    def _set_checkpoint(self, number: int, block_hash: str | None) -> None:
        self.db.execute("INSERT INTO watcher_checkpoint VALUES (?,?,?) ON CONFLICT(watcher) DO UPDATE SET "
                        "number=excluded.number, hash=excluded.hash", (self.name, number, block_hash))
        if block_hash is not None:
            self.db.execute("INSERT OR REPLACE INTO watcher_blocks VALUES (?,?,?)", (self.name, number, block_hash))
            self.db.execute("DELETE FROM watcher_blocks WHERE watcher=? AND number<?",
                            (self.name, number - KEEP_BLOCK_HASHES))

    def delivered(self) -> list[Event]:
        """Every event recorded as handled (oldest first); survives restarts, loses reorged ones."""
        rows = self.db.execute(
            "SELECT contract, name, args, block_number, block_hash, tx_hash, log_index FROM watcher_events "
            "WHERE watcher=? ORDER BY block_number, log_index", (self.name,)).fetchall()
        return [self._row_event(r) for r in rows]

    def _row_event(self, r) -> Event:
        address = next((a for a, w in self._by_address.items() if w.name == r[0]), "")
        return Event(r[0], r[1], _unjson(json.loads(r[2])), address, r[3], r[4], r[5], r[6])

    # -- polling ------------------------------------------------------------------------------------
    def poll_once(self) -> list[Event]:
        """Catch up to ``head - confirmations``; returns the events delivered in this call."""
        with self._lock:
            try:
                return self._poll()
            except Exception as exc:
                err = translate(exc, url=getattr(self.w3.provider, "endpoint_uri", None))
                if err is exc:
                    raise
                raise err from None

    def _block_hash(self, number: int) -> str | None:
        from web3.exceptions import BlockNotFound

        try:
            return _hex(self.w3.eth.get_block(number)["hash"])
        except BlockNotFound:
            return None

    def _check_reorg(self) -> None:
        cp = self.checkpoint()
        if cp is None or cp[1] is None or self._block_hash(cp[0]) == cp[1]:
            return
        fork, fork_hash = self.start_block - 1, None
        rows = self.db.execute("SELECT number, hash FROM watcher_blocks WHERE watcher=? AND number<? "
                               "ORDER BY number DESC", (self.name, cp[0])).fetchall()
        for number, stored in rows:
            if self._block_hash(number) == stored:
                fork, fork_hash = number, stored
                break
        rows = self.db.execute(
            "SELECT contract, name, args, block_number, block_hash, tx_hash, log_index FROM watcher_events "
            "WHERE watcher=? AND block_number>? ORDER BY block_number, log_index", (self.name, fork)).fetchall()
        removed = [self._row_event(r) for r in rows]
        log.warning("reorg: checkpoint block %d changed; rewinding to %d (%d events undone)", cp[0], fork, len(removed))
        with self.db:
            self.db.execute("DELETE FROM watcher_events WHERE watcher=? AND block_number>?", (self.name, fork))
            self.db.execute("DELETE FROM watcher_blocks WHERE watcher=? AND number>?", (self.name, fork))
            self._set_checkpoint(fork, fork_hash)
            for handler in self._reorg_handlers:
                handler(fork, removed)

    def _poll(self) -> list[Event]:
        self._check_reorg()
        head = self.w3.eth.block_number
        target = head - self.confirmations
        cp = self.checkpoint()
        start = self.start_block if cp is None else cp[0] + 1
        delivered: list[Event] = []
        addresses = list(self._by_address)
        while start <= target:
            end = min(start + self.max_range - 1, target)
            end_hash = self._block_hash(end)
            logs = self.w3.eth.get_logs({"fromBlock": start, "toBlock": end, "address": addresses})
            if not self._consistent(start, end, end_hash, logs):
                # the chain moved under us between the calls (or the RPC mixed branches): nothing of this range
                # is delivered; the next poll's reorg check and a fresh read sort it out
                break
            by_block: dict[int, list] = {}
            for lg in sorted(logs, key=lambda lg: (lg["blockNumber"], lg["logIndex"])):
                by_block.setdefault(lg["blockNumber"], []).append(lg)
            for number, block_logs in by_block.items():
                with self.db:
                    for lg in block_logs:
                        ev = self._deliver(lg)
                        if ev is not None:
                            delivered.append(ev)
                    self._set_checkpoint(number, _hex(block_logs[0]["blockHash"]))
            with self.db:
                self._set_checkpoint(end, end_hash)
            start = end + 1
        return delivered

    def _consistent(self, start: int, end: int, end_hash: str | None, logs: list) -> bool:
        """Whether one ``eth_getLogs`` answer is a segment of the canonical chain that continues the checkpoint:
        block ``start`` is the checkpoint's child, every log lies in [start, end] and carries the canonical hash of
        its block, and ``end`` is still the block it was before the logs were read."""
        if end_hash is None or self._block_hash(end) != end_hash:
            return False
        cp = self.checkpoint()
        if cp is not None and cp[1] is not None and cp[0] == start - 1:
            if _hex(self.w3.eth.get_block(start)["parentHash"]) != cp[1]:
                log.warning("watcher %s: block %d does not continue the checkpoint %d", self.name, start, cp[0])
                return False
        canonical = {end: end_hash}
        for lg in logs:
            n = lg["blockNumber"]
            if not start <= n <= end or lg.get("removed"):
                log.warning("watcher %s: a log of block %s in the answer for [%d, %d]", self.name, n, start, end)
                return False
            if n not in canonical:
                canonical[n] = self._block_hash(n)
            if _hex(lg["blockHash"]) != canonical[n]:
                log.warning("watcher %s: a log of block %d is from another branch", self.name, n)
                return False
        return True

    def _deliver(self, lg) -> Event | None:
        from eth_utils import to_checksum_address

        watched = self._by_address.get(to_checksum_address(lg["address"]))
        if watched is None or not lg["topics"]:
            return None
        ev_name = watched.by_topic.get(_hex(lg["topics"][0]))
        handlers = self._handlers.get((watched.name, ev_name), []) if ev_name else []
        if not handlers:
            return None
        tx_hash, log_index = _hex(lg["transactionHash"]), lg["logIndex"]
        seen = self.db.execute("SELECT 1 FROM watcher_events WHERE watcher=? AND tx_hash=? AND log_index=?",
                               (self.name, tx_hash, log_index)).fetchone()
        if seen:
            return None
        decoded = watched.contract.events[ev_name]().process_log(lg)
        ev = Event(watched.name, ev_name, _plain(dict(decoded["args"])), to_checksum_address(lg["address"]),
                   lg["blockNumber"], _hex(lg["blockHash"]), tx_hash, log_index)
        for handler in handlers:
            handler(ev)
        self.db.execute("INSERT INTO watcher_events VALUES (?,?,?,?,?,?,?,?)",
                        (self.name, tx_hash, log_index, ev.block_number, ev.block_hash, ev.contract, ev.name,
                         json.dumps(_jsonable(ev.args))))
        return ev

    # -- running ------------------------------------------------------------------------------------
    def run(self, stop: threading.Event, poll_interval: float = 1.0, ws_url: str | None = None,
            on_error: Callable[[BaseException], None] | None = None) -> None:
        """Poll until ``stop`` is set; with ``ws_url`` new heads wake the loop at once."""
        wake = threading.Event()
        ws_thread = None
        if ws_url:
            ws_thread = threading.Thread(target=_subscribe_heads, args=(ws_url, wake, stop, self.subscribed), daemon=True,
                                         name=f"watcher-ws-{self.name}")
            ws_thread.start()
        while not stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # a dead RPC or a failing handler: keep the loop, report it
                if on_error is None:
                    log.warning("watcher %s: %s", self.name, exc)
                else:
                    on_error(exc)
            deadline = time.monotonic() + poll_interval
            while not stop.is_set() and not wake.is_set() and time.monotonic() < deadline:
                wake.wait(min(0.2, poll_interval))  # short slices so `stop` is noticed promptly
            wake.clear()
        wake.set()
        if ws_thread is not None:
            ws_thread.join(timeout=2)

    def close(self) -> None:
        self.db.close()


def _subscribe_heads(ws_url: str, wake: threading.Event, stop: threading.Event, subscribed: threading.Event) -> None:
    """Set ``wake`` on every new head announced over ``eth_subscribe``; reconnects until ``stop``. ``subscribed``
    is set while the node has confirmed the subscription."""
    from websockets.sync.client import connect

    while not stop.is_set():
        try:
            with connect(ws_url, open_timeout=3, close_timeout=1) as ws:
                ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}))
                if "result" not in json.loads(ws.recv(timeout=3)):
                    raise ValueError("the node refused the newHeads subscription")
                subscribed.set()
                while not stop.is_set():
                    try:
                        ws.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    wake.set()
        except Exception as exc:  # the poll loop still runs; the subscription only lowers latency
            log.debug("newHeads subscription at %s failed: %s", ws_url, exc)
            stop.wait(1.0)
        finally:
            subscribed.clear()

