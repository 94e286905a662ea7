"""A node's data folder: one daemon at a time, bound to one deployment, and set aside on request.

The folder's chain records (the transaction journal, the event watcher's checkpoint, the votes, sessions and
rounds of ``state.sqlite``, checkpoints and blobs) are true only of the deployment they were written against.
``bind`` records that deployment (``deployment.json``: chain id, deploy block and its hash, addresses) at the first
start and refuses any later start against another one; ``set_aside`` (``bsns node reset``) moves the records into
``retired/<time>/`` — nothing is deleted — so the next start begins afresh. ``lock`` keeps a second daemon off
the folder (two senders on one journal would reuse nonces); the kernel releases it when the process dies.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path

from node.errors import BsnsError
from node.paths import shown

BINDING = "deployment.json"
# what a start against another deployment must not find; logs (daemon.jsonl) stay where they are
CHAIN_RECORDS = ("state.sqlite", "txs.sqlite", "watcher.sqlite", BINDING, "blobs", "ckpt", "emulators", "specs")


class DataDirError(BsnsError):
    """The data folder is in use, or holds the records of another deployment."""


def _identity(deployment) -> dict:
    return {"chain_id": deployment.chain_id, "deploy_block": deployment.deploy_block,
            "block_hash": deployment.block_hash, "addresses": dict(sorted(deployment.addresses.items()))}


class DataDir:
    def __init__(self, path: Path, reset_hint: str) -> None:
        self.path = Path(path)
        self.reset_hint = reset_hint  # the command that sets this folder's records aside
        self._lock = None

    def lock(self) -> None:
        """Hold the folder for this process, or raise if another daemon holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        fh = open(self.path / "daemon.lock", "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "?"
            fh.close()
            raise DataDirError(f"another daemon (pid {pid}) is running with the data folder {shown(self.path)}") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._lock = fh

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None

    def bind(self, deployment) -> None:
        """Record ``deployment`` as this folder's at the first start; refuse another one later."""
        path = self.path / BINDING
        want = _identity(deployment)
        try:
            have = json.loads(path.read_text())
        except FileNotFoundError:
            have = None
        except (OSError, ValueError):
            raise DataDirError(f"{shown(path)} is unreadable: {self.reset_hint} sets the folder's records aside") from None
        if have is None:
            self.path.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(want, indent=2) + "\n")
            os.replace(tmp, path)
            return
        if have != want:
            raise DataDirError(
                f"{shown(self.path)} holds the records of another deployment (chain {have.get('chain_id')}, block "
                f"{have.get('deploy_block')}, {str(have.get('block_hash'))[:12]}…) than "
                f"{shown(deployment.path) if deployment.path else 'the configured one'} (chain {want['chain_id']}, "
                f"block {want['deploy_block']}, "
                f"{str(want['block_hash'])[:12]}…): if that chain or deployment is gone, {self.reset_hint} sets them "
                f"aside")

    def records(self) -> list[Path]:
        found = []
        for name in CHAIN_RECORDS:
            found += [p for p in self.path.glob(name + "*") if p.name == name or p.name.startswith(name + "-")]
        return sorted(found)

    def set_aside(self) -> Path | None:
        """Move the chain records into ``retired/<time>/``; returns that folder, or None if there were none."""
        self.lock()
        try:
            found = self.records()
            if not found:
                return None
            dest = self.path / "retired" / time.strftime("%Y%m%d-%H%M%S")
            n = 1
            while dest.exists():
                dest = dest.with_name(f"{dest.name.split('.')[0]}.{n}")
                n += 1
            dest.mkdir(parents=True)
            for p in found:
                shutil.move(str(p), str(dest / p.name))
            return dest
        finally:
            self.unlock()
