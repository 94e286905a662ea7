"""The local development chain: anvil from the project's ``node_modules``, detached or throwaway.

``up()`` starts anvil on 127.0.0.1 with ``--state`` persistence in the home (``node.paths``: ``$BSNS_HOME``,
default ``./.bsns``), so a restarted chain keeps its blocks and contracts, detached from the calling process,
with a pid file; it mines a block every ``DEFAULT_BLOCK_TIME`` seconds unless asked to mine only on
transactions (every governance and join window counts blocks: a chain that mines only on transactions
never opens or closes them by itself). It records the RPC URL in the home so later commands find the chain,
and reports the running one instead of starting a second. ``down()`` stops it. ``throwaway_anvil()`` is a
context manager for tests and the demo: a fresh anvil on a free port, stopped on exit, also on exceptions.
Process management is hand-written (anvil is a plain binary; no library wraps it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from node.errors import BsnsError
from node.paths import PACKAGE_ROOT, home

DEFAULT_PORT = 8545
DEFAULT_BLOCK_TIME = 1.0  # seconds per block of `bsns chain up`, the demo and the test clusters
CHAIN_ID = 31337


class LocalChainError(BsnsError):
    """The local chain could not be started, found or stopped."""


def state_dir() -> Path:
    return home()


def anvil_binary() -> Path:
    """The anvil executable: ``$BSNS_ANVIL``, else the platform binary the npm package ships.

    The platform binary is preferred over ``node_modules/.bin/anvil`` (a Node wrapper that spawns it):
    one process per chain, and no orphaned child if the wrapper were killed hard.
    """
    env = os.environ.get("BSNS_ANVIL")
    if env:
        path = Path(env)
    else:
        native = sorted((PACKAGE_ROOT / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil"))
        path = native[0] if native else PACKAGE_ROOT / "node_modules" / ".bin" / "anvil"
    if not path.exists():
        raise LocalChainError(f"anvil not found at {path}: run `npm ci` in {PACKAGE_ROOT}")
    return path


@dataclass
class ChainInfo:
    pid: int
    port: int
    host: str = "127.0.0.1"
    state_file: str | None = None
    log_file: str | None = None
    block_time: float | None = None  # None: a block only when a transaction arrives

    @property
    def mining(self) -> str:
        return "a block only per transaction" if not self.block_time else f"a block every {self.block_time:g} s"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:  # anvil serves WebSocket on the same port
        return f"ws://{self.host}:{self.port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); treat it as dead
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def _is_anvil(pid: int) -> bool:
    try:
        return "anvil" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _rpc_ready(url: str, timeout: float = 0.5) -> bool:
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId",
                                                        "params": []}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return "result" in json.loads(resp.read())
    except (OSError, ValueError):
        return False


def _anvil_args(port: int, host: str, state_file: Path | None, block_time: float | None,
                accounts: int, extra: list[str]) -> list[str]:
    args = [str(anvil_binary()), "--host", host, "--port", str(port), "--chain-id", str(CHAIN_ID),
            "--accounts", str(accounts)]
    if state_file is not None:
        args += ["--state", str(state_file)]
    if block_time:
        args += ["--block-time", str(block_time)]
    return args + list(extra)


def _wait_ready(proc: subprocess.Popen, url: str, timeout: float, log: Path | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-500:].strip().splitlines()[-1:] if log and log.exists() else []
            raise LocalChainError(f"anvil exited with status {proc.returncode}" + (f": {tail[0]}" if tail else ""))
        if _rpc_ready(url):
            return
        time.sleep(0.05)
    raise LocalChainError(f"anvil did not answer at {url} within {timeout:.0f} s")


# -- the persistent, detached chain (`bsns chain up/down/status`) -------------------------------------

def _pid_file() -> Path:
    return state_dir() / "anvil.json"


def status() -> ChainInfo | None:
    """The running detached chain, or None (a stale pid file is removed)."""
    pf = _pid_file()
    if not pf.exists():
        return None
    try:
        info = ChainInfo(**json.loads(pf.read_text()))
    except (OSError, ValueError, TypeError):
        pf.unlink(missing_ok=True)
        return None
    if _alive(info.pid) and _is_anvil(info.pid):
        return info
    pf.unlink(missing_ok=True)
    return None


def up(port: int = DEFAULT_PORT, host: str = "127.0.0.1", block_time: float | None = DEFAULT_BLOCK_TIME,
       timeout: float = 15.0) -> tuple[ChainInfo, bool]:
    """Start the detached chain, or return the running one. Returns (info, started_now).

    ``block_time`` None mines only when a transaction arrives. Either way the chain's URL is recorded in the
    home for later commands (``node.chain.rpc``)."""
    from node.chain.rpc import record_chain

    running = status()
    if running is not None:
        record_chain(running.url, running.block_time)
        return running, False
    if _port_open(host, port):
        raise LocalChainError(f"port {port} on {host} is taken by another process (not a chain started by bsns "
                              f"with this home, {state_dir()}): pick another with --port")
    sdir = state_dir()
    sdir.mkdir(parents=True, exist_ok=True)
    state_file, log_file = sdir / "anvil-state.json", sdir / "anvil.log"
    # --state-interval: a chain that dies without SIGTERM (kill -9, power) loses at most 5 s of blocks
    args = _anvil_args(port, host, state_file, block_time, 10, ["--state-interval", "5"])
    with open(log_file, "ab") as log:
        # start_new_session detaches it from our terminal's process group: it outlives `bsns chain up`
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=sdir)
    info = ChainInfo(pid=proc.pid, port=port, host=host, state_file=str(state_file), log_file=str(log_file),
                     block_time=block_time or None)
    try:
        _wait_ready(proc, info.url, timeout, log_file)
    except BaseException:
        _terminate(proc.pid, proc)
        raise
    _pid_file().write_text(json.dumps(info.__dict__))
    record_chain(info.url, info.block_time)
    return info, True


def _signal(pid: int, sig: int) -> None:
    """Signal the chain's process group (it leads one: start_new_session), else the process alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
            return
    except (ProcessLookupError, PermissionError):
        pass
    os.kill(pid, sig)


def _terminate(pid: int, proc: subprocess.Popen | None = None, timeout: float = 10.0) -> None:
    try:
        _signal(pid, signal.SIGTERM)  # SIGTERM lets anvil write its --state file
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return
        elif not _alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        _signal(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait(timeout=5)


def down() -> ChainInfo | None:
    """Stop the detached chain (its state is saved); returns what was stopped, or None."""
    info = status()
    if info is None:
        return None
    _terminate(info.pid)
    _pid_file().unlink(missing_ok=True)
    return info


# -- throwaway chains for tests and the demo -------------------------------------------------------------

@dataclass
class LocalChain:
    url: str
    ws_url: str
    port: int
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            _terminate(self.process.pid, self.process)


@contextlib.contextmanager
def throwaway_anvil(port: int | None = None, block_time: float | None = None, accounts: int = 10,
                    extra_args: list[str] | None = None, timeout: float = 15.0) -> Iterator[LocalChain]:
    """A fresh anvil on a free port (no state file), stopped when the block exits."""
    last_error: Exception | None = None
    for _attempt in range(3):  # a free port can be taken between probing and binding
        p = port or free_port()
        proc = subprocess.Popen(_anvil_args(p, "127.0.0.1", None, block_time, accounts, list(extra_args or [])),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # its own group: stop() takes any child with it
        chain = LocalChain(f"http://127.0.0.1:{p}", f"ws://127.0.0.1:{p}", p, proc)
        try:
            _wait_ready(proc, chain.url, timeout, None)
        except LocalChainError as exc:
            chain.stop()
            last_error = exc
            if port:
                break
            continue
        try:
            yield chain
        finally:
            chain.stop()
        return
    raise last_error or LocalChainError("anvil could not start")
