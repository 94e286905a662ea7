"""What the FedPEAT end-to-end tests share: a ``coordinator.cluster.Cluster`` whose daemons are FedPEAT devices
(registered memory and ``[fedpeat] fetch_emulators`` per node), reading a daemon's ``daemon.jsonl``, and
``bsns fedpeat control`` / ``verify-plans`` run as processes against the cluster's chain.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from coordinator.cluster import Cluster, NodeProc

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FedPeatCluster(Cluster):
    """``Cluster`` with per-node registered memory (``memory_mb[i]``, MB; the default 2048 where not given) and
    ``fetch_emulators = true`` on the nodes in ``fetchers``."""

    memory_mb: tuple = ()
    fetchers: tuple = ()

    def _write_config(self, i: int) -> NodeProc:
        p = super()._write_config(i)
        text = p.config.read_text()
        if i < len(self.memory_mb):
            assert "memory_mb = 2048" in text
            text = text.replace("memory_mb = 2048", f"memory_mb = {self.memory_mb[i]}")
        text += f"[fedpeat]\nfetch_emulators = {'true' if i in self.fetchers else 'false'}\n"
        p.config.write_text(text)
        return p


def daemon_events(p: NodeProc, kind: str | None = None, session: int | None = None) -> list[dict]:
    """The events a daemon wrote to its ``daemon.jsonl`` (a torn last line is skipped), of one kind and/or
    session when given."""
    path = p.data_dir / "daemon.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if (kind is None or ev.get("event") == kind) and (session is None or ev.get("session") == session):
            out.append(ev)
    return out


def cli_env(cl: Cluster, home: Path) -> dict:
    """Environment for ``bsns`` processes against the cluster's chain. Its own ``BSNS_HOME``: the CLI's
    transaction journal is per chain id and account, and one left by an earlier anvil (same id 31337) would be
    replayed onto this fresh chain."""
    env = dict(os.environ, BSNS_HOME=str(home), BSNS_RPC=cl.chain.url, BSNS_DEPLOYMENT=str(cl.deployment_path),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("BSNS_DEV_ACCOUNT", None)
    return env


def start_control(cl: Cluster, sid: int, args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """``bsns fedpeat control --session SID ARGS`` as its own process, output to ``log``."""
    with open(log, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "coordinator.cli", "fedpeat", "control", "--session", str(sid),
                                 *args], cwd=str(ROOT), env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def verify_plans(sid: int, record: Path, env: dict) -> subprocess.CompletedProcess:
    """``bsns fedpeat verify-plans`` (no account) for the controller's record."""
    return subprocess.run([sys.executable, "-m", "coordinator.cli", "fedpeat", "verify-plans", "--record", str(record),
                           "--session", str(sid)], cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=120)
