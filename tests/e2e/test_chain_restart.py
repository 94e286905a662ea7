"""Chain identity across restarts, and the daemon's logs while the chain is down, with real processes.

One story on a `bsns chain up` chain (its own home and a free port): a daemon registers; anvil is killed with
SIGKILL under it and restarted from its state file, twice (anvil may give block 0 a new hash then): the daemon
logs the outage as counted warnings, carries on, restarts with its journal intact. Then a clean restart (a
fresh chain, same chain id): commands and the daemon say in one line that the deployment is gone and replay
nothing; after a new deployment the daemon refuses its old records in one line, `bsns node reset` sets them
aside, and it starts afresh.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import bsns

pytestmark = [pytest.mark.slow, pytest.mark.anvil]

ROOT = Path(__file__).resolve().parents[2]
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (debug|info|warning|error) +node1 \S")


class Daemon:
    def __init__(self, folder: Path, env: dict, name: str = "node1") -> None:
        self.folder, self.env, self.name = folder, env, name
        self.log = folder / f"{name}-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "node", "run", "--config",
                                      f"{name}.toml"], cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"), start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text()):
            assert self.proc.poll() is None, f"daemon exited:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n{self.text()[-3000:]}"
            time.sleep(0.5)

    def exit_line(self, timeout: float = 120) -> str:
        """The daemon's whole stderr when it refuses to start: one line."""
        assert self.proc.wait(timeout=timeout) == 1, self.text()
        lines = self.text().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)


def _kill9_and_restart(port: int):
    from coordinator import localchain

    time.sleep(6)  # anvil writes its state file every 5 s
    info = localchain.status()
    os.kill(info.pid, signal.SIGKILL)
    while localchain.status() is not None or localchain._port_open("127.0.0.1", port):
        time.sleep(0.1)  # all of anvil's threads gone, not just its main one
    localchain.up(port=port)


def _journal(data_dir: Path) -> list[tuple]:
    db = sqlite3.connect(f"file:{data_dir / 'txs.sqlite'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT nonce, purpose, status FROM txs ORDER BY nonce").fetchall()
    finally:
        db.close()


def test_restarts_of_the_chain(tmp_path, monkeypatch):
    from coordinator import localchain
    from node.chain.keys import dev_key
    from node.chain.rpc import connect

    folder = tmp_path / "work"
    folder.mkdir()
    port = localchain.free_port()
    for var in [k for k in os.environ if k.startswith("BSNS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("BSNS_HOME", str(folder / ".bsns"))
    monkeypatch.chdir(folder)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    url = f"http://127.0.0.1:{port}"
    node1 = dev_key(1, 31337).address
    daemons: list[Daemon] = []
    try:
        assert bsns("chain", "up", "--port", str(port))[0] == 0
        assert bsns("deploy", "--dev-account", "0")[0] == 0
        assert bsns("node", "init", "node1.toml", "--dev-account", "1")[0] == 0
        assert bsns("node", "init", "node2.toml", "--dev-account", "2")[0] == 0
        daemons.append(d := Daemon(folder, env))
        d.wait_for(r" started ")
        data_dir = folder / ".bsns" / "nodes" / "node1"
        registered = _journal(data_dir)
        assert [r[2] for r in registered] == ["mined"]
        time.sleep(6)  # anvil writes its state file every 5 s

        # -- SIGKILL under a running daemon, restarted from the state file --------------------------------
        genesis = [connect(url).eth.get_block(0)["hash"]]
        info = localchain.status()
        os.kill(info.pid, signal.SIGKILL)
        killed = time.monotonic()
        # a daemon started while the chain is down says so in one line
        daemons.append(d2 := Daemon(folder, env, "node2"))
        assert d2.exit_line() == f"error: cannot reach the chain at {url}: connection refused"
        time.sleep(max(0.0, killed + 13 - time.monotonic()))  # past the 10 s repeat window, two attempts a second
        while localchain._port_open("127.0.0.1", port):
            time.sleep(0.1)
        localchain.up(port=port)
        d.wait_for(r" chain_reachable ")
        outage = [x for x in d.text().splitlines() if " chain_unreachable " in x]
        assert 2 <= len(outage) <= 4, outage  # not twice a second: held back and counted
        assert all(" warning " in x for x in outage)
        assert max(int(m[1]) for x in outage if (m := re.search(r"repeated=(\d+)$", x))) >= 10, outage
        assert all(LOG_LINE.match(x) for x in d.text().splitlines()), d.text()
        d.stop()

        _kill9_and_restart(port)  # a second time, without a daemon
        w3 = connect(url)
        genesis.append(w3.eth.get_block(0)["hash"])
        code, out = bsns("status")
        assert code == 0 and out.startswith(f"chain {url} (chain id 31337"), out
        daemons.append(d := Daemon(folder, env))
        d.wait_for(r" started ")
        d.stop()
        after = _journal(data_dir)  # kept: nothing retired or resent (a new port is announced with `update`)
        assert after[:1] == registered and [r[0] for r in after] == list(range(len(after)))
        assert {r[2] for r in after} == {"mined"}
        print("block 0 across the restarts:", [h.hex()[:12] for h in genesis])

        # -- a clean restart: a fresh chain with the same id ---------------------------------------------
        assert bsns("chain", "down")[0] == 0
        (folder / ".bsns" / "anvil-state.json").unlink()
        assert bsns("chain", "up", "--port", str(port))[0] == 0
        w3 = connect(url)
        code, out = bsns("status")
        assert code == 1 and len(out.strip().splitlines()) == 1 and out.strip().endswith(
            "the chain was reset; run `bsns deploy` again"), out
        daemons.append(d := Daemon(folder, env))
        line = d.exit_line()
        assert line.startswith("error: ") and line.endswith("the chain was reset; run `bsns deploy` again")
        assert w3.eth.get_transaction_count(node1) == 0  # nothing of the old chain was replayed onto it

        code, out = bsns("deploy", "--dev-account", "0")
        assert code == 0, out
        assert re.search(r"^warning: .*31337-0xf39F.*was written on another chain with id 31337 .*kept as "
                         r"other-chain and never sent here$", out, re.M), out
        daemons.append(d := Daemon(folder, env))
        line = d.exit_line()
        assert "holds the records of another deployment" in line
        assert line.endswith("`bsns node reset --config node1.toml` sets them aside")
        code, out = bsns("node", "reset", "--config", "node1.toml")
        assert code == 0 and "chain records moved to .bsns/nodes/node1/retired/" in out, out
        daemons.append(d := Daemon(folder, env))
        d.wait_for(r" started ")
        assert w3.eth.get_transaction_count(node1) == 1  # registered afresh, nonce 0 on the new chain
        d.stop()
    finally:
        for x in daemons:
            x.stop()
        bsns("chain", "down")
