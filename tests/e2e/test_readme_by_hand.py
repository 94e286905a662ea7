"""The README's by-hand block, run as a user would: the README cannot drift from the code again.

The block after ``<!-- by-hand`` in README.md is read from the README itself and run line by line, each line a
separate ``bash -c`` in a fresh folder (the user's), with ``bsns`` on the PATH as the console entry
(``python -m coordinator.cli`` of this tree) and no bsns variable set, so every command finds the chain and
the deployment through the home the way a user's would. A line ending in ``&`` is a background job: the test
starts it and stops it at the end. The only things the test adds: a free port for the chain
(``BSNS_CHAIN_PORT``) and a tiny training set (``BSNS_TRAIN_LIMIT``), so that it fits on a shared 2-core
machine. After the block: the daemons' logs are all formatted lines, nothing was written next to the package,
the adapter is still served after both daemons restart, and with them stopped `bsns adapter fetch` fails in
one line naming the peers it tried.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.anvil]

ROOT = Path(__file__).resolve().parents[2]
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (debug|info|warning|error) +node\d \S")


def by_hand_block(readme: str) -> list[str]:
    """The commands of the fenced block after the ``<!-- by-hand`` marker, comments dropped."""
    rest = readme[readme.index("<!-- by-hand"):]
    body = rest.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in body.splitlines()]
    return [line for line in lines if line]


def test_the_block_is_found_and_uses_bsns_only():
    lines = by_hand_block((ROOT / "README.md").read_text())
    assert lines[0] == "bsns chain up" and any(x.endswith("&") for x in lines)
    assert all(x.startswith("bsns ") for x in lines)


class User:
    """A shell user in ``folder``: runs README lines, keeps the background jobs and a transcript."""

    def __init__(self, folder: Path, tmp: Path) -> None:
        from coordinator.localchain import free_port

        self.folder = folder
        shim = tmp / "bin"
        shim.mkdir()
        (shim / "bsns").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m coordinator.cli "$@"\n')
        (shim / "bsns").chmod(0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BSNS_")}
        # PYTHONPATH: the tree under test, whatever the venv's editable install points at
        self.env = {**env, "PATH": f"{shim}:{env['PATH']}", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
                    "BSNS_CHAIN_PORT": str(free_port()), "BSNS_TRAIN_LIMIT": "200"}
        self.jobs: list[subprocess.Popen] = []
        self.transcript: list[str] = []

    def run(self, line: str, timeout: float = 600) -> subprocess.CompletedProcess:
        if line.endswith("&"):
            self.jobs.append(subprocess.Popen(["bash", "-c", line[:-1]], cwd=self.folder, env=self.env,
                                              stdin=subprocess.DEVNULL, start_new_session=True))
            self.transcript.append(f"$ {line}")
            return None
        r = subprocess.run(["bash", "-c", line], cwd=self.folder, env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        self.transcript.append(f"$ {line}\n{r.stdout}{r.stderr}".rstrip())
        return r

    def ok(self, line: str, timeout: float = 600) -> str:
        r = self.run(line, timeout)
        for job in self.jobs:
            assert job.poll() is None, f"a background job exited ({job.args}):\n{self.story()}"
        assert r is None or r.returncode == 0, f"`{line}` failed:\n{self.story()}"
        return "" if r is None else r.stdout

    def stop_jobs(self) -> None:
        """SIGTERM each job's process group (bash and the daemon it started) and wait until all of it is gone."""
        for job in self.jobs:
            _signal_group(job.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for job in self.jobs:
            while _group_alive(job.pid) and time.monotonic() < deadline:
                job.poll()
                time.sleep(0.2)
            if _group_alive(job.pid):
                _signal_group(job.pid, signal.SIGKILL)
            job.wait(timeout=10)
        self.jobs.clear()

    def story(self) -> str:
        logs = [f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.folder.glob("*.log"))]
        return "\n".join(self.transcript + logs)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_started(user: User, logs: list[Path], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() and " started " in p.read_text() for p in logs):
        assert time.monotonic() < deadline, f"daemons did not start again:\n{user.story()}"
        for job in user.jobs:
            assert job.poll() is None, f"a restarted daemon exited:\n{user.story()}"
        time.sleep(1)


def test_readme_by_hand_runs_verbatim(tmp_path):
    from node.paths import PACKAGE_ROOT

    folder = tmp_path / "work"
    folder.mkdir()
    user = User(folder, tmp_path)
    lines = by_hand_block((ROOT / "README.md").read_text())
    untouched = {p: p.exists() for p in (PACKAGE_ROOT / ".bsns", PACKAGE_ROOT / "deployments")}
    try:
        out = {}
        for line in lines:
            out[line] = user.ok(line)
        fetched = sorted(p.name for p in (folder / "adapter").iterdir())
        assert {"shard0.safetensors", "shard1.safetensors", "manifest.json", "export"} <= set(fetched)
        assert re.search(r"adapter 1: accuracy \d+\.\d\d% on \d+ held-back examples", out["bsns adapter eval 1"])
        assert (folder / ".bsns" / "deployments" / "31337.json").exists()
        assert {p: p.exists() for p in untouched} == untouched, "state was written next to the package"

        node_logs = sorted(folder.glob("node*.log"))
        assert len(node_logs) == 2
        for log in node_logs:  # no raw library output: every line is one of the daemon's
            bad = [x for x in log.read_text().splitlines() if not LOG_LINE.match(x)]
            assert bad == [], f"{log.name}: {bad[:5]}"

        # the nodes keep serving the published adapter after a restart
        user.stop_jobs()
        for log in node_logs:
            log.unlink()
        for line in (x for x in lines if x.endswith("&")):
            user.run(line)
        _wait_started(user, node_logs)
        user.ok("bsns adapter fetch 1 --out again/")
        assert (folder / "again" / "shard1.safetensors").read_bytes() == \
               (folder / "adapter" / "shard1.safetensors").read_bytes()

        # and with every daemon stopped, one line naming the peers tried and why
        user.stop_jobs()
        r = user.run("bsns adapter fetch 1 --out gone/")
        assert r.returncode == 1 and r.stdout == "", user.story()
        (msg,) = r.stderr.splitlines()
        assert msg.startswith("error: no peer served shard 0 of adapter 1 (0x")
        assert msg.count("connection refused: no daemon listening") == 1, msg
        assert not (folder / "gone").exists()
    finally:
        user.stop_jobs()
        user.run("bsns chain down", timeout=60)
