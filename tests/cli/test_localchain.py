"""`bsns chain up/down/status` and the throwaway anvil: real processes, persisted state, no leaks."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from coordinator import localchain
from coordinator.cli import app

pytestmark = pytest.mark.anvil


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(") ", 1)[1][:1] != "Z"


def test_chain_up_persists_state_and_down_stops_it(tmp_path, monkeypatch):
    from node.chain.keys import dev_key
    from node.chain.rpc import connect
    from node.chain.sender import TxSender

    from tests.support.evm import deploy_probe, load_probe

    monkeypatch.setenv("BSNS_HOME", str(tmp_path))
    port = localchain.free_port()
    runner = CliRunner()
    try:
        r = runner.invoke(app, ["chain", "up", "--port", str(port)])
        assert r.exit_code == 0, r.output
        assert "started" in r.output
        pid = localchain.status().pid
        r = runner.invoke(app, ["chain", "up", "--port", str(port)])
        assert "already running" in r.output and localchain.status().pid == pid

        w3 = connect(f"http://127.0.0.1:{port}")
        probe = deploy_probe(w3, TxSender(w3, dev_key(0, 31337).private_key), load_probe())
        block = w3.eth.block_number

        r = runner.invoke(app, ["chain", "down"])
        assert r.exit_code == 0 and "stopped" in r.output
        assert not _alive(pid) and localchain.status() is None

        runner.invoke(app, ["chain", "up", "--port", str(port)])  # the state file brings the contract back
        w3 = connect(f"http://127.0.0.1:{port}")
        assert w3.eth.block_number >= block
        assert w3.eth.get_code(probe.address).hex() == load_probe()["deployedBytecode"][2:]
        r = runner.invoke(app, ["chain", "status", "--rpc", f"http://127.0.0.1:{port}"])
        assert "chain id 31337" in r.output
    finally:
        localchain.down()
    assert localchain.status() is None


def test_status_against_dead_rpc_is_one_line_error(tmp_path, monkeypatch):
    import subprocess
    import sys

    monkeypatch.setenv("BSNS_HOME", str(tmp_path))
    port = localchain.free_port()
    p = subprocess.run([sys.executable, "-m", "coordinator.cli", "chain", "status", "--rpc", f"http://127.0.0.1:{port}"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert p.stderr.strip() == f"error: cannot reach the chain at http://127.0.0.1:{port}: connection refused"


def test_throwaway_anvil_is_stopped_on_exception():
    with pytest.raises(RuntimeError):
        with localchain.throwaway_anvil() as chain:
            pid = chain.process.pid
            assert _alive(pid)
            raise RuntimeError("test failure inside the block")
    assert chain.process.poll() is not None
