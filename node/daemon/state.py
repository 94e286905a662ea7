"""The daemon's durable state: sqlite for sessions, rounds, votes and losses; files for blobs and checkpoints.

A node killed at any point restarts from what is here: the last round whose final hash it recorded
(with the adapter and optimizer checkpoint written *before* the round is marked final), and the
decisions it already took (votes, joins, commits), so it never sends a transaction twice.
The nonces themselves are the chain layer's (its sender journal lives in the same folder).

Blobs are content-addressed: ``blobs/<keccak hex>.bin``; a blob's name is its hash, so a checkpoint
is just a pointer to the adapter blob plus the optimizer state file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from node.errors import BsnsError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    proposal_id INTEGER PRIMARY KEY,
    support INTEGER NOT NULL,
    reason TEXT NOT NULL,
    tx_hash TEXT,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id INTEGER PRIMARY KEY,
    proposal_id INTEGER NOT NULL,
    spec_toml TEXT NOT NULL,
    shard INTEGER,
    replica INTEGER,
    replicas INTEGER,
    status TEXT NOT NULL,            -- joined | assigned | training | done | failed | left
    published_id INTEGER,
    updated REAL NOT NULL,
    reason TEXT                      -- why it failed or was left on this node
);
CREATE TABLE IF NOT EXISTS rounds (
    session_id INTEGER NOT NULL,
    shard INTEGER NOT NULL,
    round INTEGER NOT NULL,
    status TEXT NOT NULL,            -- training | committed | final
    local_hash TEXT,
    aggregate_hash TEXT,
    final_hash TEXT,
    samples INTEGER,
    loss REAL,
    peers_used INTEGER,
    bytes_sent INTEGER DEFAULT 0,    -- p2p payload bytes of the whole round (pipeline + sync)
    bytes_recv INTEGER DEFAULT 0,
    sync_sent INTEGER DEFAULT 0,     -- of which the sync (adapter exchange)
    sync_recv INTEGER DEFAULT 0,
    started REAL,
    finished REAL,
    PRIMARY KEY (session_id, shard, round)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    session_id INTEGER NOT NULL,
    round INTEGER NOT NULL,          -- state after this round was final (-1: the initial adapter)
    adapter_hash TEXT NOT NULL,
    optimizer_path TEXT,
    step INTEGER NOT NULL,
    PRIMARY KEY (session_id, round)
);
CREATE TABLE IF NOT EXISTS known (
    kind TEXT NOT NULL,              -- proposal | session: ids the event watcher delivered
    id INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS losses (
    session_id INTEGER NOT NULL,
    round INTEGER NOT NULL,
    step INTEGER NOT NULL,
    loss REAL NOT NULL,
    seconds REAL NOT NULL,
    PRIMARY KEY (session_id, step)
);
"""


class StateError(BsnsError):
    """The local state folder is unusable or a stored blob does not match its hash."""


@dataclass
class Checkpoint:
    session_id: int
    round: int
    adapter_hash: str
    optimizer_path: str | None
    step: int


class StateStore:
    """One node's durable state under ``data_dir`` (``state.sqlite`` + ``blobs/`` + ``ckpt/``)."""

    def __init__(self, data_dir: str | Path) -> None:
        self.dir = Path(data_dir)
        try:
            (self.dir / "blobs").mkdir(parents=True, exist_ok=True)
            (self.dir / "ckpt").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create state folder {self.dir}: {exc.strerror}") from None
        self._lock = threading.RLock()
        self.db = sqlite3.connect(self.dir / "state.sqlite", check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(sessions)")}
        if "reason" not in cols:  # a data folder from before sessions recorded their reason
            self.db.execute("ALTER TABLE sessions ADD COLUMN reason TEXT")

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def _x(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self.db.execute(sql, args)

    # -- votes ----------------------------------------------------------------------------------
    def record_vote(self, proposal_id: int, support: bool, reason: str, tx_hash: str | None) -> None:
        self._x("INSERT OR REPLACE INTO votes VALUES (?,?,?,?,?)", (proposal_id, int(support), reason, tx_hash, time.time()))

    def delete_vote(self, proposal_id: int) -> None:
        """Forget a recorded vote (after a reorg the chain is asked again)."""
        self._x("DELETE FROM votes WHERE proposal_id=?", (proposal_id,))

    def vote_of(self, proposal_id: int) -> dict | None:
        r = self._x("SELECT * FROM votes WHERE proposal_id=?", (proposal_id,)).fetchone()
        return dict(r) if r else None

    # -- ids seen in chain events ---------------------------------------------------------------------
    def remember(self, kind: str, ident: int) -> None:
        self._x("INSERT OR IGNORE INTO known VALUES (?,?)", (kind, int(ident)))

    def forget(self, kind: str, ident: int) -> None:
        self._x("DELETE FROM known WHERE kind=? AND id=?", (kind, int(ident)))

    def known(self, kind: str) -> list[int]:
        return [r[0] for r in self._x("SELECT id FROM known WHERE kind=? ORDER BY id", (kind,)).fetchall()]

    # -- sessions -------------------------------------------------------------------------------
    def upsert_session(self, session_id: int, proposal_id: int | None = None, spec_toml: str | None = None,
                       **fields) -> None:
        with self._lock:
            if self._x("SELECT 1 FROM sessions WHERE session_id=?", (session_id,)).fetchone() is None:
                if proposal_id is None or spec_toml is None:
                    raise StateError(f"session {session_id} is new: proposal id and spec are needed")
                self._x("INSERT INTO sessions (session_id, proposal_id, spec_toml, status, updated) VALUES (?,?,?,?,?)",
                        (session_id, proposal_id, spec_toml, fields.pop("status", "joined"), time.time()))
            if fields:
                cols = ", ".join(f"{k}=?" for k in fields)
                self._x(f"UPDATE sessions SET {cols}, updated=? WHERE session_id=?",
                        (*fields.values(), time.time(), session_id))

    def delete_session(self, session_id: int) -> None:
        """Forget a session (its cached spec, assignment, rounds and checkpoints), e.g. when a reorg undid its
        opening: the id may name another session on the new branch, which must not resume from these."""
        with self._lock:
            for table in ("sessions", "rounds", "checkpoints", "losses"):
                self._x(f"DELETE FROM {table} WHERE session_id=?", (session_id,))

    def session(self, session_id: int) -> dict | None:
        r = self._x("SELECT * FROM sessions WHERE session_id=?", (session_id,)).fetchone()
        return dict(r) if r else None

    def sessions(self, status: str | None = None) -> list[dict]:
        if status:
            rows = self._x("SELECT * FROM sessions WHERE status=? ORDER BY session_id", (status,))
        else:
            rows = self._x("SELECT * FROM sessions ORDER BY session_id")
        return [dict(r) for r in rows]

    # -- rounds ---------------------------------------------------------------------------------
    def upsert_round(self, session_id: int, shard: int, rnd: int, **fields) -> None:
        with self._lock:
            self._x("INSERT OR IGNORE INTO rounds (session_id, shard, round, status, started) VALUES (?,?,?,?,?)",
                    (session_id, shard, rnd, fields.get("status", "training"), time.time()))
            if fields:
                cols = ", ".join(f"{k}=?" for k in fields)
                self._x(f"UPDATE rounds SET {cols} WHERE session_id=? AND shard=? AND round=?",
                        (*fields.values(), session_id, shard, rnd))

    def round(self, session_id: int, shard: int, rnd: int) -> dict | None:
        r = self._x("SELECT * FROM rounds WHERE session_id=? AND shard=? AND round=?", (session_id, shard, rnd)).fetchone()
        return dict(r) if r else None

    def rounds(self, session_id: int) -> list[dict]:
        return [dict(r) for r in self._x("SELECT * FROM rounds WHERE session_id=? ORDER BY round", (session_id,))]

    # -- losses ---------------------------------------------------------------------------------
    def record_loss(self, session_id: int, rnd: int, step: int, loss: float, seconds: float) -> None:
        self._x("INSERT OR REPLACE INTO losses VALUES (?,?,?,?,?)", (session_id, rnd, step, loss, seconds))

    def losses(self, session_id: int) -> list[dict]:
        return [dict(r) for r in self._x("SELECT * FROM losses WHERE session_id=? ORDER BY step", (session_id,))]

    # -- blobs ----------------------------------------------------------------------------------
    def blob_path(self, h: str) -> Path:
        return self.dir / "blobs" / f"{h.lower().removeprefix('0x')}.bin"

    def put_blob(self, data: bytes) -> str:
        """Store bytes under their keccak-256 hash (atomically) and return the hash."""
        from node.hashing import keccak_hex

        h = keccak_hex(data)
        p = self.blob_path(h)
        if not p.exists():
            tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, p)
        return h

    def get_blob(self, h: str) -> bytes | None:
        from node.hashing import keccak_hex

        p = self.blob_path(h)
        if not p.exists():
            return None
        data = p.read_bytes()
        if keccak_hex(data) != h.lower():
            p.unlink()  # a torn or corrupted file: forget it, it will be fetched again
            return None
        return data

    def blob_hashes(self) -> list[str]:
        return sorted("0x" + p.stem for p in (self.dir / "blobs").glob("*.bin"))

    # -- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, session_id: int, rnd: int, adapter_bytes: bytes, optimizer_state: dict | None,
                        step: int) -> Checkpoint:
        """Adapter blob and optimizer state first, then the row: a row always points at complete files."""
        import torch

        h = self.put_blob(adapter_bytes)
        opt_path = None
        if optimizer_state is not None:
            opt_path = str(self.dir / "ckpt" / f"s{session_id}_r{rnd}_opt.pt")
            tmp = opt_path + ".tmp"
            torch.save(optimizer_state, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, opt_path)
        self._x("INSERT OR REPLACE INTO checkpoints VALUES (?,?,?,?,?)", (session_id, rnd, h, opt_path, step))
        return Checkpoint(session_id, rnd, h, opt_path, step)

    def latest_checkpoint(self, session_id: int) -> Checkpoint | None:
        r = self._x("SELECT * FROM checkpoints WHERE session_id=? ORDER BY round DESC LIMIT 1", (session_id,)).fetchone()
        return Checkpoint(**dict(r)) if r else None

    def checkpoint(self, session_id: int, rnd: int) -> Checkpoint | None:
        r = self._x("SELECT * FROM checkpoints WHERE session_id=? AND round=?", (session_id, rnd)).fetchone()
        return Checkpoint(**dict(r)) if r else None

    def load_optimizer_state(self, ckpt: Checkpoint) -> dict | None:
        import torch

        if not ckpt.optimizer_path or not Path(ckpt.optimizer_path).exists():
            return None
        return torch.load(ckpt.optimizer_path, weights_only=True)

    # -- misc -----------------------------------------------------------------------------------
    def summary(self) -> dict:
        return {"sessions": self.sessions(), "votes": [dict(r) for r in self._x("SELECT * FROM votes")]}

    def dump_json(self) -> str:
        return json.dumps(self.summary(), default=str)
